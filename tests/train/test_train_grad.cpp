// Model-level gradient checks on tiny created models (models::Vlm::create): the gradients TrainableVlm
// accumulates (float) against central differences of a double-precision reference of the whole loss
// (tests/train/vlm_ref.h) for a few entries of every trained tensor, over the stages, LoRA on every component, the
// "full" select strategy, two images per example, and a tied text-only Llama. Also: frozen tensors stay
// bit-identical and get no parameters; gradient checkpointing gives the same gradients; bf16 training is close to
// f32.
#include <gtest/gtest.h>

#include <cstring>
#include <iostream>
#include <random>

#include "io/npy.h"
#include "test_checks.h"
#include "test_util.h"
#include "train/lora.h"
#include "train/trainable.h"
#include "train/vlm_ref.h"

using namespace iris;

namespace {

models::ModelConfig tiny_llava(const std::string& strategy = "default", int feature_layer = -2) {
  nlohmann::json j = {
      {"architectures", {"LlavaForConditionalGeneration"}},
      {"model_type", "llava"},
      {"image_token_index", 39},
      {"projector_hidden_act", "gelu"},
      {"vision_feature_layer", feature_layer},
      {"vision_feature_select_strategy", strategy},
      {"vision_config",
       {{"model_type", "clip_vision_model"}, {"hidden_size", 12}, {"intermediate_size", 20},
        {"num_hidden_layers", 3}, {"num_attention_heads", 2}, {"image_size", 16}, {"patch_size", 8},
        {"num_channels", 3}, {"hidden_act", "quick_gelu"}, {"layer_norm_eps", 1e-5}}},
      {"text_config",
       {{"model_type", "llama"}, {"vocab_size", 40}, {"hidden_size", 16}, {"intermediate_size", 24},
        {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 6},
        {"rms_norm_eps", 1e-6}, {"max_position_embeddings", 64}, {"rope_theta", 10000.0}}}};
  return models::ModelConfig::from_json(j);
}

models::ModelConfig tiny_llama_tied() {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 40},
                      {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 1}, {"rms_norm_eps", 1e-6},
                      {"tie_word_embeddings", true}, {"attention_bias", true}, {"mlp_bias", true},
                      {"max_position_embeddings", 64}};
  return models::ModelConfig::from_json(j);
}

// ids with `n_img` images of `per_image` tokens; labels supervise a scattered subset, the first right after an
// image.
train::Example make_example(const models::ModelConfig& cfg, int n_img, uint64_t seed) {
  std::mt19937_64 g(seed);
  train::Example ex;
  const int per_image = cfg.arch == models::Architecture::Llava ? cfg.llava.image_tokens_per_image() : 0;
  auto text = [&](int n) {
    for (int i = 0; i < n; ++i) ex.ids.push_back(int32_t(3 + g() % 30));
  };
  ex.ids.push_back(1);
  text(2);
  for (int i = 0; i < n_img; ++i) {
    for (int k = 0; k < per_image; ++k) ex.ids.push_back(cfg.llava.image_token_index);
    text(3);
  }
  text(4);
  ex.labels.assign(ex.ids.size(), -100);
  for (size_t t = 1; t < ex.ids.size(); ++t)
    if (ex.ids[t] != cfg.llava.image_token_index && (t % 2 == 1 || t + 4 >= ex.ids.size())) ex.labels[t] = ex.ids[t];
  if (cfg.arch == models::Architecture::Llava) {
    const auto& vc = cfg.llava.vision;
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (int i = 0; i < n_img; ++i) {
      std::vector<float> px(size_t(vc.num_channels * vc.image_size * vc.image_size));
      for (auto& v : px) v = n(g);
      ex.pixel_values.push_back(px);
    }
  }
  return ex;
}

// Gives every trained tensor random values (norm weights near 1, LoRA B nonzero so A has a gradient): created
// weights are too regular (norms 1, biases 0, B 0) for a telling check.
void randomize(train::TrainableVlm& tv, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (train::Param* p : tv.params()) {
    float* v = p->value.data<float>();
    const bool norm = p->name.find("norm") != std::string::npos || p->name.find("layrnorm") != std::string::npos ||
                      p->name.find("layer_norm") != std::string::npos;
    const bool vec = p->value.ndim() == 1;
    const float scale = vec ? 0.1f : 1.0f / std::sqrt(float(p->value.dim(-1)));
    for (int64_t i = 0; i < p->value.numel(); ++i)
      v[i] = (norm && p->name.find(".bias") == std::string::npos ? 1.0f : 0.0f) +
             (p->name.find("lora_B") != std::string::npos ? 0.1f : norm ? 0.2f : scale) * n(g);
  }
  tv.weights_updated();
}

struct FdResult {
  double worst = 0;
  int checked = 0;
};

// For each trained tensor: its largest-|gradient| entry and 3 random ones, central differences of the double
// reference loss (sum over tokens) against the float gradients of forward_backward(ex, 1). Error relative to the
// tensor's largest |gradient|. A tensor whose true gradient is identically zero (the CLIP key biases: softmax
// ignores a constant added to a whole score row) must instead stay below 1e-5 of the largest gradient anywhere.
FdResult check_model(train::TrainableVlm& tv, const train::Example& ex, const test::RefLoraOpts* lora,
                     const char* what) {
  tv.zero_grad();
  auto [loss, count] = tv.forward_backward(ex, 1.0f);
  EXPECT_EQ(count, train::supervised_count(ex));
  test::Weights w = test::weights_of(tv.full_state());
  for (const auto& [name, t] : tv.adapter_state()) w[name].assign(t.data<float>(), t.data<float>() + t.numel());
  const models::ModelConfig& cfg = tv.model().config();
  auto ref_loss = [&] { return test::ref_vlm_loss(cfg, w, ex, lora); };
  const double ref = ref_loss();
  EXPECT_NEAR(loss, ref, 2e-6 * std::fabs(ref)) << what << ": float loss vs double reference";
  int64_t cnt = 0;
  EXPECT_NEAR(tv.loss_only(ex, &cnt), ref, 2e-6 * std::fabs(ref)) << what << ": loss_only";
  EXPECT_EQ(cnt, count);
  double global = 0;
  for (train::Param* p : tv.params())
    for (int64_t i = 0; i < p->grad.numel(); ++i) global = std::max(global, std::fabs(double(p->grad.data<float>()[i])));
  FdResult r;
  int zero = 0;
  std::mt19937_64 g(77);
  for (train::Param* p : tv.params()) {
    const float* gr = p->grad.data<float>();
    const int64_t n = p->grad.numel();
    int64_t imax = 0;
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(gr[i]) > std::fabs(gr[imax])) imax = i;
    const double gmax = std::fabs(double(gr[imax]));
    std::vector<double>& v = w.at(p->name);
    const double fd_max = test::central_difference(v, size_t(imax), 1e-6, ref_loss);
    if (std::fabs(fd_max) <= 1e-6 * global) {  // structurally zero
      ++zero;
      EXPECT_LE(gmax, 1e-5 * global) << what << ": " << p->name << " should have a zero gradient";
      EXPECT_NE(p->name.find("vision_model.encoder.layers."), std::string::npos) << p->name;
      EXPECT_NE(p->name.find("self_attn.k_proj.bias"), std::string::npos) << p->name;
      continue;
    }
    double err = std::fabs(fd_max - double(gr[imax]));
    for (int k = 0; k < 3; ++k) {
      const int64_t i = int64_t(g() % uint64_t(n));
      err = std::max(err, std::fabs(test::central_difference(v, size_t(i), 1e-6, ref_loss) - double(gr[i])));
    }
    r.checked += 4;
    const double rel = err / gmax;
    r.worst = std::max(r.worst, rel);
    EXPECT_LE(rel, 2e-5) << what << ": " << p->name << " max |analytic - fd| " << err << ", max |grad| " << gmax;
  }
  std::cout << "[model fd] " << what << ": " << tv.params().size() << " tensors (" << zero
            << " structurally zero), " << r.checked << " entries, worst |err|/max|grad| = " << r.worst << ", loss "
            << loss << " (ref " << ref << ")\n";
  return r;
}

void sgd_step(train::TrainableVlm& tv, float lr) {
  for (train::Param* p : tv.params())
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data<float>()[i] -= lr * p->grad.data<float>()[i];
  tv.weights_updated();
}

}  // namespace

TEST(ModelGradients, Stage3FullTwoImages) {
  auto m = models::Vlm::create(tiny_llava(), 5, 0.3f);
  train::TrainableVlm tv(*m, train::stage_spec(3));
  randomize(tv, 1);
  check_model(tv, make_example(m->config(), 2, 3), nullptr, "stage 3, default strategy, 2 images");
}

TEST(ModelGradients, Stage3FullStrategyLastLayer) {
  auto m = models::Vlm::create(tiny_llava("full", -1), 6, 0.3f);
  train::TrainableVlm tv(*m, train::stage_spec(3));
  randomize(tv, 2);
  check_model(tv, make_example(m->config(), 1, 4), nullptr, "stage 3, full strategy, last layer");
}

TEST(ModelGradients, LoraOnEveryComponentAndHead) {
  auto m = models::Vlm::create(tiny_llava(), 7, 0.3f);
  train::TrainSpec spec;
  spec.train_projector = false;
  spec.lora.rank = 3;
  spec.lora.alpha = 6;
  spec.lora.components = {"vision", "projector", "llm"};
  spec.lora.targets = {"q", "k", "v", "o", "gate", "up", "down", "out_proj", "fc1", "fc2", "linear_1", "linear_2",
                       "lm_head"};
  train::TrainableVlm tv(*m, spec);
  for (train::Param* p : tv.params()) EXPECT_NE(p->name.find(".lora_"), std::string::npos) << p->name;
  randomize(tv, 3);
  test::RefLoraOpts lo;
  lo.scale = 2.0;
  check_model(tv, make_example(m->config(), 2, 5), &lo, "LoRA on vision, projector, decoder and lm_head");
}

TEST(ModelGradients, Stage2LoraDecoderProjectorFull) {
  auto m = models::Vlm::create(tiny_llava(), 8, 0.3f);
  // Projector full, LoRA rank 2 on the decoder. alpha 4 (scale 2): with randomized B, a larger scale makes the
  // network so sharp that float32 rounding alone reaches ~5e-5 of the largest gradient (central differences are
  // stable to 1e-8 across steps 1e-4..1e-6 there, and the error falls with the scale); this keeps the check tight.
  train::TrainSpec sp = train::stage_spec(2, 2);
  sp.lora.alpha = 4;
  train::TrainableVlm tv(*m, sp);
  randomize(tv, 4);
  test::RefLoraOpts lo;
  lo.scale = 2.0;
  check_model(tv, make_example(m->config(), 1, 6), &lo, "stage 2 LoRA (projector full)");
}

TEST(ModelGradients, TiedTextOnlyLlama) {
  auto m = models::Vlm::create(tiny_llama_tied(), 9, 0.3f);
  train::TrainSpec spec;
  spec.train_projector = false;
  spec.train_llm = true;
  train::TrainableVlm tv(*m, spec);
  EXPECT_TRUE(m->text().tied());
  EXPECT_EQ(tv.find("lm_head.weight"), nullptr);  // one tensor, both uses
  randomize(tv, 5);
  check_model(tv, make_example(m->config(), 0, 7), nullptr, "tied text-only llama, biases, MQA");
}

// Stage 1: only the projector has parameters; after SGD steps every other tensor is bit-identical, the
// projector's changed.
TEST(ModelGradients, FrozenTensorsStayBitIdentical) {
  auto m = models::Vlm::create(tiny_llava(), 10, 0.3f);
  auto before = test::weights_snapshot(*m);
  train::TrainableVlm tv(*m, train::stage_spec(1));
  for (train::Param* p : tv.params()) EXPECT_EQ(p->name.rfind("multi_modal_projector.", 0), 0u) << p->name;
  EXPECT_EQ(tv.params().size(), 4u);
  train::Example ex = make_example(m->config(), 1, 8);
  for (int s = 0; s < 3; ++s) {
    tv.zero_grad();
    tv.forward_backward(ex, 1.0f / float(train::supervised_count(ex)));
    sgd_step(tv, 0.5f);
  }
  auto after = test::weights_snapshot(*m);
  ASSERT_EQ(before.size(), after.size());
  int changed = 0;
  for (const auto& [name, bytes] : before) {
    const bool trained = tv.find(name) != nullptr;
    if (!trained) {
      EXPECT_EQ(bytes, after.at(name)) << name << " is frozen but changed";
    }
    changed += trained && bytes != after.at(name);
  }
  EXPECT_EQ(changed, 4);
}

TEST(ModelGradients, CheckpointingGivesTheSameGradients) {
  std::vector<std::vector<float>> grads[2];
  double losses[2];
  for (int ck = 0; ck < 2; ++ck) {
    auto m = models::Vlm::create(tiny_llava(), 11, 0.3f);
    train::TrainSpec spec = train::stage_spec(3);
    spec.checkpointing = ck == 1;
    train::TrainableVlm tv(*m, spec);
    randomize(tv, 6);
    losses[ck] = tv.forward_backward(make_example(m->config(), 2, 9), 1.0f).first;
    for (train::Param* p : tv.params())
      grads[ck].emplace_back(p->grad.data<float>(), p->grad.data<float>() + p->grad.numel());
  }
  EXPECT_EQ(losses[0], losses[1]);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_EQ(grads[0][i], grads[1][i]) << "tensor " << i;
}

// bf16 products for the trained linears: the loss and gradients stay close to f32's (bf16 keeps 8 bits of
// mantissa: ~0.4% per rounding), and weights_updated() refreshes the packed copies after an update.
TEST(ModelGradients, Bf16TrainingIsCloseToF32) {
  std::vector<std::vector<float>> grads[2];
  double losses[2], after[2];
  for (int b = 0; b < 2; ++b) {
    auto m = models::Vlm::create(tiny_llava(), 12, 0.3f);
    train::TrainSpec spec = train::stage_spec(3);
    spec.precision = b ? cpu::MatmulPrecision::BF16 : cpu::MatmulPrecision::F32;
    train::TrainableVlm tv(*m, spec);
    randomize(tv, 7);
    train::Example ex = make_example(m->config(), 1, 10);
    losses[b] = tv.forward_backward(ex, 1.0f).first;
    for (train::Param* p : tv.params())
      grads[b].emplace_back(p->grad.data<float>(), p->grad.data<float>() + p->grad.numel());
    sgd_step(tv, 0.05f);
    int64_t n;
    after[b] = tv.loss_only(ex, &n);
  }
  EXPECT_NEAR(losses[1], losses[0], 2e-2 * std::fabs(losses[0]));
  EXPECT_NEAR(after[1], after[0], 2e-2 * std::fabs(after[0]));
  EXPECT_LT(after[0], losses[0]);
  double worst = 0, global = 0;
  for (const auto& t : grads[0])
    for (float v : t) global = std::max(global, double(std::fabs(v)));
  for (size_t i = 0; i < grads[0].size(); ++i) {
    double num = 0, den = 0, mx = 0;
    for (size_t k = 0; k < grads[0][i].size(); ++k) {
      num += std::pow(double(grads[1][i][k]) - grads[0][i][k], 2);
      den += std::pow(double(grads[0][i][k]), 2);
      mx = std::max(mx, double(std::fabs(grads[0][i][k])));
    }
    if (mx <= 1e-5 * global) continue;  // the CLIP key biases: zero up to rounding
    worst = std::max(worst, std::sqrt(num / den));
  }
  std::cout << "[bf16] loss " << losses[1] << " vs f32 " << losses[0] << ", worst relative L2 gradient error " << worst
            << "\n";
  EXPECT_LE(worst, 5e-2);
}

TEST(ModelGradients, BadSpecsAndExamplesAreErrors) {
  auto m = models::Vlm::create(tiny_llava(), 13, 0.3f);
  train::TrainSpec both;
  both.train_llm = true;
  both.lora.rank = 2;
  both.lora.components = {"llm"};
  EXPECT_THROW(train::TrainableVlm(*m, both), Error);
  train::TrainSpec bad_target;
  bad_target.lora.rank = 2;
  bad_target.lora.targets = {"qq_proj"};
  EXPECT_THROW(train::TrainableVlm(*m, bad_target), Error);
  EXPECT_THROW(train::stage_spec(4), Error);
  train::TrainableVlm tv(*m, train::stage_spec(1));
  train::Example ex = make_example(m->config(), 1, 11);
  train::Example short_labels = ex;
  short_labels.labels.pop_back();
  EXPECT_THROW(tv.forward_backward(short_labels, 1.0f), Error);
  train::Example wrong_pixels = ex;
  wrong_pixels.pixel_values[0].pop_back();
  EXPECT_THROW(tv.forward_backward(wrong_pixels, 1.0f), Error);
  train::Example bad_label = ex;
  bad_label.labels.back() = 40;  // == vocab
  EXPECT_THROW(tv.forward_backward(bad_label, 1.0f), Error);
  train::Example nothing = ex;
  std::fill(nothing.labels.begin(), nothing.labels.end(), -100);
  EXPECT_EQ(tv.forward_backward(nothing, 1.0f).second, 0);
}

// A model loaded in bf16 precision trained at stage 1: the frozen decoder's bf16 products pass the gradient
// down to the projector (backward through packed bf16 weights); the projector gradients stay close to those of
// the f32 model (bf16 keeps 8 bits of mantissa).
TEST(ModelGradients, FrozenBf16ModelPassesGradients) {
  const std::string dir = test::shared_dir() + "/refcases/llava";
  std::vector<std::vector<float>> grads[2];
  for (int b = 0; b < 2; ++b) {
    auto m = models::Vlm::load(dir, {b ? models::WeightPrecision::BF16 : models::WeightPrecision::F32});
    EXPECT_EQ(m->precision(), b ? cpu::MatmulPrecision::BF16 : cpu::MatmulPrecision::F32);
    train::TrainableVlm tv(*m, train::stage_spec(1));
    train::Example ex;
    Tensor ids = io::load_npy(dir + "/input_ids.npy").to(DType::I64);
    for (int64_t i = 0; i < ids.numel(); ++i) ex.ids.push_back(int32_t(ids.data<int64_t>()[i]));
    ex.labels.assign(ex.ids.size(), -100);
    for (size_t t = ex.ids.size() - 8; t < ex.ids.size(); ++t) ex.labels[t] = ex.ids[t];
    Tensor px = io::load_npy(dir + "/pixel_values.npy");
    ex.pixel_values.emplace_back(px.data<float>(), px.data<float>() + px.numel());
    tv.forward_backward(ex, 1.0f / 8);
    for (train::Param* p : tv.params())
      grads[b].emplace_back(p->grad.data<float>(), p->grad.data<float>() + p->grad.numel());
  }
  double worst = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    double num = 0, den = 0;
    for (size_t k = 0; k < grads[0][i].size(); ++k) {
      num += std::pow(double(grads[1][i][k]) - grads[0][i][k], 2);
      den += std::pow(double(grads[0][i][k]), 2);
    }
    worst = std::max(worst, std::sqrt(num / den));
  }
  std::cout << "[bf16] frozen bf16 model, projector gradients: worst relative L2 error " << worst << "\n";
  EXPECT_LE(worst, 5e-2);
}
