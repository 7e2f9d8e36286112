// Qwen2VLImageProcessor (transformers 4.47): config parsing, smart_resize with Python's float semantics (round half
// to even; true division of exact integers; floor/ceil of doubles), and the patch flattening. The shared options
// (convert/rescale/normalise flags, resample, rescale_factor, mean, std) are parsed and applied by preprocess.cpp,
// so the float32 values are the same operations as every other Hugging Face processor here.
#include "vision/qwen2_vl_processor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/error.h"
#include "vision/preprocess.h"

namespace iris::vision {

namespace {

using json = nlohmann::json;

constexpr int64_t kMaxPixelBound = int64_t(1) << 50;  // pixel budgets above this are certainly a broken config
constexpr int64_t kMaxSmartResizeSide = int64_t(1) << 26;        // keeps h*w below 2^53, where double division is exact-input

// An integer-valued JSON number (transformers also accepts 12845056.0) in [lo, hi].
int64_t get_integer(const json& v, const std::string& what, int64_t lo, int64_t hi) {
  IRIS_CHECK(v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                       std::floor(v.get<double>()) == v.get<double>()),
             "qwen2_vl preprocessor config: ", what, " is ", v.dump(), ", expected an integer");
  if (v.is_number_float()) {
    const double d = v.get<double>();
    IRIS_CHECK(d >= double(lo) && d <= double(hi), "qwen2_vl preprocessor config: ", what, " is ", v.dump(),
               ", expected ", lo, "..", hi);
    return int64_t(d);
  }
  // Unsigned values beyond int64 are refused before the conversion could wrap.
  IRIS_CHECK(v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(hi) : true, "qwen2_vl preprocessor config: ", what,
             " is ", v.dump(), ", expected ", lo, "..", hi);
  const int64_t x = v.get<int64_t>();
  IRIS_CHECK(x >= lo && x <= hi, "qwen2_vl preprocessor config: ", what, " is ", v.dump(), ", expected ", lo, "..", hi);
  return x;
}

const json* find_key(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// Python's round() of a non-negative double: to nearest, ties to even. x - floor(x) is exact for doubles.
int64_t round_half_even(double x) {
  const double f = std::floor(x), d = x - f;
  if (d > 0.5) return int64_t(f) + 1;
  if (d < 0.5) return int64_t(f);
  return std::fmod(f, 2.0) == 0.0 ? int64_t(f) : int64_t(f) + 1;
}

// PreprocessConfig holding the options the float step reads (rescale and normalise).
PreprocessConfig float_options(const Qwen2VLProcessorConfig& cfg) {
  PreprocessConfig p;
  p.do_rescale = cfg.do_rescale;
  p.do_normalize = cfg.do_normalize;
  p.rescale_factor = cfg.rescale_factor;
  p.image_mean = cfg.image_mean;
  p.image_std = cfg.image_std;
  return p;
}

void check_config(const Qwen2VLProcessorConfig& c) {
  IRIS_CHECK(c.patch_size >= 1 && c.patch_size <= 1024, "qwen2_vl processor: patch_size is ", c.patch_size,
             ", expected 1..1024");
  IRIS_CHECK(c.merge_size >= 1 && c.merge_size <= 64, "qwen2_vl processor: merge_size is ", c.merge_size,
             ", expected 1..64");
  IRIS_CHECK(c.temporal_patch_size >= 1 && c.temporal_patch_size <= 64, "qwen2_vl processor: temporal_patch_size is ",
             c.temporal_patch_size, ", expected 1..64");
  const int64_t f2 = int64_t(c.factor()) * c.factor();
  IRIS_CHECK(c.min_pixels >= 0 && c.min_pixels <= kMaxPixelBound, "qwen2_vl processor: min_pixels is ", c.min_pixels,
             ", expected 0..", kMaxPixelBound);
  // Below factor^2 no image fits: every resize would come out with a side of 0.
  IRIS_CHECK(c.max_pixels >= f2 && c.max_pixels <= kMaxPixelBound, "qwen2_vl processor: max_pixels is ", c.max_pixels,
             ", expected ", f2, " (factor ", c.factor(), " squared)..", kMaxPixelBound);
  IRIS_CHECK(c.min_pixels <= c.max_pixels, "qwen2_vl processor: min_pixels ", c.min_pixels,
             " is larger than max_pixels ", c.max_pixels);
}

}  // namespace

Qwen2VLProcessorConfig Qwen2VLProcessorConfig::from_json(const json& j) {
  IRIS_CHECK(j.is_object(), "qwen2_vl preprocessor config: expected a JSON object, got ", j.type_name());
  if (const json* type = find_key(j, "image_processor_type")) {
    const std::string t = type->is_string() ? type->get<std::string>() : type->dump();
    IRIS_CHECK(t == "Qwen2VLImageProcessor" || t == "Qwen2VLImageProcessorFast" || t == "Qwen2_5_VLImageProcessor" ||
                   t == "Qwen2_5_VLImageProcessorFast",
               "qwen2_vl preprocessor config: image_processor_type \"", t,
               "\" is not supported (expected Qwen2VLImageProcessor or Qwen2_5_VLImageProcessor)");
  }

  // The options shared with CLIPImageProcessor, whose defaults are Qwen2-VL's too (bicubic, 1/255, OpenAI CLIP
  // mean and std, every step on): preprocess.cpp parses and checks them.
  json shared = json::object();
  for (const char* key : {"do_convert_rgb", "do_resize", "do_rescale", "do_normalize", "resample", "rescale_factor",
                          "image_mean", "image_std"})
    if (const json* v = find_key(j, key)) shared[key] = *v;
  const PreprocessConfig p = PreprocessConfig::from_json(shared);

  Qwen2VLProcessorConfig c;
  c.do_convert_rgb = p.do_convert_rgb;
  c.do_resize = p.do_resize;
  c.do_rescale = p.do_rescale;
  c.do_normalize = p.do_normalize;
  c.resample = p.resample;
  c.rescale_factor = p.rescale_factor;
  c.image_mean = p.image_mean;
  c.image_std = p.image_std;

  if (const json* v = find_key(j, "patch_size")) c.patch_size = int(get_integer(*v, "patch_size", 1, 1024));
  if (const json* v = find_key(j, "merge_size")) c.merge_size = int(get_integer(*v, "merge_size", 1, 64));
  if (const json* v = find_key(j, "temporal_patch_size"))
    c.temporal_patch_size = int(get_integer(*v, "temporal_patch_size", 1, 64));

  // Pixel bounds: size first, then the top-level keys over it (both transformers 4.47, which ignores size, and
  // later versions, which let min_pixels / max_pixels override size, agree when both are present).
  if (const json* size = find_key(j, "size")) {
    IRIS_CHECK(size->is_object(), "qwen2_vl preprocessor config: size is ", size->dump(),
               ", expected {\"min_pixels\", \"max_pixels\"} or {\"shortest_edge\", \"longest_edge\"}");
    for (auto& [key, v] : size->items()) {
      if (v.is_null()) continue;
      if (key == "min_pixels" || key == "shortest_edge")
        c.min_pixels = get_integer(v, "size." + key, 0, kMaxPixelBound);
      else if (key == "max_pixels" || key == "longest_edge")
        c.max_pixels = get_integer(v, "size." + key, 0, kMaxPixelBound);
      else
        throw Error(str_cat("qwen2_vl preprocessor config: size has the key \"", key,
                            "\"; expected {\"min_pixels\", \"max_pixels\"} or {\"shortest_edge\", \"longest_edge\"}"));
    }
  }
  if (const json* v = find_key(j, "min_pixels")) c.min_pixels = get_integer(*v, "min_pixels", 0, kMaxPixelBound);
  if (const json* v = find_key(j, "max_pixels")) c.max_pixels = get_integer(*v, "max_pixels", 0, kMaxPixelBound);
  check_config(c);
  return c;
}

Qwen2VLProcessorConfig Qwen2VLProcessorConfig::from_file(const std::string& path) {
  Qwen2VLProcessorConfig c;
  read_config_file(path, [&](const json& j) { c = from_json(j); });
  return c;
}

std::pair<int64_t, int64_t> qwen2_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                                  int64_t max_pixels) {
  IRIS_CHECK(factor >= 1 && max_pixels >= 1 && min_pixels >= 0, "qwen2_vl smart_resize: factor ", factor,
             ", min_pixels ", min_pixels, ", max_pixels ", max_pixels, ": expected factor >= 1, max_pixels >= 1, ",
             "min_pixels >= 0");
  // transformers checks in this order and raises ValueError for both.
  IRIS_CHECK(height >= factor && width >= factor, "qwen2_vl smart_resize: image ", width, "x", height,
             " (width x height) is too small: both sides must be at least the factor ", factor);
  const int64_t lo = std::min(height, width), hi = std::max(height, width);
  IRIS_CHECK(double(hi) / double(lo) <= 200.0, "qwen2_vl smart_resize: image ", width, "x", height,
             " (width x height) has an aspect ratio of ", double(hi) / double(lo), ", expected at most 200");
  // Python divides the exact integer h*w; so does double division as long as h*w < 2^53.
  IRIS_CHECK(hi <= kMaxSmartResizeSide, "qwen2_vl smart_resize: image ", width, "x", height, " (width x height) is too large (",
             "sides up to ", kMaxSmartResizeSide, ")");
  const int64_t area = height * width;
  const double f = double(factor);
  int64_t h = round_half_even(double(height) / f) * factor;
  int64_t w = round_half_even(double(width) / f) * factor;
  if (h * w > max_pixels) {
    const double beta = std::sqrt(double(area) / double(max_pixels));
    h = int64_t(std::floor(double(height) / beta / f)) * factor;
    w = int64_t(std::floor(double(width) / beta / f)) * factor;
    // transformers 4.47 returns the 0 and Pillow's resize then fails; later versions clamp to factor.
    IRIS_CHECK(h > 0 && w > 0, "qwen2_vl smart_resize: image ", width, "x", height,
               " (width x height) with max_pixels ", max_pixels, " resizes to ", w, "x", h,
               "; a side of 0 (the image is too elongated for this pixel budget)");
  } else if (h * w < min_pixels) {
    const double beta = std::sqrt(double(min_pixels) / double(area));
    h = int64_t(std::ceil(double(height) * beta / f)) * factor;
    w = int64_t(std::ceil(double(width) * beta / f)) * factor;
  }
  return {h, w};
}

int64_t Qwen2VLImage::patch_dim() const {
  const int64_t n = n_patches();
  return n > 0 ? int64_t(pixel_values.size()) / n : 0;
}

int64_t Qwen2VLImage::n_tokens() const { return n_patches() / (merge_size * merge_size); }

std::pair<int64_t, int64_t> qwen2_vl_resized_size(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg) {
  IRIS_CHECK(height > 0 && width > 0, "qwen2_vl processor: image size ", width, "x", height, " is empty");
  if (!cfg.do_resize) return {height, width};
  return qwen2_vl_smart_resize(height, width, cfg.factor(), cfg.min_pixels, cfg.max_pixels);
}

std::array<int64_t, 3> qwen2_vl_grid_thw(int64_t height, int64_t width, const Qwen2VLProcessorConfig& cfg) {
  check_config(cfg);
  auto [h, w] = qwen2_vl_resized_size(height, width, cfg);
  // Without the resize, transformers' reshape fails on sides that are not whole merge blocks.
  IRIS_CHECK(h % cfg.factor() == 0 && w % cfg.factor() == 0, "qwen2_vl processor: image ", w, "x", h,
             " (width x height) is not a multiple of patch_size * merge_size = ", cfg.factor(),
             " in both sides (do_resize is off)");
  return {1, h / cfg.patch_size, w / cfg.patch_size};
}

Image qwen2_vl_resize_u8(const Image& img, const Qwen2VLProcessorConfig& cfg) {
  check_config(cfg);
  // Non-RGB input is always converted, as preprocess_u8 does: transformers' load_image already converts, and the
  // model needs 3 channels.
  Image rgb;
  const Image* cur = &img;
  if (img.channels != 3) {
    rgb = to_rgb(img);
    cur = &rgb;
  }
  if (!cfg.do_resize) {
    if (cur == &rgb) return rgb;
    return img;
  }
  auto [h, w] = qwen2_vl_resized_size(cur->height, cur->width, cfg);
  return resize(*cur, int(w), int(h), cfg.resample);  // returns an unfiltered copy when the size is unchanged
}

Qwen2VLImage qwen2_vl_patchify(const float* chw, int channels, int height, int width,
                               const Qwen2VLProcessorConfig& cfg) {
  check_config(cfg);
  const int64_t p = cfg.patch_size, m = cfg.merge_size, tp = cfg.temporal_patch_size, C = channels;
  IRIS_CHECK(C >= 1 && height > 0 && width > 0, "qwen2_vl patchify: image ", width, "x", height, "x", channels,
             " is empty");
  IRIS_CHECK(height % (p * m) == 0 && width % (p * m) == 0, "qwen2_vl patchify: image ", width, "x", height,
             " (width x height) is not a multiple of patch_size * merge_size = ", p * m, " in both sides");
  Qwen2VLImage out;
  out.grid_t = 1;  // one image fills all temporal_patch_size slots of one temporal patch
  out.grid_h = height / p;
  out.grid_w = width / p;
  out.merge_size = m;
  const int64_t row = C * tp * p * p;  // (C, tp, p, p)
  out.pixel_values.resize(size_t(out.n_patches() * row));
  const size_t plane = size_t(height) * size_t(width);
  float* dst = out.pixel_values.data();
  // transformers: (t, tp, C, gh/m, m, p, gw/m, m, p) permuted to (t, gh/m, gw/m, m, m, C, tp, p, p).
  for (int64_t bh = 0; bh < out.grid_h / m; ++bh)
    for (int64_t bw = 0; bw < out.grid_w / m; ++bw)
      for (int64_t mh = 0; mh < m; ++mh)
        for (int64_t mw = 0; mw < m; ++mw) {
          const int64_t y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;  // the patch's top-left pixel
          for (int64_t c = 0; c < C; ++c) {
            const float* src = chw + size_t(c) * plane + size_t(y0) * size_t(width) + size_t(x0);
            for (int64_t t = 0; t < tp; ++t)
              for (int64_t py = 0; py < p; ++py, dst += p)
                std::memcpy(dst, src + size_t(py) * size_t(width), size_t(p) * sizeof(float));
          }
        }
  return out;
}

Qwen2VLImage qwen2_vl_preprocess(const Image& img, const Qwen2VLProcessorConfig& cfg) {
  const Image rgb = qwen2_vl_resize_u8(img, cfg);
  const std::vector<float> chw = normalize_chw(rgb, float_options(cfg));  // (3, h', w')
  return qwen2_vl_patchify(chw.data(), 3, rgb.height, rgb.width, cfg);
}

Qwen2VLProcessorConfig with_pixel_bounds(const Qwen2VLProcessorConfig& cfg, int64_t min_pixels, int64_t max_pixels) {
  const int64_t f2 = int64_t(cfg.factor()) * cfg.factor();
  for (auto [name, v] : {std::pair<const char*, int64_t>{"min_pixels", min_pixels}, {"max_pixels", max_pixels}})
    IRIS_CHECK(v == 0 || (v >= f2 && v <= kMaxPixelBound), "qwen2_vl pixel bounds: ", name, " is ", v, ", expected 0 ",
               "(keep the config's) or ", f2, " (factor ", cfg.factor(), " squared)..", kMaxPixelBound);
  Qwen2VLProcessorConfig c = cfg;
  if (min_pixels != 0) c.min_pixels = min_pixels;
  if (max_pixels != 0) c.max_pixels = max_pixels;
  IRIS_CHECK(c.min_pixels <= c.max_pixels, "qwen2_vl pixel bounds: min_pixels ", c.min_pixels,
             " is larger than max_pixels ", c.max_pixels);
  check_config(c);
  return c;
}

}  // namespace iris::vision
