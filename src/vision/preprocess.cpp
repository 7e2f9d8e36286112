// Hugging Face preprocessing: the processor config (preprocessor_config.json), the uint8 steps in transformers'
// order (convert RGB, [LLaVA pad to square], resize, center crop) and the float32 rescale + normalise, written with
// the same float32 operations as numpy in transformers (rescale in float64 then cast; subtract and divide in
// float32), so pixel_values match bit for bit.
#include "vision/preprocess.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/error.h"

namespace iris::vision {

namespace {

using json = nlohmann::json;

constexpr int kMaxConfigSide = 1 << 16;  // a processor asking for larger outputs is certainly a broken config

enum class Kind { Clip, Siglip, Llava };

Kind processor_kind(const json& j) {
  std::string type;
  for (const char* key : {"image_processor_type", "feature_extractor_type"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "CLIPImageProcessor" || type == "CLIPImageProcessorFast" || type == "CLIPFeatureExtractor")
    return Kind::Clip;
  if (type == "SiglipImageProcessor" || type == "SiglipImageProcessorFast") return Kind::Siglip;
  if (type == "LlavaImageProcessor" || type == "LlavaImageProcessorFast") return Kind::Llava;
  throw Error(str_cat("preprocessor config: image_processor_type \"", type,
                      "\" is not supported (expected CLIPImageProcessor, SiglipImageProcessor or LlavaImageProcessor)"));
}

bool get_bool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  IRIS_CHECK(it->is_boolean(), "preprocessor config: \"", key, "\" is ", it->dump(), ", expected true or false");
  return it->get<bool>();
}

int get_side(const json& v, const std::string& what) {
  IRIS_CHECK(v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()),
             "preprocessor config: ", what, " is ", v.dump(), ", expected an integer");
  const double d = v.get<double>();
  IRIS_CHECK(d >= 1 && d <= kMaxConfigSide, "preprocessor config: ", what, " is ", v.dump(), ", expected 1..", kMaxConfigSide);
  return int(d);
}

std::array<float, 3> get_triple(const json& j, const char* key, std::array<float, 3> dflt, double* as_double) {
  auto it = j.find(key);
  std::array<double, 3> d{dflt[0], dflt[1], dflt[2]};
  if (it != j.end() && !it->is_null()) {
    if (it->is_number()) {
      d.fill(it->get<double>());
    } else {
      IRIS_CHECK(it->is_array() && it->size() == 3, "preprocessor config: \"", key, "\" is ", it->dump(),
                 ", expected a number or a list of 3 numbers");
      for (int c = 0; c < 3; ++c) {
        IRIS_CHECK((*it)[c].is_number(), "preprocessor config: \"", key, "\"[", c, "] is ", (*it)[c].dump(),
                   ", expected a number");
        d[c] = (*it)[c].get<double>();
      }
    }
  }
  std::array<float, 3> out;
  for (int c = 0; c < 3; ++c) {
    IRIS_CHECK(std::isfinite(d[c]), "preprocessor config: \"", key, "\" has a non-finite value");
    out[c] = float(d[c]);
    if (as_double) as_double[c] = d[c];
  }
  return out;
}

}  // namespace

PreprocessConfig PreprocessConfig::from_json(const json& j) {
  IRIS_CHECK(j.is_object(), "preprocessor config: expected a JSON object, got ", j.type_name());
  const Kind kind = processor_kind(j);
  PreprocessConfig c;
  c.do_convert_rgb = get_bool(j, "do_convert_rgb", kind != Kind::Siglip);
  c.do_resize = get_bool(j, "do_resize", true);
  c.do_center_crop = kind == Kind::Siglip ? false : get_bool(j, "do_center_crop", true);
  c.do_rescale = get_bool(j, "do_rescale", true);
  c.do_normalize = get_bool(j, "do_normalize", true);
  c.pad_to_square = kind == Kind::Llava ? get_bool(j, "do_pad", false) : false;

  // size: CLIP defaults to {"shortest_edge": 224} and reads a bare int as a shortest edge; SigLIP defaults to
  // 224x224 and needs height and width (transformers fails on anything else).
  auto size = j.find("size");
  if (size == j.end() || size->is_null()) {
    if (kind == Kind::Siglip) c.resize_height = c.resize_width = 224;
    else c.shortest_edge = 224;
  } else if (size->is_number()) {
    IRIS_CHECK(kind != Kind::Siglip, "preprocessor config: SiglipImageProcessor needs size {\"height\", \"width\"}, got ",
               size->dump());
    c.shortest_edge = get_side(*size, "size");
  } else if (size->is_object()) {
    if (size->contains("shortest_edge")) {
      IRIS_CHECK(kind != Kind::Siglip, "preprocessor config: SiglipImageProcessor needs size {\"height\", \"width\"}, got ",
                 size->dump());
      IRIS_CHECK(size->size() == 1, "preprocessor config: size ", size->dump(),
                 " is not supported (expected only \"shortest_edge\", or \"height\" and \"width\")");
      c.shortest_edge = get_side((*size)["shortest_edge"], "size.shortest_edge");
    } else if (size->contains("height") && size->contains("width")) {
      c.resize_height = get_side((*size)["height"], "size.height");
      c.resize_width = get_side((*size)["width"], "size.width");
    } else {
      throw Error(str_cat("preprocessor config: size ", size->dump(),
                          " is not supported (expected \"shortest_edge\", or \"height\" and \"width\")"));
    }
  } else {
    throw Error(str_cat("preprocessor config: size is ", size->dump(), ", expected an integer or an object"));
  }
  // KOSMOS-2's legacy flag turns a shortest edge into a square.
  if (get_bool(j, "use_square_size", false) && c.shortest_edge > 0) {
    c.resize_height = c.resize_width = c.shortest_edge;
    c.shortest_edge = 0;
  }

  if (kind != Kind::Siglip) {
    auto crop = j.find("crop_size");
    if (crop == j.end() || crop->is_null()) {
      c.crop_height = c.crop_width = 224;
    } else if (crop->is_number()) {
      c.crop_height = c.crop_width = get_side(*crop, "crop_size");
    } else if (crop->is_object() && crop->contains("height") && crop->contains("width")) {
      c.crop_height = get_side((*crop)["height"], "crop_size.height");
      c.crop_width = get_side((*crop)["width"], "crop_size.width");
    } else {
      throw Error(str_cat("preprocessor config: crop_size is ", crop->dump(),
                          ", expected an integer or {\"height\", \"width\"}"));
    }
  }

  auto resample = j.find("resample");
  if (resample != j.end() && !resample->is_null()) {
    IRIS_CHECK(resample->is_number_integer(), "preprocessor config: resample is ", resample->dump(),
               ", expected a PIL filter id 0..5");
    const int64_t id = resample->get<int64_t>();
    IRIS_CHECK(id >= 0 && id <= 5, "preprocessor config: resample is ", resample->dump(), ", expected a PIL filter id 0..5");
    c.resample = resample_from_pil(int(id));
  }

  auto rescale = j.find("rescale_factor");
  if (rescale != j.end() && !rescale->is_null()) {
    IRIS_CHECK(rescale->is_number(), "preprocessor config: rescale_factor is ", rescale->dump(), ", expected a number");
    c.rescale_factor = rescale->get<double>();
    IRIS_CHECK(std::isfinite(c.rescale_factor), "preprocessor config: rescale_factor is not finite");
  }

  // Defaults: OpenAI CLIP statistics for CLIP/LLaVA, 0.5 (IMAGENET_STANDARD) for SigLIP.
  const std::array<float, 3> dmean = kind == Kind::Siglip ? std::array<float, 3>{0.5f, 0.5f, 0.5f} : c.image_mean;
  const std::array<float, 3> dstd = kind == Kind::Siglip ? std::array<float, 3>{0.5f, 0.5f, 0.5f} : c.image_std;
  double mean64[3];
  c.image_mean = get_triple(j, "image_mean", dmean, mean64);
  c.image_std = get_triple(j, "image_std", dstd, nullptr);
  for (int ch = 0; ch < 3; ++ch) {
    IRIS_CHECK(c.image_std[ch] != 0.0f, "preprocessor config: image_std[", ch, "] is 0");
    // LLaVA's background: tuple(int(x * 255) for x in image_mean), computed in double as Python does. Means
    // outside 0..1 (configs without rescaling) only matter for padding, where PIL would clip the colour too.
    const double v = mean64[ch] * 255.0;
    c.pad_color[size_t(ch)] = uint8_t(v <= 0 ? 0 : v >= 255 ? 255 : int(v));
  }
  return c;
}

void read_config_file(const std::string& path, const std::function<void(const nlohmann::json&)>& parse) {
  std::ifstream f(path, std::ios::binary);
  IRIS_CHECK(f.is_open(), path, ": cannot open preprocessor config");
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(str_cat(path, ": invalid JSON: ", e.what()));
  }
  try {
    parse(j);
  } catch (const Error& e) {
    throw Error(str_cat(path, ": ", e.what()));
  } catch (const json::exception& e) {
    throw Error(str_cat(path, ": ", e.what()));
  }
}

PreprocessConfig PreprocessConfig::from_file(const std::string& path) {
  PreprocessConfig c;
  read_config_file(path, [&](const json& j) { c = from_json(j); });
  return c;
}

std::pair<int, int> PreprocessConfig::resize_size(int in_width, int in_height) const {
  IRIS_CHECK(in_width > 0 && in_height > 0, "preprocess: image size ", in_width, "x", in_height, " is empty");
  if (!do_resize) return {in_width, in_height};
  if (shortest_edge > 0) {
    // transformers' get_resize_output_image_size(default_to_square=False): short side = N, long side =
    // int(N * long / short), truncated (Python true division, then int()).
    const bool landscape_or_square = in_width > in_height;
    const int64_t s = landscape_or_square ? in_height : in_width, l = landscape_or_square ? in_width : in_height;
    const double long_d = double(int64_t(shortest_edge) * l) / double(s);
    IRIS_CHECK(long_d <= double(1 << 20), "preprocess: image ", in_width, "x", in_height, " with shortest_edge ",
               shortest_edge, " gives a long side of ", long_d, " pixels (extreme aspect ratio)");
    const int long_side = int(long_d);
    return landscape_or_square ? std::pair<int, int>{long_side, shortest_edge}
                               : std::pair<int, int>{shortest_edge, long_side};
  }
  IRIS_CHECK(resize_height > 0 && resize_width > 0, "preprocess: do_resize is set but neither shortest_edge nor ",
             "resize_height/resize_width is");
  return {resize_width, resize_height};
}

std::pair<int, int> PreprocessConfig::output_size(int in_width, int in_height) const {
  if (pad_to_square) in_width = in_height = std::max(in_width, in_height);
  auto [w, h] = resize_size(in_width, in_height);
  if (do_center_crop) {
    IRIS_CHECK(crop_height > 0 && crop_width > 0, "preprocess: do_center_crop is set but crop size is ", crop_width,
               "x", crop_height);
    return {crop_width, crop_height};
  }
  return {w, h};
}

std::array<double, 4> PreprocessConfig::map_box(int in_width, int in_height, const std::array<double, 4>& box) const {
  IRIS_CHECK(in_width > 0 && in_height > 0, "preprocess: map_box of a ", in_width, "x", in_height, " image");
  double ox = 0, oy = 0;  // the pad's paste offset
  int w = in_width, h = in_height;
  if (pad_to_square && w != h) {
    const int S = std::max(w, h);
    ox = (S - w) / 2, oy = (S - h) / 2;
    w = h = S;
  }
  double sx = 1, sy = 1;
  if (do_resize) {
    auto [rw, rh] = resize_size(w, h);
    sx = double(rw) / w, sy = double(rh) / h;
    w = rw, h = rh;
  }
  double cx = 0, cy = 0;  // the crop's top-left corner, floor((size - crop) / 2) as center_crop takes it
  if (do_center_crop) {
    cx = std::floor((w - crop_width) / 2.0), cy = std::floor((h - crop_height) / 2.0);
  }
  return {(box[0] + ox) * sx - cx, (box[1] + oy) * sy - cy, (box[2] + ox) * sx - cx, (box[3] + oy) * sy - cy};
}

int PreprocessConfig::out_height() const {
  if (do_center_crop) return output_size(1, 1).second;
  if (do_resize && shortest_edge == 0) return output_size(1, 1).second;
  if (do_resize && pad_to_square) return shortest_edge;
  throw Error("preprocess: the output height depends on the image (no center crop and no fixed resize size); "
              "use output_size()");
}

int PreprocessConfig::out_width() const {
  if (do_center_crop) return output_size(1, 1).first;
  if (do_resize && shortest_edge == 0) return output_size(1, 1).first;
  if (do_resize && pad_to_square) return shortest_edge;
  throw Error("preprocess: the output width depends on the image (no center crop and no fixed resize size); "
              "use output_size()");
}

Image preprocess_u8(const Image& img, const PreprocessConfig& cfg) {
  // Non-RGB input is always converted: transformers' load_image already calls convert("RGB"), and the processors
  // fail on anything but 3 channels, so do_convert_rgb = false cannot give a different valid result.
  // `cur` points at the latest stage, so a large RGB input is read in place rather than copied.
  Image x;
  const Image* cur = &img;
  if (img.channels != 3) {
    x = to_rgb(img);
    cur = &x;
  }
  if (cfg.pad_to_square) {
    x = pad_to_square(*cur, cfg.pad_color);
    cur = &x;
  }
  if (cfg.do_resize) {
    auto [w, h] = cfg.resize_size(cur->width, cur->height);
    x = resize(*cur, w, h, cfg.resample);
    cur = &x;
  }
  if (cfg.do_center_crop) {
    IRIS_CHECK(cfg.crop_height > 0 && cfg.crop_width > 0, "preprocess: do_center_crop is set but crop size is ",
               cfg.crop_width, "x", cfg.crop_height);
    x = center_crop(*cur, cfg.crop_width, cfg.crop_height);
    cur = &x;
  }
  return cur == &x ? std::move(x) : *cur;
}

std::vector<float> normalize_chw(const Image& rgb, const PreprocessConfig& cfg) {
  IRIS_CHECK(rgb.channels == 3 && rgb.width > 0 && rgb.height > 0 &&
                 rgb.pixels.size() == size_t(rgb.width) * size_t(rgb.height) * 3,
             "normalize_chw: expected a non-empty RGB image, got ", rgb.width, "x", rgb.height, "x", rgb.channels);
  const size_t plane = size_t(rgb.width) * size_t(rgb.height);
  std::vector<float> out(3 * plane);
  // One table per channel: a uint8 has 256 values, and each maps to one float through the exact formula.
  for (int c = 0; c < 3; ++c) {
    float lut[256];
    const float mean = cfg.image_mean[size_t(c)], std_ = cfg.image_std[size_t(c)];
    for (int v = 0; v < 256; ++v) {
      float x = cfg.do_rescale ? float(double(v) * cfg.rescale_factor) : float(v);
      if (cfg.do_normalize) x = (x - mean) / std_;
      lut[v] = x;
    }
    float* dst = out.data() + size_t(c) * plane;
    const uint8_t* src = rgb.pixels.data() + c;
    for (size_t i = 0; i < plane; ++i) dst[i] = lut[src[3 * i]];
  }
  return out;
}

std::vector<float> preprocess(const Image& img, const PreprocessConfig& cfg) {
  return normalize_chw(preprocess_u8(img, cfg), cfg);
}

}  // namespace iris::vision
