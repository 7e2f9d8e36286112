// Qwen2VLImageProcessor against transformers: the two photos of shared/refcases/qwen2_vl_s (resized uint8 images,
// pixel_values rows, image_grid_thw), smart_resize on hand-computed cases (ties to even, the floor and ceil
// branches, the errors), the row layout on position-coded images, config parsing and per-call pixel bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "tensor/error.h"
#include "test_util.h"
#include "vision/image.h"
#include "vision/preprocess.h"
#include "vision/qwen2_vl_processor.h"

using namespace iris;
using namespace iris::vision;
using json = nlohmann::json;

namespace {

std::string qwen_case_dir() { return test::shared_dir() + "/refcases/qwen2_vl_s"; }

// A .npy file (io::load_npy) as its shape, raw bytes and numpy dtype string.
struct Npy {
  std::string descr;
  std::vector<int64_t> shape;
  std::string data;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

Npy read_npy(const std::string& path) {
  Tensor t = io::load_npy(path);
  Npy npy;
  npy.descr = t.dtype() == DType::U8 ? "|u1" : t.dtype() == DType::F32 ? "<f4" : t.dtype() == DType::I64 ? "<i8" : "?";
  npy.shape.assign(t.shape().begin(), t.shape().end());
  npy.data.assign(static_cast<const char*>(t.raw()), t.nbytes());
  return npy;
}

template <typename T>
std::vector<T> npy_values(const Npy& npy) {
  std::vector<T> v(npy.data.size() / sizeof(T));
  std::memcpy(v.data(), npy.data.data(), v.size() * sizeof(T));
  return v;
}

const char* kPhotos[2] = {"photo_cat_451x300.png", "photo_hopper_512x600_420.jpg"};

Qwen2VLProcessorConfig case_config() {
  return Qwen2VLProcessorConfig::from_file(qwen_case_dir() + "/preprocessor_config.json");
}

json parse(const char* s) { return json::parse(s); }

// True when f throws an iris::Error whose message contains `needle`.
template <class F>
::testing::AssertionResult throws_with(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message \"" << e.what() << "\" lacks \"" << needle << "\"";
  }
  return ::testing::AssertionFailure() << "no iris::Error thrown (expected one mentioning \"" << needle << "\")";
}

}  // namespace

// ---- the shared reference case ----

TEST(Qwen2VLRefcase, ConfigFromCaseFile) {
  const Qwen2VLProcessorConfig c = case_config();
  EXPECT_EQ(c.min_pixels, 3136);
  EXPECT_EQ(c.max_pixels, 12544);
  EXPECT_EQ(c.factor(), 28);
  EXPECT_EQ(c.temporal_patch_size, 2);
  EXPECT_EQ(c.resample, Resample::Bicubic);
}

// The uint8 image right after the smart resize equals transformers' (Pillow bicubic) byte for byte.
TEST(Qwen2VLRefcase, ResizedU8MatchesExactly) {
  const Qwen2VLProcessorConfig cfg = case_config();
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(kPhotos[i]);
    const Image img = load_image(qwen_case_dir() + "/" + kPhotos[i]);
    const Image r = qwen2_vl_resize_u8(img, cfg);
    const Npy ref = read_npy(qwen_case_dir() + "/image" + std::to_string(i) + "_resized_u8.npy");
    ASSERT_EQ(ref.descr, "|u1");
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{r.height, r.width, 3}));
    ASSERT_EQ(r.channels, 3);
    size_t n_diff = 0;
    for (size_t k = 0; k < r.pixels.size(); ++k) n_diff += r.pixels[k] != uint8_t(ref.data[k]);
    EXPECT_EQ(n_diff, 0u) << "bytes differing from transformers' resized image";
  }
}

// pixel_values (both images, 48 rows each) and image_grid_thw from the photos, against transformers.
TEST(Qwen2VLRefcase, PixelValuesAndGridMatch) {
  const Qwen2VLProcessorConfig cfg = case_config();
  const Npy pv = read_npy(qwen_case_dir() + "/pixel_values.npy");
  const Npy grid = read_npy(qwen_case_dir() + "/image_grid_thw.npy");
  ASSERT_EQ(pv.descr, "<f4");
  ASSERT_EQ(pv.shape, (std::vector<int64_t>{96, 1176}));
  ASSERT_EQ(grid.shape, (std::vector<int64_t>{2, 3}));
  const std::vector<float> ref = npy_values<float>(pv);
  const std::vector<int64_t> ref_grid = npy_values<int64_t>(grid);

  std::vector<float> ours;
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(kPhotos[i]);
    const Qwen2VLImage q = qwen2_vl_preprocess(load_image(qwen_case_dir() + "/" + kPhotos[i]), cfg);
    EXPECT_EQ(q.grid_t, ref_grid[size_t(3 * i)]);
    EXPECT_EQ(q.grid_h, ref_grid[size_t(3 * i + 1)]);
    EXPECT_EQ(q.grid_w, ref_grid[size_t(3 * i + 2)]);
    EXPECT_EQ(q.patch_dim(), 1176);
    EXPECT_EQ(q.n_tokens(), 12);  // 12 image tokens per image in the case's input_ids
    const Image img = load_image(qwen_case_dir() + "/" + kPhotos[i]);
    EXPECT_EQ(qwen2_vl_grid_thw(img.height, img.width, cfg), (std::array<int64_t, 3>{q.grid_t, q.grid_h, q.grid_w}));
    ours.insert(ours.end(), q.pixel_values.begin(), q.pixel_values.end());
  }
  ASSERT_EQ(ours.size(), ref.size());
  const double max_diff = test::max_abs_diff(ours, ref);
  size_t n_exact = 0;
  for (size_t k = 0; k < ref.size(); ++k) n_exact += std::memcmp(&ours[k], &ref[k], sizeof(float)) == 0;
  std::cout << "[ qwen2_vl_s ] pixel_values max |diff| = " << max_diff << ", bit-identical " << n_exact << " / "
            << ref.size() << "\n";
  RecordProperty("max_abs_diff", std::to_string(max_diff));
  EXPECT_LE(max_diff, 1e-6);
  EXPECT_EQ(n_exact, ref.size());
}

// The float step and the layout alone: the saved resized images give the saved pixel_values bit for bit.
TEST(Qwen2VLRefcase, PatchifyOfSavedU8IsBitExact) {
  const Qwen2VLProcessorConfig cfg = case_config();
  const std::vector<float> ref = npy_values<float>(read_npy(qwen_case_dir() + "/pixel_values.npy"));
  size_t offset = 0;
  for (int i = 0; i < 2; ++i) {
    const Npy u8 = read_npy(qwen_case_dir() + "/image" + std::to_string(i) + "_resized_u8.npy");
    Image img = Image::zeros(int(u8.shape[1]), int(u8.shape[0]), 3);
    std::memcpy(img.pixels.data(), u8.data.data(), img.pixels.size());
    PreprocessConfig fl;
    const std::vector<float> chw = normalize_chw(img, fl);  // CLIP defaults = Qwen2-VL's rescale and normalise
    const Qwen2VLImage q = qwen2_vl_patchify(chw.data(), 3, img.height, img.width, cfg);
    ASSERT_LE(offset + q.pixel_values.size(), ref.size());
    EXPECT_EQ(std::memcmp(q.pixel_values.data(), ref.data() + offset, q.pixel_values.size() * sizeof(float)), 0)
        << "image " << i;
    offset += q.pixel_values.size();
  }
  EXPECT_EQ(offset, ref.size());
}

// ---- smart_resize ----

TEST(Qwen2VLSmartResize, HandComputedCases) {
  using P = std::pair<int64_t, int64_t>;
  const int64_t dmin = 56 * 56, dmax = 28 * 28 * 1280;
  // Ties go to even as Python's round(): 70/28 = 2.5 -> 2, 126/28 = 4.5 -> 4, 42/28 = 1.5 -> 2, 98/28 = 3.5 -> 4.
  EXPECT_EQ(qwen2_vl_smart_resize(70, 126, 28, dmin, dmax), (P{56, 112}));
  EXPECT_EQ(qwen2_vl_smart_resize(42, 98, 28, dmin, dmax), (P{56, 112}));
  EXPECT_EQ(qwen2_vl_smart_resize(126, 70, 28, dmin, dmax), (P{112, 56}));
  // Plain rounding: 300/28 = 10.71 -> 11, 451/28 = 16.1 -> 16.
  EXPECT_EQ(qwen2_vl_smart_resize(300, 451, 28, dmin, dmax), (P{308, 448}));
  // max_pixels branch: 1000 rounds to 1008, 1008^2 > 1003520; beta = sqrt(1e6/1003520), 1000/beta/28 = 35.78 ->
  // floor 35 (rounding would give 36).
  EXPECT_EQ(qwen2_vl_smart_resize(1000, 1000, 28, dmin, dmax), (P{980, 980}));
  // The case's photos: beta = sqrt(135300/12544): 300/beta/28 = 3.26 -> 3, 451/beta/28 = 4.90 -> 4.
  EXPECT_EQ(qwen2_vl_smart_resize(300, 451, 28, 3136, 12544), (P{84, 112}));
  EXPECT_EQ(qwen2_vl_smart_resize(600, 512, 28, 3136, 12544), (P{112, 84}));
  // min_pixels branch: 30x40 rounds to 28x28 = 784 < 3136; beta = sqrt(3136/1200): 30*beta/28 = 1.73 -> ceil 2,
  // 40*beta/28 = 2.31 -> ceil 3.
  EXPECT_EQ(qwen2_vl_smart_resize(30, 40, 28, dmin, dmax), (P{56, 84}));
  // 28x28: 784 < 3136, beta = 2 exactly: 28*2/28 = 2 -> 56; with min_pixels 784 it stays.
  EXPECT_EQ(qwen2_vl_smart_resize(28, 28, 28, dmin, dmax), (P{56, 56}));
  EXPECT_EQ(qwen2_vl_smart_resize(28, 28, 28, 784, dmax), (P{28, 28}));
  // The ceil branch may overshoot max_pixels (transformers does not check again).
  EXPECT_EQ(qwen2_vl_smart_resize(30, 40, 28, 3136, 3136), (P{56, 84}));
  // Aspect ratio exactly 200 is allowed.
  EXPECT_EQ(qwen2_vl_smart_resize(28, 5600, 28, dmin, dmax), (P{28, 5600}));
  EXPECT_EQ(qwen2_vl_smart_resize(5600, 28, 28, dmin, dmax), (P{5600, 28}));
}

TEST(Qwen2VLSmartResize, Errors) {
  const int64_t dmin = 56 * 56, dmax = 28 * 28 * 1280;
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(28, 5601, 28, dmin, dmax); }, "aspect ratio"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(5601, 28, 28, dmin, dmax); }, "aspect ratio"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(27, 100, 28, dmin, dmax); }, "too small"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(100, 27, 28, dmin, dmax); }, "too small"));
  // Both too small and too elongated: transformers checks the size first.
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(10, 10000, 28, dmin, dmax); }, "too small"));
  // Floor branch giving a side of 0: 28x5600 = 156800 > 78400, beta = sqrt(2): 28/beta/28 = 0.71 -> 0.
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(28, 5600, 28, dmin, 28 * 28 * 100); }, "side of 0"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(100, 100, 0, dmin, dmax); }, "factor 0"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(int64_t(1) << 30, int64_t(1) << 30, 28, dmin, dmax); },
                          "too large"));
}

// Every entry of tests/data/qwen2_vl/smart_resize.json, written by transformers 4.47's smart_resize in Python. Where
// Python returns a side of 0 (the floor branch on a very elongated image; transformers then fails in Pillow's
// resize) ours throws at once.
TEST(Qwen2VLSmartResize, PythonReferenceTable) {
  const json cases = json::parse(test::read_file(test::source_dir() + "/tests/data/qwen2_vl/smart_resize.json"));
  ASSERT_TRUE(cases.is_array());
  int n_ok = 0, n_err = 0;
  for (const json& c : cases) {
    SCOPED_TRACE(c.dump());
    const int64_t h = c.at("height"), w = c.at("width"), f = c.at("factor"), mn = c.at("min_pixels"),
                  mx = c.at("max_pixels");
    if (c.value("error", false)) {
      EXPECT_THROW(qwen2_vl_smart_resize(h, w, f, mn, mx), Error);
      ++n_err;
    } else if (c.at("out_height") == 0 || c.at("out_width") == 0) {
      EXPECT_TRUE(throws_with([&] { qwen2_vl_smart_resize(h, w, f, mn, mx); }, "side of 0"));
      ++n_err;
    } else {
      EXPECT_EQ(qwen2_vl_smart_resize(h, w, f, mn, mx),
                (std::pair<int64_t, int64_t>{c.at("out_height").get<int64_t>(), c.at("out_width").get<int64_t>()}));
      ++n_ok;
    }
  }
  EXPECT_GE(n_ok, 20);
  EXPECT_GE(n_err, 5);
}

// ---- layout ----

// A float image whose values encode (channel, y, x): every element of every row checked against transformers'
// reshape (t, tp, C, gh/m, m, p, gw/m, m, p) -> permute (0,3,6,4,7,2,1,5,8), written as index arithmetic.
TEST(Qwen2VLLayout, RowsFollowTransformersPermute) {
  Qwen2VLProcessorConfig cfg;
  const int C = 3, H = 56, W = 84, p = 14, m = 2, tp = 2;  // grid 4 x 6 patches, 2 x 3 merge blocks
  std::vector<float> chw(size_t(C * H * W));
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) chw[size_t((c * H + y) * W + x)] = float(c * 100000 + y * 1000 + x);
  const Qwen2VLImage q = qwen2_vl_patchify(chw.data(), C, H, W, cfg);
  ASSERT_EQ(q.grid_t, 1);
  ASSERT_EQ(q.grid_h, 4);
  ASSERT_EQ(q.grid_w, 6);
  ASSERT_EQ(q.n_patches(), 24);
  ASSERT_EQ(q.patch_dim(), C * tp * p * p);
  ASSERT_EQ(q.n_tokens(), 6);
  const int gw = W / p, row_len = C * tp * p * p;
  size_t bad = 0;
  for (int r = 0; r < q.n_patches(); ++r) {
    const int block = r / (m * m), inner = r % (m * m);
    const int ph = (block / (gw / m)) * m + inner / m, pw = (block % (gw / m)) * m + inner % m;
    for (int col = 0; col < row_len; ++col) {
      const int c = col / (tp * p * p), py = (col / p) % p, px = col % p;  // (col / (p*p)) % tp: the frame
      const float want = float(c * 100000 + (ph * p + py) * 1000 + (pw * p + px));
      bad += q.pixel_values[size_t(r) * row_len + col] != want;
    }
  }
  EXPECT_EQ(bad, 0u);
  // A few spelled out: row 2 is the first block's bottom-left patch (patch row 1, column 0); row 4 the second
  // block's top-left patch (patch row 0, column 2); the temporal copy starts at column 196.
  auto at = [&](int r, int col) { return q.pixel_values[size_t(r) * row_len + col]; };
  EXPECT_EQ(at(2, 0), float(14 * 1000 + 0));
  EXPECT_EQ(at(4, 0), float(0 * 1000 + 28));
  EXPECT_EQ(at(4, 15), float(1 * 1000 + 29));
  EXPECT_EQ(at(4, 196 + 15), at(4, 15));
  EXPECT_EQ(at(23, row_len - 1), float(2 * 100000 + 55 * 1000 + 83));
  EXPECT_EQ(at(12, 2 * 392), float(2 * 100000 + 28 * 1000 + 0));  // row 12: the second block row, pixel row 28
}

// The whole pipeline on a uint8 image with no resize: each value is the normalised pixel at its place.
TEST(Qwen2VLLayout, PreprocessWithoutResize) {
  Qwen2VLProcessorConfig cfg;
  cfg.do_resize = false;
  Image img = Image::zeros(56, 28 * 3, 3);  // 56 wide, 84 high
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c) img.row(y)[3 * x + c] = uint8_t((y * 7 + x * 3 + c * 50) % 256);
  const Qwen2VLImage q = qwen2_vl_preprocess(img, cfg);
  EXPECT_EQ(q.grid_h, 6);
  EXPECT_EQ(q.grid_w, 4);
  auto norm = [&](int c, int v) {
    const float x = float(double(v) * cfg.rescale_factor);
    return (x - cfg.image_mean[size_t(c)]) / cfg.image_std[size_t(c)];
  };
  const int row_len = 1176;
  // Row 5: block 1 (block row 0, block column 1), inner 1 -> patch (0, 3): pixel (y, x) = (py, 42 + px).
  for (int c = 0; c < 3; ++c)
    for (int t = 0; t < 2; ++t) {
      const int py = 3, px = 9, col = ((c * 2 + t) * 14 + py) * 14 + px;
      EXPECT_EQ(q.pixel_values[size_t(5 * row_len + col)], norm(c, img.row(py)[3 * (42 + px) + c]));
    }
  // Last row: patch (5, 3), pixel (83, 55).
  EXPECT_EQ(q.pixel_values.back(), norm(2, img.row(83)[3 * 55 + 2]));

  // A side that is not whole merge blocks cannot be flattened without the resize (transformers' reshape fails).
  const Image odd = Image::zeros(56, 70, 3);
  EXPECT_TRUE(throws_with([&] { qwen2_vl_preprocess(odd, cfg); }, "multiple of patch_size * merge_size"));
  EXPECT_TRUE(throws_with([&] { qwen2_vl_grid_thw(70, 56, cfg); }, "multiple of patch_size * merge_size"));
}

// Gray and RGBA input go through convert("RGB") first.
TEST(Qwen2VLLayout, NonRgbInputIsConverted) {
  Qwen2VLProcessorConfig cfg;
  Image gray = Image::zeros(40, 30, 1);
  for (size_t k = 0; k < gray.pixels.size(); ++k) gray.pixels[k] = uint8_t(k * 37 % 251);
  const Qwen2VLImage a = qwen2_vl_preprocess(gray, cfg);
  const Qwen2VLImage b = qwen2_vl_preprocess(to_rgb(gray), cfg);
  EXPECT_EQ(a.pixel_values, b.pixel_values);
  EXPECT_EQ(a.grid_h, 4);  // 30x40 -> 56x84 by the min_pixels branch
  EXPECT_EQ(a.grid_w, 6);
}

// ---- config ----

TEST(Qwen2VLConfig, DefaultsAndForms) {
  const Qwen2VLProcessorConfig d = Qwen2VLProcessorConfig::from_json(json::object());
  EXPECT_TRUE(d.do_convert_rgb && d.do_resize && d.do_rescale && d.do_normalize);
  EXPECT_EQ(d.resample, Resample::Bicubic);
  EXPECT_EQ(d.min_pixels, 3136);
  EXPECT_EQ(d.max_pixels, 1003520);
  EXPECT_EQ(d.patch_size, 14);
  EXPECT_EQ(d.merge_size, 2);
  EXPECT_EQ(d.temporal_patch_size, 2);
  EXPECT_EQ(d.rescale_factor, 1.0 / 255.0);
  EXPECT_EQ(d.image_mean[1], 0.4578275f);
  EXPECT_EQ(d.image_std[2], 0.27577711f);

  // size forms: transformers 4.47's {"min_pixels", "max_pixels"} and newer {"shortest_edge", "longest_edge"}.
  const auto s1 = Qwen2VLProcessorConfig::from_json(parse(R"({"size": {"min_pixels": 6272, "max_pixels": 200704}})"));
  EXPECT_EQ(s1.min_pixels, 6272);
  EXPECT_EQ(s1.max_pixels, 200704);
  const auto s2 = Qwen2VLProcessorConfig::from_json(
      parse(R"({"image_processor_type": "Qwen2_5_VLImageProcessor",
                "size": {"shortest_edge": 3136, "longest_edge": 12845056}})"));
  EXPECT_EQ(s2.min_pixels, 3136);
  EXPECT_EQ(s2.max_pixels, 12845056);
  // Top-level keys win over size; integral floats are accepted as transformers would.
  const auto s3 = Qwen2VLProcessorConfig::from_json(
      parse(R"({"min_pixels": 784, "max_pixels": 50176.0,
                "size": {"shortest_edge": 3136, "longest_edge": 12845056}})"));
  EXPECT_EQ(s3.min_pixels, 784);
  EXPECT_EQ(s3.max_pixels, 50176);

  const auto o = Qwen2VLProcessorConfig::from_json(parse(
      R"({"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 16, "merge_size": 2, "temporal_patch_size": 1,
          "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": 0.5, "do_normalize": false,
          "min_pixels": null})"));
  EXPECT_EQ(o.factor(), 32);
  EXPECT_EQ(o.temporal_patch_size, 1);
  EXPECT_EQ(o.resample, Resample::Bilinear);
  EXPECT_EQ(o.image_std[0], 0.5f);
  EXPECT_FALSE(o.do_normalize);
  EXPECT_EQ(o.min_pixels, 3136);  // null = absent
}

TEST(Qwen2VLConfig, BadValuesAreRefused) {
  auto bad = [](const char* text, const std::string& needle) {
    return throws_with([&] { Qwen2VLProcessorConfig::from_json(parse(text)); }, needle);
  };
  EXPECT_TRUE(bad(R"({"min_pixels": -1})", "min_pixels is -1"));
  EXPECT_TRUE(bad(R"({"max_pixels": "lots"})", "expected an integer"));
  EXPECT_TRUE(bad(R"({"min_pixels": 3136.5})", "expected an integer"));
  EXPECT_TRUE(bad(R"({"min_pixels": 20000, "max_pixels": 10000})", "larger than max_pixels"));
  EXPECT_TRUE(bad(R"({"size": {"shortest_edge": 20000, "longest_edge": 10000}})", "larger than max_pixels"));
  EXPECT_TRUE(bad(R"({"max_pixels": 700})", "max_pixels is 700"));
  EXPECT_TRUE(bad(R"({"size": {"height": 224, "width": 224}})", "\"height\""));
  EXPECT_TRUE(bad(R"({"size": 224})", "size is 224"));
  EXPECT_TRUE(bad(R"({"patch_size": 0})", "patch_size"));
  EXPECT_TRUE(bad(R"({"merge_size": "2"})", "merge_size"));
  EXPECT_TRUE(bad(R"({"temporal_patch_size": -2})", "temporal_patch_size"));
  EXPECT_TRUE(bad(R"({"resample": 9})", "resample"));
  EXPECT_TRUE(bad(R"({"image_std": [0.5, 0, 0.5]})", "image_std"));
  EXPECT_TRUE(bad(R"({"image_mean": [0.5, 0.5]})", "image_mean"));
  EXPECT_TRUE(bad(R"({"do_resize": "yes"})", "do_resize"));
  EXPECT_TRUE(bad(R"({"image_processor_type": "CLIPImageProcessor"})", "CLIPImageProcessor"));
  EXPECT_TRUE(bad(R"([1, 2])", "expected a JSON object"));
  EXPECT_TRUE(throws_with([] { Qwen2VLProcessorConfig::from_file("/nonexistent/preprocessor_config.json"); },
                          "cannot open"));
  const std::string dir = test::fresh_dir("qwen2_vl_cfg");
  test::write_file(dir + "/preprocessor_config.json", R"({"max_pixels": -5})");
  EXPECT_TRUE(throws_with([&] { Qwen2VLProcessorConfig::from_file(dir + "/preprocessor_config.json"); },
                          dir + "/preprocessor_config.json: "));
}

TEST(Qwen2VLConfig, WithPixelBounds) {
  const Qwen2VLProcessorConfig base = case_config();  // 3136..12544
  const auto a = with_pixel_bounds(base, 784, 200704);
  EXPECT_EQ(a.min_pixels, 784);
  EXPECT_EQ(a.max_pixels, 200704);
  EXPECT_EQ(base.max_pixels, 12544);  // a copy
  const auto keep_min = with_pixel_bounds(base, 0, 50176);
  EXPECT_EQ(keep_min.min_pixels, 3136);
  EXPECT_EQ(keep_min.max_pixels, 50176);
  const auto keep_max = with_pixel_bounds(base, 6272, 0);
  EXPECT_EQ(keep_max.min_pixels, 6272);
  EXPECT_EQ(keep_max.max_pixels, 12544);
  const auto same = with_pixel_bounds(base, 0, 0);
  EXPECT_EQ(same.min_pixels, base.min_pixels);
  EXPECT_EQ(same.max_pixels, base.max_pixels);
  // The bounds change the outcome: the cat photo at up to 50176 pixels: beta = sqrt(135300/50176), 300/beta/28 =
  // 6.52 -> 6, 451/beta/28 = 9.81 -> 9: 168x252 (grid 12 x 18, 54 tokens).
  EXPECT_EQ(qwen2_vl_grid_thw(300, 451, keep_min), (std::array<int64_t, 3>{1, 12, 18}));

  EXPECT_TRUE(throws_with([&] { with_pixel_bounds(base, -1, 0); }, "min_pixels is -1"));
  EXPECT_TRUE(throws_with([&] { with_pixel_bounds(base, 0, 500); }, "max_pixels is 500"));
  EXPECT_TRUE(throws_with([&] { with_pixel_bounds(base, 100, 0); }, "784"));
  EXPECT_TRUE(throws_with([&] { with_pixel_bounds(base, 50176, 12544); }, "larger than max_pixels"));
  EXPECT_TRUE(throws_with([&] { with_pixel_bounds(base, 50176, 0); }, "larger than max_pixels"));  // vs the config's
}
