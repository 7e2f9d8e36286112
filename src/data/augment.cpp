// Random resized crop and colour jitter (brightness, contrast, saturation) on 8-bit RGB images.
#include "data/augment.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace iris::data {

CropBox random_crop_box(int width, int height, const AugmentConfig& cfg, Rng& rng) {
  IRIS_CHECK(cfg.scale_min > 0 && cfg.scale_min <= cfg.scale_max && cfg.scale_max <= 1.0,
             "augment: need 0 < scale_min <= scale_max <= 1, got ", cfg.scale_min, ", ", cfg.scale_max);
  IRIS_CHECK(cfg.ratio_min > 0 && cfg.ratio_min <= cfg.ratio_max, "augment: need 0 < ratio_min <= ratio_max, got ",
             cfg.ratio_min, ", ", cfg.ratio_max);
  const double area = double(width) * double(height);
  const double log_lo = std::log(cfg.ratio_min), log_hi = std::log(cfg.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(cfg.scale_min, cfg.scale_max);
    const double ratio = std::exp(rng.uniform(log_lo, log_hi));
    const int w = int(std::lround(std::sqrt(target * ratio)));
    const int h = int(std::lround(std::sqrt(target / ratio)));
    if (w >= 1 && h >= 1 && w <= width && h <= height) {
      CropBox b;
      b.w = w;
      b.h = h;
      b.x = int(rng.below(uint64_t(width - w) + 1));
      b.y = int(rng.below(uint64_t(height - h) + 1));
      return b;
    }
  }
  return {0, 0, width, height};
}

namespace {

uint8_t clamp_u8(double v) { return uint8_t(std::clamp(std::lround(v), 0L, 255L)); }

double jitter_factor(double strength, Rng& rng) { return rng.uniform(std::max(0.0, 1.0 - strength), 1.0 + strength); }

// ITU-R 601-2 luma, as PIL's convert("L").
double luma(const uint8_t* p) { return (299.0 * p[0] + 587.0 * p[1] + 114.0 * p[2]) / 1000.0; }

}  // namespace

vision::Image augment_image(const vision::Image& rgb, const AugmentConfig& cfg, Rng& rng) {
  IRIS_CHECK(rgb.channels == 3, "augment: expected an RGB image, got ", rgb.channels, " channels");
  vision::Image img = rgb;
  if (cfg.crop) {
    CropBox b = random_crop_box(rgb.width, rgb.height, cfg, rng);
    if (b.w != rgb.width || b.h != rgb.height) {
      img = vision::Image::zeros(b.w, b.h, 3);
      for (int y = 0; y < b.h; ++y)
        std::copy_n(rgb.row(b.y + y) + size_t(b.x) * 3, size_t(b.w) * 3, img.row(y));
    }
  }
  const size_t n = size_t(img.width) * size_t(img.height);
  uint8_t* px = img.pixels.data();
  if (cfg.brightness > 0) {
    const double f = jitter_factor(cfg.brightness, rng);
    for (size_t i = 0; i < n * 3; ++i) px[i] = clamp_u8(px[i] * f);
  }
  if (cfg.contrast > 0 && n > 0) {
    const double f = jitter_factor(cfg.contrast, rng);
    double mean = 0;
    for (size_t i = 0; i < n; ++i) mean += luma(px + 3 * i);
    mean /= double(n);
    for (size_t i = 0; i < n * 3; ++i) px[i] = clamp_u8((px[i] - mean) * f + mean);
  }
  if (cfg.saturation > 0) {
    const double f = jitter_factor(cfg.saturation, rng);
    for (size_t i = 0; i < n; ++i) {
      uint8_t* p = px + 3 * i;
      const double g = luma(p);
      for (int c = 0; c < 3; ++c) p[c] = clamp_u8((p[c] - g) * f + g);
    }
  }
  return img;
}

}  // namespace iris::data
