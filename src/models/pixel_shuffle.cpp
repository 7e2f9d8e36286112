// Idefics3's pixel-shuffle connector.
#include "models/pixel_shuffle.h"

#include <algorithm>
#include <cmath>

namespace iris::models {

Tensor pixel_shuffle(const Tensor& features, int64_t n_frames, int64_t s) {
  IRIS_CHECK(features.ndim() == 2 && n_frames > 0 && features.dim(0) % n_frames == 0,
             "pixel shuffle: ", shape_str(features.shape()), " features for ", n_frames, " frames");
  const int64_t seq = features.dim(0) / n_frames, E = features.dim(1);
  const int64_t g = int64_t(std::llround(std::sqrt(double(seq))));
  IRIS_CHECK(g * g == seq, "pixel shuffle: a frame of ", seq, " patches is not a square grid");
  IRIS_CHECK(s >= 1 && g % s == 0, "pixel shuffle: a ", g, "x", g, " patch grid does not split by scale_factor ", s);
  const int64_t go = g / s, Eo = E * s * s;
  Tensor out = Tensor::empty({n_frames * go * go, Eo});
  const float* in = features.data<float>();
  float* o = out.data<float>();
  for (int64_t f = 0; f < n_frames; ++f)
    for (int64_t i = 0; i < go; ++i)
      for (int64_t j = 0; j < go; ++j) {
        float* row = o + ((f * go + i) * go + j) * Eo;
        for (int64_t a = 0; a < s; ++a)
          for (int64_t b = 0; b < s; ++b)
            std::copy_n(in + (f * seq + (i * s + a) * g + (j * s + b)) * E, E, row + (a * s + b) * E);
      }
  return out;
}

void PixelShuffleProjector::load(WeightLoader& w, const std::string& prefix, int64_t vision_dim, int64_t scale,
                                 int64_t text_dim) {
  IRIS_CHECK(scale >= 1, "scale_factor must be >= 1, got ", scale);
  scale_ = scale;
  w.linear(proj_, prefix + "modality_projection.proj", text_dim, vision_dim * scale * scale, false);
}

Tensor PixelShuffleProjector::forward(const Tensor& features, int64_t n_frames) const {
  Tensor x = pixel_shuffle(features, n_frames, scale_);
  Tensor y = Tensor::empty({x.dim(0), proj_.out_features()});
  proj_.forward(x.data<float>(), x.dim(0), y.data<float>());
  return y;
}

}  // namespace iris::models
