// Contrastive pretraining (train/clip.h): the head's gradients (mean pooling -> projections -> L2 normalisation ->
// scaled similarity -> symmetric cross-entropy) against central differences of an independent double-precision
// reference, over several sizes; its accuracy counts; and end to end on a tiny created VLM and a small shapes set:
// the loss goes down, only the trained vision tensors change in final/, the text encoder folder loads, a run
// resumed from a mid-run checkpoint ends byte-identical to an uninterrupted one, and bad input is a clear error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "data/shapes.h"
#include "io/safetensors.h"
#include "models/presets.h"
#include "models/vlm.h"
#include "nn/block_ref.h"
#include "test_checks.h"
#include "test_util.h"
#include "train/clip.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

// ---- the head -------------------------------------------------------------------------------------------------

struct HeadInputs {
  train::ClipHeadShape s;
  std::vector<double> rows, text, wi, wt;  // (B, R, Dv), (B, Dt), (E, Dv), (E, Dt)
  double scale = 0;                        // the logit scale s (logits use exp(s))
};

HeadInputs random_inputs(const train::ClipHeadShape& s, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  HeadInputs in;
  in.s = s;
  auto fill = [&](std::vector<double>& v, size_t count, double sd) {
    v.resize(count);
    for (double& x : v) x = double(float(sd * n(g)));  // representable in float: both sides see the same point
  };
  fill(in.rows, size_t(s.B * s.R * s.Dv), 1.0);
  fill(in.text, size_t(s.B * s.Dt), 1.0);
  fill(in.wi, size_t(s.E * s.Dv), 1.0 / std::sqrt(double(s.Dv)));
  fill(in.wt, size_t(s.E * s.Dt), 1.0 / std::sqrt(double(s.Dt)));
  in.scale = double(float(0.5 + 2.5 * std::uniform_real_distribution<double>(0, 1)(g)));
  return in;
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// The loss written out directly in double, independent of the implementation's structure.
double ref_loss(const HeadInputs& in) {
  const auto& s = in.s;
  auto embed = [&](const std::vector<double>& x, const std::vector<double>& w, int64_t D, int64_t i) {
    std::vector<double> y(size_t(s.E), 0.0);
    double ss = 0;
    for (int64_t e = 0; e < s.E; ++e) {
      for (int64_t k = 0; k < D; ++k) y[size_t(e)] += w[size_t(e * D + k)] * x[size_t(i * D + k)];
      ss += y[size_t(e)] * y[size_t(e)];
    }
    for (double& v : y) v /= std::sqrt(ss);
    return y;
  };
  std::vector<double> pooled(size_t(s.B * s.Dv), 0.0);
  for (int64_t i = 0; i < s.B; ++i)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t k = 0; k < s.Dv; ++k) pooled[size_t(i * s.Dv + k)] += in.rows[size_t((i * s.R + r) * s.Dv + k)] / double(s.R);
  std::vector<std::vector<double>> a, b;
  for (int64_t i = 0; i < s.B; ++i) {
    a.push_back(embed(pooled, in.wi, s.Dv, i));
    b.push_back(embed(in.text, in.wt, s.Dt, i));
  }
  auto logit = [&](int64_t i, int64_t j) {
    double d = 0;
    for (int64_t e = 0; e < s.E; ++e) d += a[size_t(i)][size_t(e)] * b[size_t(j)][size_t(e)];
    return std::exp(in.scale) * d;
  };
  double loss = 0;
  for (int64_t i = 0; i < s.B; ++i) {
    double row = 0, col = 0;
    for (int64_t j = 0; j < s.B; ++j) {
      row += std::exp(logit(i, j));
      col += std::exp(logit(j, i));
    }
    loss += std::log(row) + std::log(col) - 2 * logit(i, i);
  }
  return loss / (2.0 * double(s.B));
}

// Every entry of in's rows, text, wi, wt and its scale: the central difference of ref(in) against the gradient,
// the error relative to the tensor's largest |gradient| (at least 1e-3).
template <class In, class Ref>
void expect_gradients_match(In& in, const Ref& ref, const std::vector<float>& g_rows, const std::vector<float>& g_text,
                            const std::vector<float>& g_wi, const std::vector<float>& g_wt, float g_scale) {
  auto check = [&](std::vector<double>& v, const std::vector<float>& g, const char* what) {
    double gmax = 1e-3, worst = 0;
    for (float x : g) gmax = std::max(gmax, std::fabs(double(x)));
    for (size_t i = 0; i < v.size(); ++i) {
      const double fd = test::central_difference(v, i, 1e-6, [&] { return ref(in); });
      worst = std::max(worst, std::fabs(fd - double(g[i])) / gmax);
    }
    EXPECT_LT(worst, 1e-5) << what;
  };
  check(in.rows, g_rows, "image rows");
  check(in.text, g_text, "texts");
  check(in.wi, g_wi, "image projection");
  check(in.wt, g_wt, "text projection");
  std::vector<double> sv{in.scale};
  const double fd_s = test::central_difference(sv, 0, 1e-6, [&] {
    In t = in;
    t.scale = sv[0];
    return ref(t);
  });
  EXPECT_NEAR(g_scale, fd_s, 1e-5 * std::max(1.0, std::fabs(fd_s))) << "logit scale";
}

}  // namespace

TEST(ClipHead, GradientsMatchCentralDifferences) {
  const std::vector<train::ClipHeadShape> shapes = {
      {2, 1, 3, 4, 2}, {3, 4, 5, 3, 6}, {5, 2, 7, 6, 4}, {4, 3, 2, 9, 1}, {6, 1, 8, 8, 8}};
  uint64_t seed = 1;
  for (const auto& s : shapes) {
    SCOPED_TRACE(testing::Message() << "B " << s.B << " R " << s.R << " Dv " << s.Dv << " Dt " << s.Dt << " E " << s.E);
    HeadInputs in = random_inputs(s, seed++);
    std::vector<float> rows = to_float(in.rows), text = to_float(in.text), wi = to_float(in.wi), wt = to_float(in.wt);
    std::vector<float> g_rows(rows.size(), NAN), g_text(text.size(), NAN), g_wi(wi.size(), 0.0f), g_wt(wt.size(), 0.0f);
    float g_scale = NAN;
    train::ClipHeadGrads grads{g_rows.data(), g_text.data(), g_wi.data(), g_wt.data(), &g_scale};
    const train::ClipHeadResult r =
        train::clip_head_forward_backward(s, rows.data(), text.data(), wi.data(), wt.data(), float(in.scale), grads);
    const double ref = ref_loss(in);
    EXPECT_NEAR(r.loss, ref, 1e-10 * std::max(1.0, std::fabs(ref)));

    expect_gradients_match(in, ref_loss, g_rows, g_text, g_wi, g_wt, g_scale);

    // Weight gradients accumulate; input gradients are overwritten.
    const std::vector<float> once_wi = g_wi, once_rows = g_rows;
    train::clip_head_forward_backward(s, rows.data(), text.data(), wi.data(), wt.data(), float(in.scale), grads);
    for (size_t i = 0; i < g_wi.size(); ++i) EXPECT_FLOAT_EQ(g_wi[i], 2 * once_wi[i]);
    EXPECT_EQ(g_rows, once_rows);
  }
}

// Orthogonal pairs at CLIP's largest scale: every image finds its caption and the loss is ~0; with the captions
// shifted by one, none does.
TEST(ClipHead, RetrievalCountsAndPerfectAlignment) {
  for (int64_t B : {2, 3, 7}) {
    train::ClipHeadShape s{B, 2, B, B, B};
    std::vector<float> rows(size_t(B * 2 * B), 0.0f), text(size_t(B * B), 0.0f), eye(size_t(B * B), 0.0f),
        shifted(size_t(B * B), 0.0f);
    for (int64_t i = 0; i < B; ++i) {
      rows[size_t((i * 2) * B + i)] = rows[size_t((i * 2 + 1) * B + i)] = 1.0f;
      text[size_t(i * B + i)] = eye[size_t(i * B + i)] = 1.0f;
      shifted[size_t(i * B + (i + 1) % B)] = 1.0f;
    }
    const float s100 = std::log(100.0f);
    auto r = train::clip_head_forward_backward(s, rows.data(), text.data(), eye.data(), eye.data(), s100, {});
    EXPECT_EQ(r.correct_i2t, B);
    EXPECT_EQ(r.correct_t2i, B);
    EXPECT_LT(r.loss, 1e-30 + double(B) * std::exp(-99.0));
    r = train::clip_head_forward_backward(s, rows.data(), shifted.data(), eye.data(), eye.data(), s100, {});
    EXPECT_EQ(r.correct_i2t, 0);
    EXPECT_EQ(r.correct_t2i, 0);
    EXPECT_NEAR(r.loss, std::exp(double(s100)), 1e-9);  // the wrong caption's logit exp(s), the right one's 0
  }
}

// ---- the region head ------------------------------------------------------------------------------------------

namespace {

struct RegionInputs {
  train::ClipHeadShape s;
  train::RegionBatch rb;
  int64_t U = 0;
  std::vector<double> rows, text, wi, wt, weights;  // (B, R, Dv), (U, Dt), (E, Dv), (E, Dt), (K, R)
  double scale = 0;
};

// K regions over B images, U texts (every text the target of some region when K >= U), sparse pooling weights.
RegionInputs random_region_inputs(const train::ClipHeadShape& s, int64_t K, int64_t U, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::uniform_int_distribution<int64_t> img(0, s.B - 1), txt(0, U - 1);
  RegionInputs in;
  in.s = s;
  in.U = U;
  auto fill = [&](std::vector<double>& v, size_t count, double sd) {
    v.resize(count);
    for (double& x : v) x = double(float(sd * n(g)));
  };
  fill(in.rows, size_t(s.B * s.R * s.Dv), 1.0);
  fill(in.text, size_t(U * s.Dt), 1.0);
  fill(in.wi, size_t(s.E * s.Dv), 1.0 / std::sqrt(double(s.Dv)));
  fill(in.wt, size_t(s.E * s.Dt), 1.0 / std::sqrt(double(s.Dt)));
  in.scale = double(float(0.5 + 2.5 * std::uniform_real_distribution<double>(0, 1)(g)));
  for (int64_t k = 0; k < K; ++k) {
    in.rb.image.push_back(img(g));
    in.rb.target.push_back(k < U ? k : txt(g));
    double sum = 0;
    std::vector<double> w(size_t(s.R));
    for (int64_t r = 0; r < s.R; ++r) sum += (w[size_t(r)] = (r + k) % 3 == 0 ? 0.0 : 0.25 + double(r % 4));
    if (sum == 0) w[0] = sum = 1;
    for (double x : w) in.weights.push_back(double(float(x / sum)));
  }
  in.rb.weights.assign(in.weights.begin(), in.weights.end());
  in.rb.texts.assign(size_t(U), std::vector<int32_t>{1});
  return in;
}

double ref_region_loss(const RegionInputs& in) {
  const auto& s = in.s;
  const int64_t K = in.rb.regions();
  auto embed = [&](const std::vector<double>& x, const std::vector<double>& w, int64_t D) {
    std::vector<double> y(size_t(s.E), 0.0);
    double ss = 0;
    for (int64_t e = 0; e < s.E; ++e) {
      for (int64_t k = 0; k < D; ++k) y[size_t(e)] += w[size_t(e * D + k)] * x[size_t(k)];
      ss += y[size_t(e)] * y[size_t(e)];
    }
    for (double& v : y) v /= std::sqrt(ss);
    return y;
  };
  std::vector<std::vector<double>> b;
  for (int64_t u = 0; u < in.U; ++u)
    b.push_back(embed(std::vector<double>(in.text.begin() + u * s.Dt, in.text.begin() + (u + 1) * s.Dt), in.wt, s.Dt));
  double loss = 0;
  for (int64_t k = 0; k < K; ++k) {
    std::vector<double> p(size_t(s.Dv), 0.0);
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t d = 0; d < s.Dv; ++d)
        p[size_t(d)] += in.weights[size_t(k * s.R + r)] * in.rows[size_t((in.rb.image[size_t(k)] * s.R + r) * s.Dv + d)];
    const std::vector<double> a = embed(p, in.wi, s.Dv);
    double z = 0, target = 0;
    for (int64_t u = 0; u < in.U; ++u) {
      double dot = 0;
      for (int64_t e = 0; e < s.E; ++e) dot += a[size_t(e)] * b[size_t(u)][size_t(e)];
      const double l = std::exp(in.scale) * dot;
      z += std::exp(l);
      if (u == in.rb.target[size_t(k)]) target = l;
    }
    loss += std::log(z) - target;
  }
  return loss / double(K);
}

}  // namespace

TEST(RegionHead, GradientsMatchCentralDifferences) {
  struct Case {
    train::ClipHeadShape s;
    int64_t K, U;
  };
  const std::vector<Case> cases = {{{1, 1, 3, 4, 2}, 1, 1}, {{2, 4, 5, 3, 6}, 5, 3}, {{3, 3, 4, 5, 3}, 7, 7},
                                   {{4, 2, 2, 6, 4}, 3, 5}};
  uint64_t seed = 11;
  for (const auto& c : cases) {
    const auto& s = c.s;
    SCOPED_TRACE(testing::Message() << "B " << s.B << " R " << s.R << " K " << c.K << " U " << c.U);
    RegionInputs in = random_region_inputs(s, c.K, c.U, seed++);
    std::vector<float> rows = to_float(in.rows), text = to_float(in.text), wi = to_float(in.wi), wt = to_float(in.wt);
    std::vector<float> g_rows(rows.size(), NAN), g_text(text.size(), NAN), g_wi(wi.size(), 0.0f), g_wt(wt.size(), 0.0f);
    float g_scale = NAN;
    train::ClipHeadGrads grads{g_rows.data(), g_text.data(), g_wi.data(), g_wt.data(), &g_scale};
    const train::ClipHeadResult r = train::region_head_forward_backward(s, rows.data(), in.rb, text.data(), wi.data(),
                                                                        wt.data(), float(in.scale), grads);
    const double ref = ref_region_loss(in);
    EXPECT_NEAR(r.loss, ref, 1e-10 * std::max(1.0, std::fabs(ref)));
    EXPECT_EQ(r.correct_t2i, 0);
    expect_gradients_match(in, ref_region_loss, g_rows, g_text, g_wi, g_wt, g_scale);
  }
}

TEST(RegionHead, BadBatchIsAnError) {
  RegionInputs in = random_region_inputs({2, 2, 3, 3, 2}, 2, 2, 5);
  std::vector<float> rows = to_float(in.rows), text = to_float(in.text), wi = to_float(in.wi), wt = to_float(in.wt);
  auto run = [&](const train::RegionBatch& rb) {
    return train::region_head_forward_backward(in.s, rows.data(), rb, text.data(), wi.data(), wt.data(), 1.0f, {});
  };
  EXPECT_NO_THROW(run(in.rb));
  train::RegionBatch bad = in.rb;
  bad.image[1] = 2;  // only images 0 and 1
  EXPECT_THROW(run(bad), Error);
  bad = in.rb;
  bad.target[0] = 2;  // only texts 0 and 1
  EXPECT_THROW(run(bad), Error);
  bad = in.rb;
  bad.weights.pop_back();
  EXPECT_THROW(run(bad), Error);
}

// A 4 x 4 grid of 8-pixel patches: the patches whose centres a box covers, equally weighted; a box between centres
// takes the patch holding its centre; a box outside the image has no weights; with the class token first, its
// weight is 0.
TEST(RegionHead, RowWeightsCoverThePatchCentresInTheBox) {
  auto w = train::region_row_weights({0, 0, 16, 8}, 4, 8, 16);  // centres (4, 4) and (12, 4)
  ASSERT_EQ(w.size(), 16u);
  for (int64_t r = 0; r < 16; ++r) EXPECT_FLOAT_EQ(w[size_t(r)], r == 0 || r == 1 ? 0.5f : 0.0f) << r;
  w = train::region_row_weights({17, 9, 19, 11}, 4, 8, 16);  // no centre inside; its centre (18, 10) is in patch (2, 1)
  for (int64_t r = 0; r < 16; ++r) EXPECT_FLOAT_EQ(w[size_t(r)], r == 1 * 4 + 2 ? 1.0f : 0.0f) << r;
  w = train::region_row_weights({-5, 21, 40, 100}, 4, 8, 17);  // clipped to the image; class token first
  ASSERT_EQ(w.size(), 17u);
  EXPECT_FLOAT_EQ(w[0], 0.0f);
  double sum = 0;
  for (int64_t r = 1; r < 17; ++r) {
    const int64_t gy = (r - 1) / 4;
    EXPECT_FLOAT_EQ(w[size_t(r)], gy >= 3 ? 0.25f : 0.0f) << r;  // centres y = 28 only
    sum += w[size_t(r)];
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_TRUE(train::region_row_weights({40, 40, 50, 50}, 4, 8, 16).empty());
  EXPECT_THROW(train::region_row_weights({0, 0, 8, 8}, 4, 8, 15), Error);
}

// The whole model's gradients (both towers and the heads) through ClipTowers: for each group of tensors, the
// central difference of the loss along the normalised gradient must equal the gradient's norm (it is smaller for
// any wrong gradient). Float arithmetic, so a step of 1e-3 along a unit direction and a 0.1% tolerance.
TEST(ClipTowers, GradientsMatchDirectionalDifferences) {
  nlohmann::json j = {
      {"architectures", {"LlavaForConditionalGeneration"}}, {"model_type", "llava"}, {"image_token_index", 39},
      {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
      {"vision_config", {{"hidden_size", 12}, {"intermediate_size", 20}, {"num_hidden_layers", 3},
                         {"num_attention_heads", 2}, {"image_size", 16}, {"patch_size", 8}}},
      {"text_config", {{"model_type", "llama"}, {"vocab_size", 40}, {"hidden_size", 16}, {"intermediate_size", 24},
                       {"num_hidden_layers", 1}, {"num_attention_heads", 2}}}};
  for (const char* strategy : {"default", "full"}) {
    SCOPED_TRACE(strategy);
    j["vision_feature_select_strategy"] = strategy;
    const models::ModelConfig cfg = models::ModelConfig::from_json(j);
    auto vlm = models::Vlm::create(cfg, 11);
    train::ClipConfig cc;
    cc.text_layers = 2, cc.text_hidden = 16, cc.text_heads = 4, cc.embed_dim = 8, cc.seed = 3;
    auto text = models::Vlm::create(train::clip_text_encoder_config(cc, 40, 1, 2), 12);
    train::ClipTowers towers(*vlm, *text, cc);
    // Random weights (created ones are too regular: norms 1, biases 0), random images and captions.
    std::mt19937_64 g(5);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto& [name, p] : towers.params()) {
      float* v = p->value.data<float>();
      const bool norm = name.find("norm") != std::string::npos || name.find("layrnorm") != std::string::npos;
      const float sd = p->value.ndim() == 1 ? 0.2f : 1.0f / std::sqrt(float(p->value.dim(-1)));
      for (int64_t i = 0; i < p->value.numel(); ++i)
        v[i] = (norm && name.find(".bias") == std::string::npos ? 1.0f : 0.0f) + sd * n(g);
    }
    towers.params().back().second->value.data<float>()[0] = 1.5f;  // the logit scale
    towers.weights_updated();
    const int B = 3;
    std::vector<std::vector<float>> pixels(B, std::vector<float>(3 * 16 * 16));
    std::vector<std::vector<int32_t>> captions(B);
    for (int i = 0; i < B; ++i) {
      for (float& x : pixels[size_t(i)]) x = n(g);
      captions[size_t(i)].push_back(1);
      for (int k = 0; k < 2 + i; ++k) captions[size_t(i)].push_back(int32_t(3 + g() % 36));
      captions[size_t(i)].push_back(2);
    }
    // Two regions (images 0 and 2, two texts): the step's loss is the global one + 0.7 x the region loss.
    train::RegionBatch rb;
    for (int k = 0; k < 2; ++k) {
      const auto w = train::region_row_weights({4.0 * k, 0, 12.0 + 4.0 * k, 9}, towers.grid(), towers.patch(), towers.rows());
      ASSERT_EQ(int64_t(w.size()), towers.rows());
      rb.image.push_back(2 * k);
      rb.target.push_back(k);
      rb.weights.insert(rb.weights.end(), w.begin(), w.end());
    }
    rb.texts = {{1, 5, 6, 2}, {1, 7, 2}};
    auto total_loss = [&](bool backward) {
      train::ClipHeadResult rr;
      const double l = towers.forward_backward(pixels, captions, backward, &rb, 0.7, &rr).loss;
      EXPECT_GT(rr.loss, 0.0);
      return l + 0.7 * rr.loss;
    };
    towers.zero_grad();
    const double loss = total_loss(true);
    EXPECT_NEAR(total_loss(false), loss, 1e-6 * loss);
    for (const char* group : {"vision_tower.", "text_encoder.", "clip."}) {
      std::vector<train::Param*> ps;
      double gn = 0;
      for (auto& [name, p] : towers.params())
        if (name.rfind(group, 0) == 0) {
          ps.push_back(p);
          for (int64_t i = 0; i < p->grad.numel(); ++i) gn += double(p->grad.data<float>()[i]) * p->grad.data<float>()[i];
        }
      gn = std::sqrt(gn);
      ASSERT_FALSE(ps.empty()) << group;
      ASSERT_GT(gn, 1e-4) << group;
      const float h = 1e-3f;
      auto loss_at = [&](float t) {
        std::vector<Tensor> saved;
        for (train::Param* p : ps) {
          saved.push_back(p->value.clone());
          for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data<float>()[i] += t * p->grad.data<float>()[i] / float(gn);
        }
        towers.weights_updated();
        const double l = total_loss(false);
        for (size_t k = 0; k < ps.size(); ++k) ps[k]->value.copy_from(saved[k]);
        towers.weights_updated();
        return l;
      };
      const double fd = (loss_at(h) - loss_at(-h)) / (2.0 * double(h));
      EXPECT_NEAR(fd, gn, 1e-3 * gn) << group;
    }
  }
}

namespace {

// ---- end to end ---------------------------------------------------------------------------------------------

struct ClipFixture {
  std::string dir, model, data;
};

// A tiny LLaVA (tiny-llava's text side and tokenizer, a 32 px / patch 8 vision tower of 3 layers, so the feature
// layer -2 leaves the last layer and post_layernorm untrained) and 24 shapes images.
const ClipFixture& fixture() {
  static ClipFixture f = [] {
    ClipFixture x;
    x.dir = test::temp_dir() + "/clip";
    x.model = x.dir + "/model";
    x.data = x.dir + "/data";
    models::ModelConfig cfg = models::preset("tiny-llava");
    auto& v = cfg.llava.vision;
    v.image_size = 32, v.patch_size = 8, v.hidden_size = 32, v.intermediate_size = 64, v.num_hidden_layers = 3;
    v.num_attention_heads = 2;
    cfg.llava.validate();
    auto m = models::Vlm::create(cfg, 4);
    models::Vlm::save_folder(x.model, cfg, m->created_weights(), DType::F32, test::shared_dir() + "/tokenizers/mistral");
    data::ShapesOptions so;
    so.n = 24, so.seed = 3, so.min_size = 32, so.max_size = 48;
    data::write_shapes_dataset(x.data, so);
    return x;
  }();
  return f;
}

train::ClipConfig small_config(const ClipFixture& f, const std::string& out) {
  train::ClipConfig c;
  c.model = f.model;
  c.captions = f.data + "/captions.jsonl";
  c.images = f.data;
  c.out = out;
  c.batch_size = 8;
  c.text_layers = 2, c.text_hidden = 32, c.embed_dim = 16;
  c.lr = 3e-3;
  c.workers = 2;
  c.seed = 7;
  return c;
}

std::vector<nlohmann::json> metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> r;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) r.push_back(nlohmann::json::parse(line));
  return r;
}

}  // namespace

TEST(ClipTrain, LossGoesDownAndOnlyTheVisionTowerChanges) {
  const ClipFixture& f = fixture();
  train::ClipConfig c = small_config(f, f.dir + "/run-loss");
  c.schedule = "constant";
  c.lr = 1e-3;
  c.epochs = 8;  // 3 steps per epoch: every epoch sees all 24 images
  train::run_clip_training(c, false);
  std::vector<nlohmann::json> m = metrics(c.out);
  ASSERT_EQ(m.size(), 24u);
  double first = 0, last = 0;  // the first epoch's mean loss and the last two epochs'
  for (int k = 0; k < 3; ++k) first += m[size_t(k)]["loss"].get<double>() / 3;
  for (int k = 18; k < 24; ++k) last += m[size_t(k)]["loss"].get<double>() / 6;
  for (const auto& line : m) EXPECT_TRUE(line.contains("acc_i2t") && line.contains("acc_t2i"));
  EXPECT_LT(last, 0.9 * first) << "loss did not go down: first epoch " << first << ", last two " << last;

  // final/: projector and LLM byte-identical; the vision tensors up to the feature layer changed; the layer
  // after it and post_layernorm did not.
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(c.out + "/final");
  ASSERT_EQ(base.names(), trained.names());
  int vision_changed = 0;
  for (const std::string& name : base.names()) {
    const bool same = test::same_bytes(base.get(name), trained.get(name));
    const bool untrained_vision = name.find("encoder.layers.2.") != std::string::npos ||
                                  name.find("post_layernorm") != std::string::npos;
    if (name.rfind("vision_tower.", 0) != 0 || untrained_vision) {
      EXPECT_TRUE(same) << name << " changed";
    } else {
      vision_changed += !same;
    }
  }
  EXPECT_GT(vision_changed, 10);
  EXPECT_TRUE(fs::exists(c.out + "/final/tokenizer.json"));
  EXPECT_TRUE(fs::exists(c.out + "/loss.svg"));
  // The trained VLM loads; the text encoder is a LlamaForCausalLM folder with the heads beside it.
  EXPECT_NO_THROW(models::Vlm::load(c.out + "/final"));
  auto te = models::Vlm::load(c.out + "/text_encoder");
  EXPECT_FALSE(te->has_vision());
  EXPECT_EQ(te->text().hidden_size(), 32);
  EXPECT_EQ(te->text().vocab_size(), 32064);
  io::Checkpoint heads = io::Checkpoint::open(c.out + "/text_encoder/clip_heads.safetensors");
  EXPECT_EQ(heads.get("visual_projection.weight").shape(), (Shape{16, 32}));
  EXPECT_EQ(heads.get("text_projection.weight").shape(), (Shape{16, 32}));
  const float s = heads.get("logit_scale").data<float>()[0];
  EXPECT_GT(s, 0.0f);
  EXPECT_LE(s, std::log(100.0f));
}

// Run b stops right after its step-4 checkpoint (its later checkpoint and outputs removed, as a kill after step 4
// leaves it), resumes, and must end byte-identical to run a, with the same logged losses.
TEST(ClipTrain, ResumedRunEqualsUninterrupted) {
  const ClipFixture& f = fixture();
  train::ClipConfig a = small_config(f, f.dir + "/run-a"), b = small_config(f, f.dir + "/run-b");
  a.regions = b.regions = f.data + "/regions.jsonl";
  a.max_steps = b.max_steps = 7;  // crosses an epoch boundary (3 steps per epoch), cosine schedule
  a.save_every = b.save_every = 2;
  a.warmup = b.warmup = 2;
  train::run_clip_training(a, false);
  train::run_clip_training(b, false);
  for (const char* gone : {"/step-00000006", "/step-00000007", "/final", "/text_encoder"}) fs::remove_all(b.out + gone);
  train::ClipConfig r;
  r.out = b.out;
  train::run_clip_training(r, /*resume=*/true);
  test::expect_same_checkpoint(a.out + "/final", b.out + "/final");
  test::expect_same_checkpoint(a.out + "/text_encoder", b.out + "/text_encoder");
  test::expect_same_checkpoint(a.out + "/text_encoder/clip_heads.safetensors", b.out + "/text_encoder/clip_heads.safetensors");
  std::vector<nlohmann::json> ma = metrics(a.out), mb = metrics(b.out);
  ASSERT_EQ(ma.size(), 7u);
  ASSERT_EQ(mb.size(), 7u);
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i]["loss"], mb[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(ma[i]["acc_i2t"], mb[i]["acc_i2t"]) << "step " << i + 1;
    EXPECT_EQ(ma[i]["region_loss"], mb[i]["region_loss"]) << "step " << i + 1;
  }
}

// With --regions the step's loss is the global loss + the region loss, and the region loss goes down: each
// object's pooled patches move towards its phrase ("large red circle") and away from the batch's other phrases.
TEST(ClipTrain, RegionLossGoesDown) {
  const ClipFixture& f = fixture();
  train::ClipConfig c = small_config(f, f.dir + "/run-regions");
  c.regions = f.data + "/regions.jsonl";
  c.schedule = "constant";
  c.lr = 1e-3;
  c.epochs = 8;
  train::run_clip_training(c, false);
  std::vector<nlohmann::json> m = metrics(c.out);
  ASSERT_EQ(m.size(), 24u);
  double first = 0, last = 0;
  for (size_t k = 0; k < m.size(); ++k) {
    const auto& line = m[k];
    ASSERT_TRUE(line.contains("region_loss") && line.contains("acc_region") && line.contains("clip_loss")) << line;
    EXPECT_GT(line["regions"].get<int64_t>(), 8) << "every image of the batch has at least one object";
    EXPECT_NEAR(line["loss"].get<double>(), line["clip_loss"].get<double>() + line["region_loss"].get<double>(), 1e-9);
    if (k < 3) first += line["region_loss"].get<double>() / 3;
    if (k >= 18) last += line["region_loss"].get<double>() / 6;
  }
  EXPECT_LT(last, 0.9 * first) << "region loss did not go down: first epoch " << first << ", last two " << last;
}

TEST(ClipTrain, BadInputIsAClearError) {
  const ClipFixture& f = fixture();
  auto expect_error = [](const train::ClipConfig& c, const std::string& needle) {
    try {
      train::run_clip_training(c, false);
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  train::ClipConfig c = small_config(f, f.dir + "/run-bad1");
  c.batch_size = 1;
  expect_error(c, "at least 2 pairs");
  c = small_config(f, f.dir + "/run-bad2");
  c.captions = f.dir + "/no-such-captions.jsonl";
  expect_error(c, "no-such-captions.jsonl' does not exist");
  c = small_config(f, f.dir + "/run-bad3");
  c.batch_size = 25;
  expect_error(c, "exceeds the 24 images");
  c = small_config(f, f.dir + "/run-bad4");
  c.text_hidden = 30;  // not a multiple of 2 x 4 heads
  expect_error(c, "text encoder");
  c = small_config(f, f.dir + "/run-bad5");
  c.model = f.dir + "/no-such-model";
  expect_error(c, "does not exist");
  // --regions: a missing file, a malformed line, an empty box, regions of no captioned image.
  auto with_regions = [&](const std::string& name, const std::string& content) {
    train::ClipConfig rc = small_config(f, f.dir + "/run-" + name);
    rc.regions = f.dir + "/" + name + ".jsonl";
    test::write_file(rc.regions, content);
    return rc;
  };
  c = small_config(f, f.dir + "/run-bad6");
  c.regions = f.dir + "/no-such-regions.jsonl";
  expect_error(c, "cannot read regions file");
  expect_error(with_regions("bad7", "{\"image\": \"images/000000.png\", \"regions\": [\n"), "bad7.jsonl:1: not JSON");
  expect_error(with_regions("bad8", "\n{\"image\": \"images/000000.png\", \"regions\": [{\"bbox\": [5, 5, 5, 9], "
                                    "\"text\": \"a\"}]}\n"),
               "bad8.jsonl:2: bbox [5, 5, 5, 9] is empty");
  expect_error(with_regions("bad9", "{\"image\": \"images/000000.png\", \"regions\": [{\"bbox\": [1, 2, 3], "
                                    "\"text\": \"a\"}]}\n"),
               "a region must be");
  expect_error(with_regions("bad10", "{\"image\": \"elsewhere.png\", \"regions\": [{\"bbox\": [1, 2, 3, 4], "
                                     "\"text\": \"a\"}]}\n"),
               "no region of");
  c = small_config(f, f.dir + "/run-bad11");
  c.regions = f.data + "/regions.jsonl";
  c.region_weight = 0;
  expect_error(c, "region weight 0 must be > 0");

  train::ClipConfig r;
  r.out = f.dir + "/run-never-started";
  try {
    train::run_clip_training(r, true);
    ADD_FAILURE() << "resuming a missing run did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot resume"), std::string::npos) << e.what();
  }
}
