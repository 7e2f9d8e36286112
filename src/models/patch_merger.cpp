// Qwen2-VL patch merger: forward, training pair, slots.
#include "models/patch_merger.h"

#include "ops/activations.h"

namespace iris::models {

struct MergerActs : PartActs {
  int64_t n = 0;               // tokens
  std::vector<float> x;        // (n*unit, D) input rows
  std::vector<float> mean, rstd;
  std::vector<float> xn;       // (n, unit*D) normed and concatenated (mlp.0's input)
  std::vector<float> h;        // (n, unit*D) mlp.0 output before GELU
};

void PatchMerger::load(WeightLoader& w, const std::string& prefix, const Qwen2VLVisionConfig& cfg) {
  prefix_ = prefix;
  merge_ = cfg.spatial_merge_size;
  unit_ = merge_ * merge_;
  rms_ = cfg.v25;
  const int64_t D = cfg.embed_dim, H = D * unit_;
  if (rms_) w.rmsnorm(rn_, prefix + "ln_q", D, 1e-6f); else w.layernorm(ln_, prefix + "ln_q", D, 1e-6f);
  w.linear(fc1_, prefix + "mlp.0", H, H, true);
  w.linear(fc2_, prefix + "mlp.2", cfg.out_dim, H, true);
}

ImageFeatures PatchMerger::run(const Tensor& features, const ImagePixels& px, MergerActs* a) const {
  Tensor f = features.contiguous();
  const int64_t D = fc1_.in_features() / unit_, H = fc1_.in_features(), O = fc2_.out_features();
  IRIS_CHECK(f.ndim() == 2 && f.dim(1) == D && f.dim(0) % unit_ == 0, "patch merger: features ", shape_str(f.shape()),
             ", expected (a multiple of ", unit_, ", ", D, ")");
  const int64_t rows = f.dim(0), n = rows / unit_;
  IRIS_CHECK(px.grid_t * px.grid_h * px.grid_w == rows, "patch merger: ", rows, " feature rows for a grid of (",
             px.grid_t, ", ", px.grid_h, ", ", px.grid_w, ")");
  std::vector<float> xn_local;
  float* xn;  // (rows, D) == (n, H)
  if (a) {
    a->n = n;
    a->x.assign(f.data<float>(), f.data<float>() + rows * D);
    a->rstd.resize(size_t(rows));
    a->xn.resize(size_t(rows * D));
    xn = a->xn.data();
    if (rms_) {
      rn_.forward_train(f.data<float>(), xn, a->rstd.data(), rows);
    } else {
      a->mean.resize(size_t(rows));
      ln_.forward_train(f.data<float>(), xn, a->mean.data(), a->rstd.data(), rows);
    }
  } else {
    xn_local.resize(size_t(rows * D));
    xn = xn_local.data();
    if (rms_) rn_.forward(f.data<float>(), xn, rows); else ln_.forward(f.data<float>(), xn, rows);
  }
  std::vector<float> h(size_t(n * H));
  if (a) fc1_.forward_train(xn, n, h.data()); else fc1_.forward(xn, n, h.data());
  if (a) a->h = h;
  ops::gelu_forward(h.data(), h.data(), n * H);
  ImageFeatures r;
  r.embeddings = Tensor::empty({n, O});
  if (a) fc2_.forward_train(h.data(), n, r.embeddings.data<float>());
  else fc2_.forward(h.data(), n, r.embeddings.data<float>());
  r.grid_t = px.grid_t;
  r.grid_h = px.grid_h / merge_;
  r.grid_w = px.grid_w / merge_;
  return r;
}

ImageFeatures PatchMerger::forward(const Tensor& features, const ImagePixels& px) const {
  return run(features, px, nullptr);
}

ImageFeatures PatchMerger::forward_train(const Tensor& features, const ImagePixels& px,
                                         std::unique_ptr<PartActs>& acts) const {
  auto a = std::make_unique<MergerActs>();
  ImageFeatures r = run(features, px, a.get());
  acts = std::move(a);
  return r;
}

void PatchMerger::backward(PartActs& acts, const float* dy, float* dfeat) const {
  auto& a = static_cast<MergerActs&>(acts);
  const int64_t n = a.n, H = fc1_.in_features(), D = H / unit_, rows = n * unit_;
  std::vector<float> g(size_t(n * H)), dh(size_t(n * H));
  ops::gelu_forward(a.h.data(), g.data(), n * H);  // mlp.2's input, recomputed
  fc2_.backward(g.data(), dy, n, dh.data());
  ops::gelu_backward(a.h.data(), dh.data(), dh.data(), n * H);
  const bool need_dx = dfeat || ln_.trains() || rn_.trains();
  std::vector<float> dxn(need_dx ? size_t(n * H) : 0);
  fc1_.backward(a.xn.data(), dh.data(), n, need_dx ? dxn.data() : nullptr);
  if (!need_dx) return;
  std::vector<float> dx_local;
  float* dx = dfeat;
  if (!dx) {
    dx_local.resize(size_t(rows * D));
    dx = dx_local.data();
  }
  if (rms_) rn_.backward(a.x.data(), a.rstd.data(), dxn.data(), dx, rows);
  else ln_.backward(a.x.data(), a.mean.data(), a.rstd.data(), dxn.data(), dx, rows);
}

bool PatchMerger::trains() const { return ln_.trains() || rn_.trains() || fc1_.trains() || fc2_.trains(); }

}  // namespace iris::models
