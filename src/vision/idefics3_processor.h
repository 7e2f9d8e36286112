// Idefics3 / SmolVLM's image processor (transformers 4.47 Idefics3ImageProcessor; SmolVLMImageProcessor squares an
// unsplit image): resize so the longest edge is size.longest_edge (int() truncation, an odd short side + 1), then,
// with do_image_splitting, resize up to whole tiles of max_image_size, cut row-major tiles and add the whole image
// squashed to one tile ("global image"); Pillow's resize (LANCZOS by default) on uint8 at every step; the float32
// rescale and normalise (mean = std = 0.5). Numbers match transformers bit for bit on RGB input.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "vision/image.h"

namespace iris::vision {

struct Idefics3ProcessorConfig {
  bool do_convert_rgb = true, do_resize = true, do_rescale = true, do_normalize = true, do_pad = true;
  bool do_image_splitting = true;
  Resample resample = Resample::Lanczos;
  int64_t longest_edge = 4 * 364;      // size {"longest_edge"}; 0 when size gives height / width
  int64_t size_height = 0, size_width = 0;
  int64_t tile = 364;                  // max_image_size {"longest_edge"}
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f}, image_std{0.5f, 0.5f, 0.5f};
  bool square_unsplit = false;         // SmolVLMImageProcessor: an unsplit image is resized to one tile
  std::string image_processor_type = "Idefics3ImageProcessor";

  // Absent keys take the class defaults; bad values and other processor types are an iris::Error.
  static Idefics3ProcessorConfig from_json(const nlohmann::json& j);
  static Idefics3ProcessorConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
};

// The sizes one image goes through: (h, w) after the longest-edge resize, after the resize to whole tiles (when
// splitting), the tile grid (0 x 0: not split) and each frame's (h, w), tiles row-major then the global image.
struct Idefics3Geometry {
  std::pair<int64_t, int64_t> resized, encoder;
  int64_t rows = 0, cols = 0;
  std::vector<std::pair<int64_t, int64_t>> frames;
};
Idefics3Geometry idefics3_geometry(int64_t height, int64_t width, const Idefics3ProcessorConfig& cfg);

// One image's frames, (3, H, W) float32 each, in prompt order, and its tile grid.
struct Idefics3Image {
  std::vector<std::vector<float>> frames;
  std::vector<std::pair<int64_t, int64_t>> frame_hw;
  int64_t rows = 0, cols = 0;
};
Idefics3Image idefics3_process(const Image& img, const Idefics3ProcessorConfig& cfg);

}  // namespace iris::vision
