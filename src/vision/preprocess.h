// Hugging Face image-processor preprocessing (CLIPImageProcessor, SiglipImageProcessor, LLaVA pad-to-square):
// the config from preprocessor_config.json, the uint8 geometry (convert, pad, resize, crop) and the float32
// pixel_values, computed with the same float32 operations as transformers so the numbers match bit for bit.
#pragma once
#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "vision/image.h"

namespace iris::vision {

struct PreprocessConfig {
  bool do_convert_rgb = true, do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true;
  int shortest_edge = 0;                     // size {"shortest_edge": N} form; 0 = unused
  int resize_height = 0, resize_width = 0;   // size {"height","width"} form
  int crop_height = 0, crop_width = 0;
  Resample resample = Resample::Bicubic;
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f}, image_std{0.26862954f, 0.26130258f, 0.27577711f};
  bool pad_to_square = false;                // LLaVA image_aspect_ratio "pad" (or LlavaImageProcessor do_pad)
  std::array<uint8_t, 3> pad_color{122, 116, 104};  // int(255 * mean) per channel, as LLaVA computes it

  // preprocessor_config.json of CLIPImageProcessor / SiglipImageProcessor / LlavaImageProcessor: size may be an
  // int, {"shortest_edge"} or {"height","width"}; crop_size an int or a dict; resample a PIL id. Keys that are
  // absent take the class defaults. Throws iris::Error on bad values or an unsupported processor type.
  static PreprocessConfig from_json(const nlohmann::json& j);
  static PreprocessConfig from_file(const std::string& path);

  // Final pixel_values size. Throws when it depends on the input image (shortest-edge resize without a crop);
  // output_size() answers for a given input size in every case.
  int out_height() const;
  int out_width() const;
  std::pair<int, int> output_size(int in_width, int in_height) const;  // (width, height)
  // Size after the resize step for an input of this size: (width, height).
  std::pair<int, int> resize_size(int in_width, int in_height) const;
  // Where a box of the input image (pixel coordinates x0, y0, x1, y1, continuous) lands in the output image:
  // through the pad to square (the image centred as LLaVA pastes it), the resize and the centre crop. The result
  // may reach outside [0, out_width] x [0, out_height] where the crop cut the box.
  std::array<double, 4> map_box(int in_width, int in_height, const std::array<double, 4>& box) const;
};

// Reads a JSON config file and hands it to parse; a missing file, invalid JSON or an error of parse becomes an
// iris::Error prefixed with the path.
void read_config_file(const std::string& path, const std::function<void(const nlohmann::json&)>& parse);

// RGB uint8 right before rescale (what refcases' outputs/*.png hold).
Image preprocess_u8(const Image& img, const PreprocessConfig& cfg);
// CHW float32, (3, out_h, out_w): x = float32(double(u8) * rescale_factor); (x - float32(mean)) / float32(std).
std::vector<float> preprocess(const Image& img, const PreprocessConfig& cfg);
// The last step alone: an RGB uint8 image to CHW float32 as above.
std::vector<float> normalize_chw(const Image& rgb, const PreprocessConfig& cfg);

}  // namespace iris::vision
