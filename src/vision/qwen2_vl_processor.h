// Qwen2-VL's image processor (transformers 4.47 Qwen2VLImageProcessor, also used by Qwen2.5-VL): "smart resize" of
// each image to multiples of patch*merge pixels within a pixel budget, Pillow's resize, the float32 rescale and
// normalise of preprocess.h, and the flattening into one row per 14x14 patch, grouped by 2x2 merge blocks, exactly
// in the order the vision tower and its merger expect. Numbers match transformers bit for bit.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "vision/image.h"

namespace iris::vision {

// preprocessor_config.json of Qwen2VLImageProcessor (also used by Qwen2.5-VL).
struct Qwen2VLProcessorConfig {
  bool do_convert_rgb = true, do_resize = true, do_rescale = true, do_normalize = true;
  Resample resample = Resample::Bicubic;
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f};  // OpenAI CLIP statistics
  std::array<float, 3> image_std{0.26862954f, 0.26130258f, 0.27577711f};
  int patch_size = 14, merge_size = 2, temporal_patch_size = 2;
  int64_t min_pixels = 56 * 56, max_pixels = 28 * 28 * 1280;

  // Keys that are absent take the class defaults. The pixel bounds come from the top-level "min_pixels" /
  // "max_pixels" keys (transformers 4.47), else from size {"min_pixels", "max_pixels"} or, as newer transformers
  // write it, size {"shortest_edge", "longest_edge"}; the top-level keys win when both are given. Throws iris::Error
  // on bad values (negative or non-integer sizes, min_pixels > max_pixels, max_pixels < factor^2, ...) and on an
  // image_processor_type that is not a Qwen2-VL / Qwen2.5-VL image processor.
  static Qwen2VLProcessorConfig from_json(const nlohmann::json& j);
  static Qwen2VLProcessorConfig from_file(const std::string& path);
  int factor() const { return patch_size * merge_size; }  // resized sides are multiples of this (28)
};

// transformers' smart_resize: (height, width) -> (h', w'), multiples of `factor`. h' = round(h/f)*f (Python round,
// ties to even), likewise w'; if h'w' > max_pixels both are recomputed as floor(side/beta/f)*f with
// beta = sqrt(hw/max_pixels); else if h'w' < min_pixels as ceil(side*beta/f)*f with beta = sqrt(min_pixels/(hw)).
// Throws iris::Error when height or width < factor, when max/min side > 200 (transformers raises ValueError for
// both), and when the floor branch gives a side of 0 (transformers 4.47 does not clamp it; Pillow then fails).
std::pair<int64_t, int64_t> qwen2_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                                  int64_t max_pixels);

// One image's processor output.
struct Qwen2VLImage {
  // (grid_t*grid_h*grid_w, C*temporal*patch*patch), rows in transformers' order: over the merge blocks in raster
  // order (block row, block column), inside a block over its merge*merge patches in raster order; each row is
  // (channel, temporal slot, py, px), the image repeated in every temporal slot.
  std::vector<float> pixel_values;
  int64_t grid_t = 1, grid_h = 0, grid_w = 0;  // image_grid_thw, in patches
  int64_t merge_size = 2;
  int64_t n_patches() const { return grid_t * grid_h * grid_w; }  // rows of pixel_values
  int64_t patch_dim() const;   // columns of pixel_values: C*temporal*patch*patch (1176)
  int64_t n_tokens() const;    // grid_t*grid_h*grid_w / merge_size^2: image tokens in the prompt
};

// (height, width) after the resize step for an input of this size (the input size itself when do_resize is off).
std::pair<int64_t, int64_t> qwen2_vl_resized_size(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg);
// image_grid_thw for an input of this size, without touching pixels (for counting image tokens): {1, h'/p, w'/p}.
std::array<int64_t, 3> qwen2_vl_grid_thw(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg);

// RGB uint8 after the smart resize (what refcases' image*_resized_u8.npy hold). Non-RGB input is converted to RGB.
Image qwen2_vl_resize_u8(const Image& img, const Qwen2VLProcessorConfig& cfg);
// The whole processor for one image: resize, rescale + normalise (float32, as preprocess.h), patchify.
Qwen2VLImage qwen2_vl_preprocess(const Image& img, const Qwen2VLProcessorConfig& cfg);
// The last step alone: a CHW float image (channels, height, width), sides multiples of patch*merge, to rows.
Qwen2VLImage qwen2_vl_patchify(const float* chw, int channels, int height, int width,
                               const Qwen2VLProcessorConfig& cfg);

// Per-call pixel bounds (CLI --min-pixels/--max-pixels, a server request): a copy with them replaced (0 = keep the
// config's). Throws iris::Error when a given bound is negative or below factor^2, or the resulting min > max.
Qwen2VLProcessorConfig with_pixel_bounds(const Qwen2VLProcessorConfig& cfg, int64_t min_pixels, int64_t max_pixels);

}  // namespace iris::vision
