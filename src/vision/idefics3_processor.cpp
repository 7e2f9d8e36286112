// Idefics3 / SmolVLM image processor: see idefics3_processor.h.
#include "vision/idefics3_processor.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "vision/preprocess.h"

namespace iris::vision {

namespace {

// get_resize_output_image_size's max_image_size: 1820 in transformers 4.47, 4096 from the release that added
// SmolVLM-256M / 500M, whose preprocessor_config.json asks for a longest edge of 2048 (which 4.47 refuses). Below
// 1820 the two agree.
constexpr int64_t kMaxImageSizeBound = 4096;

int64_t int_of(const nlohmann::json& v, const char* what) {
  IRIS_CHECK(v.is_number_integer() || (v.is_number() && v.get<double>() == std::floor(v.get<double>())),
             "preprocessor_config: ", what, " must be an integer");
  const int64_t x = v.is_number_integer() ? v.get<int64_t>() : int64_t(v.get<double>());
  IRIS_CHECK(x > 0, "preprocessor_config: ", what, " must be positive, got ", x);
  return x;
}

// _resize_output_size_rescale_to_max_len, then _resize_output_size_scale_below_upper_bound (float64 aspect,
// int() truncation; the short side made even by + 1 in the first step).
std::pair<int64_t, int64_t> longest_edge_size(int64_t height, int64_t width, int64_t L) {
  IRIS_CHECK(L <= kMaxImageSizeBound, "size.longest_edge ", L, " is larger than ", kMaxImageSizeBound);
  double aspect = double(width) / double(height);
  int64_t h, w;
  if (width >= height) {
    w = L;
    h = int64_t(double(w) / aspect);
    if (h % 2 != 0) ++h;
  } else {
    h = L;
    w = int64_t(double(h) * aspect);
    if (w % 2 != 0) ++w;
  }
  h = std::max<int64_t>(h, 1);
  w = std::max<int64_t>(w, 1);
  aspect = double(w) / double(h);
  if (w >= h && w > kMaxImageSizeBound) {
    w = kMaxImageSizeBound;
    h = int64_t(double(w) / aspect);
  } else if (h > w && h > kMaxImageSizeBound) {
    h = kMaxImageSizeBound;
    w = int64_t(double(h) * aspect);
  }
  return {std::max<int64_t>(h, 1), std::max<int64_t>(w, 1)};
}

int64_t ceil_to(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// resize_for_vision_encoder: whole tiles, the other side from the aspect ratio.
std::pair<int64_t, int64_t> encoder_size(int64_t height, int64_t width, int64_t tile) {
  const double aspect = double(width) / double(height);
  int64_t h, w;
  if (width >= height) {
    w = ceil_to(width, tile);
    h = ceil_to(int64_t(double(w) / aspect), tile);
  } else {
    h = ceil_to(height, tile);
    w = ceil_to(int64_t(double(h) * aspect), tile);
  }
  return {h, w};
}

// Pillow resize of an image in any mode, as the HF processor does before converting to RGB: one channel goes
// through mode "P" (Pillow resizes it NEAREST whatever the filter), the others with the filter.
Image resize_like_hf(const Image& img, int64_t h, int64_t w, Resample r) {
  return resize(img, int(w), int(h), img.channels == 1 ? Resample::Nearest : r);
}

// convert_to_rgb: RGBA composited over opaque white, gray replicated.
Image rgb_like_hf(const Image& img) {
  if (img.channels != 4) return to_rgb(img);
  Image out = Image::zeros(img.width, img.height, 3);
  for (size_t i = 0, n = size_t(img.width) * size_t(img.height); i < n; ++i) {
    const uint8_t* p = img.pixels.data() + 4 * i;
    const int a = p[3];
    for (int c = 0; c < 3; ++c)  // PIL alpha_composite over white: (src*a + 255*(255-a)) / 255, rounded
      out.pixels[3 * i + size_t(c)] = uint8_t((p[c] * a + 255 * (255 - a) + 127) / 255);
  }
  return out;
}

Image crop(const Image& img, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  Image out = Image::zeros(int(x1 - x0), int(y1 - y0), img.channels);
  for (int64_t y = y0; y < y1; ++y)
    std::copy_n(img.row(int(y)) + x0 * img.channels, (x1 - x0) * img.channels, out.row(int(y - y0)));
  return out;
}

}  // namespace

Idefics3ProcessorConfig Idefics3ProcessorConfig::from_json(const nlohmann::json& j) {
  IRIS_CHECK(j.is_object(), "preprocessor_config must be a JSON object");
  Idefics3ProcessorConfig c;
  auto flag = [&](const char* k, bool& dst) {
    if (j.contains(k) && !j[k].is_null()) {
      IRIS_CHECK(j[k].is_boolean(), "preprocessor_config: ", k, " must be true or false");
      dst = j[k].get<bool>();
    }
  };
  flag("do_convert_rgb", c.do_convert_rgb);
  flag("do_resize", c.do_resize);
  flag("do_rescale", c.do_rescale);
  flag("do_normalize", c.do_normalize);
  flag("do_pad", c.do_pad);
  flag("do_image_splitting", c.do_image_splitting);
  if (j.contains("image_processor_type") && j["image_processor_type"].is_string())
    c.image_processor_type = j["image_processor_type"];
  IRIS_CHECK(c.image_processor_type == "Idefics3ImageProcessor" || c.image_processor_type == "SmolVLMImageProcessor",
             "preprocessor_config: image_processor_type ", c.image_processor_type,
             " is not Idefics3ImageProcessor or SmolVLMImageProcessor");
  c.square_unsplit = c.image_processor_type == "SmolVLMImageProcessor";
  if (j.contains("resample") && !j["resample"].is_null()) c.resample = resample_from_pil(int(int_of(j["resample"], "resample") ));
  if (j.contains("size") && !j["size"].is_null()) {
    const auto& s = j["size"];
    IRIS_CHECK(s.is_object(), "preprocessor_config: size must be an object");
    if (s.contains("longest_edge")) {
      c.longest_edge = int_of(s["longest_edge"], "size.longest_edge");
    } else {
      IRIS_CHECK(s.contains("height") && s.contains("width"),
                 "preprocessor_config: size must have longest_edge, or height and width");
      c.longest_edge = 0;
      c.size_height = int_of(s["height"], "size.height");
      c.size_width = int_of(s["width"], "size.width");
    }
  }
  if (j.contains("max_image_size") && !j["max_image_size"].is_null()) {
    IRIS_CHECK(j["max_image_size"].is_object() && j["max_image_size"].contains("longest_edge"),
               "preprocessor_config: max_image_size must be {\"longest_edge\": N}");
    c.tile = int_of(j["max_image_size"]["longest_edge"], "max_image_size.longest_edge");
  }
  if (j.contains("rescale_factor") && !j["rescale_factor"].is_null()) {
    IRIS_CHECK(j["rescale_factor"].is_number(), "preprocessor_config: rescale_factor must be a number");
    c.rescale_factor = j["rescale_factor"].get<double>();
  }
  auto triple = [&](const char* k, std::array<float, 3>& dst, bool positive) {
    if (!j.contains(k) || j[k].is_null()) return;
    const auto& v = j[k];
    if (v.is_number()) {
      dst.fill(v.get<float>());
    } else {
      IRIS_CHECK(v.is_array() && v.size() == 3, "preprocessor_config: ", k, " must be 3 numbers");
      for (int i = 0; i < 3; ++i) dst[size_t(i)] = v[size_t(i)].get<float>();
    }
    if (positive)
      for (float x : dst) IRIS_CHECK(x > 0, "preprocessor_config: ", k, " must be positive");
  };
  triple("image_mean", c.image_mean, false);
  triple("image_std", c.image_std, true);
  return c;
}

Idefics3ProcessorConfig Idefics3ProcessorConfig::from_file(const std::string& path) {
  Idefics3ProcessorConfig c;
  read_config_file(path, [&](const nlohmann::json& j) { c = from_json(j); });
  return c;
}

nlohmann::json Idefics3ProcessorConfig::to_json() const {
  nlohmann::json size = longest_edge > 0 ? nlohmann::json{{"longest_edge", longest_edge}}
                                         : nlohmann::json{{"height", size_height}, {"width", size_width}};
  return {{"image_processor_type", image_processor_type},
          {"do_convert_rgb", do_convert_rgb},
          {"do_resize", do_resize},
          {"size", size},
          {"resample", resample_to_pil(resample)},
          {"do_image_splitting", do_image_splitting},
          {"max_image_size", {{"longest_edge", tile}}},
          {"do_rescale", do_rescale},
          {"rescale_factor", rescale_factor},
          {"do_normalize", do_normalize},
          {"image_mean", image_mean},
          {"image_std", image_std},
          {"do_pad", do_pad}};
}

Idefics3Geometry idefics3_geometry(int64_t height, int64_t width, const Idefics3ProcessorConfig& cfg) {
  IRIS_CHECK(height > 0 && width > 0, "an image of ", width, "x", height, " pixels");
  Idefics3Geometry g;
  g.resized = !cfg.do_resize               ? std::pair{height, width}
              : cfg.longest_edge > 0       ? longest_edge_size(height, width, cfg.longest_edge)
                                           : std::pair{cfg.size_height, cfg.size_width};
  const auto [h, w] = g.resized;
  if (!cfg.do_image_splitting) {
    g.frames.push_back(cfg.square_unsplit ? std::pair{cfg.tile, cfg.tile} : g.resized);
    return g;
  }
  g.encoder = encoder_size(h, w, cfg.tile);
  const auto [eh, ew] = g.encoder;
  if (eh > cfg.tile || ew > cfg.tile) {
    g.rows = (eh + cfg.tile - 1) / cfg.tile;
    g.cols = (ew + cfg.tile - 1) / cfg.tile;
    const int64_t oh = (eh + g.rows - 1) / g.rows, ow = (ew + g.cols - 1) / g.cols;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = 0; c < g.cols; ++c)
        g.frames.push_back({std::min(oh, eh - r * oh), std::min(ow, ew - c * ow)});
    g.frames.push_back({cfg.tile, cfg.tile});
  } else {
    g.frames.push_back(g.encoder);
  }
  return g;
}

Idefics3Image idefics3_process(const Image& img, const Idefics3ProcessorConfig& cfg) {
  const Idefics3Geometry g = idefics3_geometry(img.height, img.width, cfg);
  Image a = cfg.do_resize ? resize_like_hf(img, g.resized.first, g.resized.second, cfg.resample) : img;
  std::vector<Image> frames;
  if (cfg.do_image_splitting) {
    a = resize_like_hf(a, g.encoder.first, g.encoder.second, cfg.resample);
    if (g.rows > 0) {
      const int64_t oh = (g.encoder.first + g.rows - 1) / g.rows, ow = (g.encoder.second + g.cols - 1) / g.cols;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = 0; c < g.cols; ++c)
          frames.push_back(crop(a, r * oh, std::min(r * oh + oh, g.encoder.first), c * ow,
                                std::min(c * ow + ow, g.encoder.second)));
      // split_image resizes the global image with its own default filter, LANCZOS.
      a = resize_like_hf(a, cfg.tile, cfg.tile, Resample::Lanczos);
    }
    frames.push_back(a);
  } else {
    if (cfg.square_unsplit) a = resize_like_hf(a, cfg.tile, cfg.tile, Resample::Lanczos);
    frames.push_back(a);
  }
  Idefics3Image out;
  out.rows = g.rows;
  out.cols = g.cols;
  for (Image& f : frames) {
    IRIS_CHECK(cfg.do_convert_rgb || f.channels == 3, "an image with ", f.channels,
               " channels needs do_convert_rgb");
    const Image rgb = rgb_like_hf(f);
    const int64_t H = rgb.height, W = rgb.width;
    std::vector<float> x(size_t(3 * H * W));
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx)
        for (int c = 0; c < 3; ++c) {
          float v = float(rgb.pixels[size_t((y * W + xx) * 3 + c)]);
          if (cfg.do_rescale) v = float(double(rgb.pixels[size_t((y * W + xx) * 3 + c)]) * cfg.rescale_factor);
          if (cfg.do_normalize) v = (v - cfg.image_mean[size_t(c)]) / cfg.image_std[size_t(c)];
          x[size_t((c * H + y) * W + xx)] = v;
        }
    out.frames.push_back(std::move(x));
    out.frame_hw.push_back({H, W});
  }
  return out;
}

}  // namespace iris::vision
