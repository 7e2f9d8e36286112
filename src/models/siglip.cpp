// SigLIP vision tower: loading, Idefics3's position buckets, the inference forward.
#include "models/siglip.h"

#include <algorithm>
#include <cmath>

#include "ops/patch.h"

namespace iris::models {

namespace {

// torch.arange(start, end, step) in float32 as a CPU build that dispatches AVX2 computes it: the length is
// ceil((end - start) / step) in double; elements in whole 16-element blocks are
// float32(double(float32(start + step * j)) + k * step) with j the index rounded down to a multiple of 8 and
// k = index - j (a vector base plus lane offsets), the tail float32(start + step * i).
std::vector<float> torch_arange_f32(double start, double end, double step) {
  const int64_t n = int64_t(std::ceil((end - start) / step));
  const int64_t full = n / 16 * 16;
  std::vector<float> out(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    if (i < full) {
      const int64_t j = i - i % 8;
      out[size_t(i)] = float(double(float(start + step * double(j))) + double(i % 8) * step);
    } else {
      out[size_t(i)] = float(start + step * double(i));
    }
  }
  return out;
}

}  // namespace

std::vector<int64_t> idefics3_position_buckets(int64_t nb, int64_t nps) {
  IRIS_CHECK(nb >= 1 && nps >= 1, "position buckets: ", nb, " patches on a table of ", nps);
  const std::vector<float> bounds = torch_arange_f32(1.0 / double(nps), 1.0, 1.0 / double(nps));
  // HF: torch.arange(0, 1 - 1e-6, 1 / nb_patches) where nb_patches is a tensor: the step is float32(1 / nb).
  const double step = double(1.0f / float(nb));
  const std::vector<float> frac = torch_arange_f32(0.0, 1.0 - 1e-6, step);
  IRIS_CHECK(int64_t(frac.size()) == nb, "position buckets: ", frac.size(), " fractions for ", nb, " patches");
  std::vector<int64_t> out;
  for (float f : frac)  // bucketize(right=True): the number of boundaries <= f
    out.push_back(int64_t(std::upper_bound(bounds.begin(), bounds.end(), f) - bounds.begin()));
  return out;
}

void SiglipVision::load(WeightLoader& w, const std::string& prefix, const SiglipVisionConfig& cfg,
                        bool with_post_layernorm) {
  cfg_ = cfg;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, C = cfg.num_channels, p = cfg.patch_size;
  const std::string e = prefix + "embeddings.";
  Tensor pw = w.raw(e + "patch_embedding.weight", {D, C, p, p});
  patch_.w = cpu::LinearWeight(pw.view({D, C * p * p}), w.precision());
  patch_.b = w.f32(e + "patch_embedding.bias", {D});
  pos_emb_ = w.f32(e + "position_embedding.weight", {cfg.num_positions(), D});
  w.record([this, e, D, C, p](std::vector<nn::ParamSlot>& out) {
    nn::Linear* pl = &patch_;
    // The convolution weight is (D, C, p, p) in the checkpoint and (D, C*p*p) in the layer.
    out.push_back({e + "patch_embedding.weight", patch_.w.tensor().view({D, C, p, p}), true,
                   [pl, D](const Tensor& master, float* grad, cpu::MatmulPrecision precision) {
                     pl->w = cpu::LinearWeight(master.view({D, -1}), precision);
                     pl->grad_w = grad;
                   },
                   [pl] {
                     if (pl->w.precision() == cpu::MatmulPrecision::BF16) pl->w.repack();
                   }});
    out.push_back(nn::tensor_slot(e + "patch_embedding.bias", patch_.b, patch_.grad_b, true));
    out.push_back(nn::tensor_slot(e + "position_embedding.weight", pos_emb_, grad_pos_emb_, true));
  });
  const ops::Activation act = ops::activation_from_name(cfg.hidden_act);
  layers_.clear();
  layers_.resize(size_t(cfg.num_hidden_layers));  // before loading: the record points into the layers
  for (int il = 0; il < cfg.num_hidden_layers; ++il) {
    load_vit_block(w, layers_[size_t(il)], prefix + "encoder.layers." + std::to_string(il) + ".", D, I,
                   cfg.layer_norm_eps, act, cfg.num_attention_heads);
  }
  if (with_post_layernorm) w.layernorm(post_ln_, prefix + "post_layernorm", D, cfg.layer_norm_eps);
  else w.skip(prefix + "post_layernorm.");
}

Tensor SiglipVision::forward(const float* pixels, int64_t C, int64_t H, int64_t W, const uint8_t* pixel_mask,
                             const nn::Tap& tap) const {
  const int64_t p = cfg_.patch_size, D = cfg_.hidden_size, nps = cfg_.grid();
  IRIS_CHECK(C == cfg_.num_channels, "vision tower expects ", cfg_.num_channels, " channels, got ", C);
  IRIS_CHECK(H > 0 && W > 0 && H % p == 0 && W % p == 0, "vision tower: a ", H, "x", W,
             " frame is not a whole number of ", p, "-pixel patches");
  const int64_t gh = H / p, gw = W / p, np = gh * gw;
  // Real patches: any real pixel inside.
  std::vector<uint8_t> real(size_t(np), 1);
  if (pixel_mask) {
    for (int64_t i = 0; i < gh; ++i)
      for (int64_t j = 0; j < gw; ++j) {
        bool any = false;
        for (int64_t y = i * p; y < (i + 1) * p && !any; ++y)
          for (int64_t x = j * p; x < (j + 1) * p; ++x)
            if (pixel_mask[y * W + x]) {
              any = true;
              break;
            }
        real[size_t(i * gw + j)] = any;
      }
  }
  int64_t nb_h = 0, nb_w = 0, n_real = 0;
  for (int64_t i = 0; i < gh; ++i) nb_h += real[size_t(i * gw)];
  for (int64_t j = 0; j < gw; ++j) nb_w += real[size_t(j)];
  for (uint8_t r : real) n_real += r;
  IRIS_CHECK(n_real > 0, "vision tower: a frame without any real pixel");
  IRIS_CHECK(n_real == nb_h * nb_w, "vision tower: the real pixels of a frame are not its top-left rectangle");
  for (int64_t i = 0; i < gh; ++i)
    for (int64_t j = 0; j < gw; ++j)
      IRIS_CHECK(bool(real[size_t(i * gw + j)]) == (i < nb_h && j < nb_w),
                 "vision tower: the real pixels of a frame are not its top-left rectangle");
  // Position ids: Idefics3's buckets on the real rectangle (the identity for a full frame of the table's size,
  // up to HF's rounding); padding patches take row 0.
  const std::vector<int64_t> bh = idefics3_position_buckets(nb_h, nps), bw = idefics3_position_buckets(nb_w, nps);

  // Rows in compute order: the real patches (row-major), then the padding, so attention looks at the first
  // n_real rows only.
  std::vector<int64_t> order;  // compute row -> patch index
  for (int64_t i = 0; i < nb_h; ++i)
    for (int64_t j = 0; j < nb_w; ++j) order.push_back(i * gw + j);
  for (int64_t k = 0; k < np; ++k)
    if (!real[size_t(k)]) order.push_back(k);

  std::vector<float> cols(size_t(np * C * p * p)), sorted(size_t(np * C * p * p));
  ops::patchify(pixels, C, H, W, p, cols.data());
  const int64_t K = C * p * p;
  for (int64_t r = 0; r < np; ++r)
    std::copy_n(cols.data() + order[size_t(r)] * K, K, sorted.data() + r * K);
  Tensor h = Tensor::empty({np, D});
  float* hd = h.data<float>();
  patch_.forward(sorted.data(), np, hd);
  const float* pos = pos_emb_.data<float>();
  for (int64_t r = 0; r < np; ++r) {
    const int64_t pid = r < n_real ? bh[size_t(r / nb_w)] * nps + bw[size_t(r % nb_w)] : 0;
    for (int64_t d = 0; d < D; ++d) hd[r * D + d] += pos[pid * D + d];
  }
  if (tap) tap("embeddings", -1, hd, np, D);
  nn::Scratch s;
  for (size_t il = 0; il < layers_.size(); ++il) layers_[il].forward(hd, np, s, tap, int(il), n_real);
  if (post_ln_.w.defined()) post_ln_.forward(hd, hd, np);
  // Back to row-major patch order.
  Tensor out = Tensor::empty({np, D});
  for (int64_t r = 0; r < np; ++r) std::copy_n(hd + r * D, D, out.data<float>() + order[size_t(r)] * D);
  return out;
}

}  // namespace iris::models
