// Image augmentation for training (off by default): random resized crop and colour jitter on 8-bit RGB images,
// before the model's own preprocessing. All randomness comes from an Rng keyed by (seed, epoch, sample, image),
// so an augmented example is the same however many workers run and after a resume.
#pragma once
#include "data/rng.h"
#include "vision/image.h"

namespace iris::data {

struct AugmentConfig {
  // Random resized crop: a crop of area fraction in [scale_min, scale_max] with aspect ratio (w/h) log-uniform in
  // [ratio_min, ratio_max], anywhere in the image (10 tries, then the whole image). The model's preprocessing then
  // resizes it as it does any image.
  bool crop = true;
  double scale_min = 0.5, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  // Colour jitter: factors uniform in [max(0, 1 - x), 1 + x], applied in the order brightness, contrast,
  // saturation (0 disables one).
  double brightness = 0.2, contrast = 0.2, saturation = 0.2;
};

// The crop rectangle (x, y, w, h) for an image of this size.
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
};
CropBox random_crop_box(int width, int height, const AugmentConfig& cfg, Rng& rng);

// Applies cfg to an RGB (3-channel) image.
vision::Image augment_image(const vision::Image& rgb, const AugmentConfig& cfg, Rng& rng);

}  // namespace iris::data
