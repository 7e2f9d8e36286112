// PreprocessConfig from preprocessor_config.json (CLIP, SigLIP, LLaVA forms and class defaults, bad values), the
// shortest-edge size rule, and the float path's options.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "test_util.h"
#include "vision/preprocess.h"

using namespace iris;
using namespace iris::vision;
using json = nlohmann::json;

TEST(VisionConfig, ClipFormsAndDefaults) {
  PreprocessConfig a = PreprocessConfig::from_json(
      json::parse(R"({"image_processor_type": "CLIPImageProcessor", "size": 224, "crop_size": 224, "resample": 2})"));
  EXPECT_EQ(a.shortest_edge, 224);
  EXPECT_EQ(a.crop_height, 224);
  EXPECT_EQ(a.crop_width, 224);
  EXPECT_EQ(a.resample, Resample::Bilinear);
  EXPECT_TRUE(a.do_center_crop);
  EXPECT_EQ(a.out_height(), 224);

  // Absent keys take CLIPImageProcessor's defaults.
  PreprocessConfig d = PreprocessConfig::from_json(json::object());
  EXPECT_EQ(d.shortest_edge, 224);
  EXPECT_EQ(d.crop_width, 224);
  EXPECT_EQ(d.resample, Resample::Bicubic);
  EXPECT_TRUE(d.do_convert_rgb && d.do_resize && d.do_center_crop && d.do_rescale && d.do_normalize);
  EXPECT_FLOAT_EQ(d.image_mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(d.image_std[2], 0.27577711f);
  EXPECT_EQ(d.pad_color, (std::array<uint8_t, 3>{122, 116, 104}));

  PreprocessConfig hw = PreprocessConfig::from_json(json::parse(
      R"({"feature_extractor_type": "CLIPFeatureExtractor", "size": {"height": 30, "width": 40},
          "crop_size": {"height": 20, "width": 10}, "do_center_crop": false, "image_mean": 0.25, "rescale_factor": 0.5})"));
  EXPECT_EQ(hw.resize_height, 30);
  EXPECT_EQ(hw.resize_width, 40);
  EXPECT_EQ(hw.shortest_edge, 0);
  EXPECT_FALSE(hw.do_center_crop);
  EXPECT_EQ(hw.out_height(), 30);
  EXPECT_EQ(hw.out_width(), 40);
  EXPECT_EQ(hw.image_mean, (std::array<float, 3>{0.25f, 0.25f, 0.25f}));
  EXPECT_EQ(hw.pad_color, (std::array<uint8_t, 3>{63, 63, 63}));
  EXPECT_EQ(hw.rescale_factor, 0.5);

  // KOSMOS-2's legacy square flag.
  PreprocessConfig sq = PreprocessConfig::from_json(json::parse(R"({"size": {"shortest_edge": 64}, "use_square_size": true})"));
  EXPECT_EQ(sq.resize_height, 64);
  EXPECT_EQ(sq.shortest_edge, 0);
}

TEST(VisionConfig, SiglipAndLlava) {
  PreprocessConfig s = PreprocessConfig::from_json(json::parse(R"({"image_processor_type": "SiglipImageProcessor"})"));
  EXPECT_EQ(s.resize_height, 224);
  EXPECT_EQ(s.resize_width, 224);
  EXPECT_FALSE(s.do_center_crop);
  EXPECT_FALSE(s.do_convert_rgb);  // the class default is None
  EXPECT_EQ(s.image_mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(s.out_height(), 224);
  EXPECT_THROW(PreprocessConfig::from_json(json::parse(R"({"image_processor_type": "SiglipImageProcessor", "size": 384})")),
               Error);

  PreprocessConfig l = PreprocessConfig::from_json(
      json::parse(R"({"image_processor_type": "LlavaImageProcessor", "do_pad": true, "size": {"shortest_edge": 336},
                      "crop_size": {"height": 336, "width": 336}})"));
  EXPECT_TRUE(l.pad_to_square);
  EXPECT_EQ(l.pad_color, (std::array<uint8_t, 3>{122, 116, 104}));
}

TEST(VisionConfig, BadValuesThrow) {
  const char* bad[] = {
      R"([1, 2])",
      R"({"image_processor_type": "Qwen2VLImageProcessor"})",
      R"({"resample": 7})",
      R"({"resample": "bicubic"})",
      R"({"resample": 4294967299})",
      R"({"size": {"longest_edge": 5}})",
      R"({"size": {"shortest_edge": 0}})",
      R"({"size": -3})",
      R"({"size": 2.5})",
      R"({"size": "big"})",
      R"({"size": {"height": 10}})",
      R"({"crop_size": {"width": 10}})",
      R"({"crop_size": 1000000})",
      R"({"image_std": [0, 1, 1]})",
      R"({"image_mean": [0.5, 0.5]})",
      R"({"image_mean": [0.5, "x", 0.5]})",
      R"({"do_resize": "yes"})",
      R"({"rescale_factor": "1/255"})",
  };
  for (const char* text : bad) EXPECT_THROW(PreprocessConfig::from_json(json::parse(text)), Error) << text;
}

TEST(VisionConfig, FromFile) {
  const std::string dir = test::temp_dir();
  test::write_file(dir + "/ok.json", R"({"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384}})");
  EXPECT_EQ(PreprocessConfig::from_file(dir + "/ok.json").out_width(), 384);
  test::write_file(dir + "/broken.json", R"({"size": )");
  try {
    PreprocessConfig::from_file(dir + "/broken.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
  }
  test::write_file(dir + "/bad.json", R"({"resample": 9})");
  EXPECT_THROW(PreprocessConfig::from_file(dir + "/bad.json"), Error);
  EXPECT_THROW(PreprocessConfig::from_file(dir + "/missing.json"), Error);
}

// transformers' get_resize_output_image_size: the long side is int(N * long / short), truncated.
TEST(VisionConfig, ShortestEdgeTruncates) {
  PreprocessConfig c;
  c.shortest_edge = 2;
  EXPECT_EQ(c.resize_size(7, 3), (std::pair<int, int>{4, 2}));  // 4.67 -> 4, not 5
  EXPECT_EQ(c.resize_size(3, 7), (std::pair<int, int>{2, 4}));
  c.shortest_edge = 336;
  EXPECT_EQ(c.resize_size(451, 300), (std::pair<int, int>{505, 336}));
  EXPECT_EQ(c.resize_size(300, 451), (std::pair<int, int>{336, 505}));
  EXPECT_EQ(c.resize_size(77, 77), (std::pair<int, int>{336, 336}));
  EXPECT_EQ(c.resize_size(1000, 37), (std::pair<int, int>{9081, 336}));
  EXPECT_THROW(c.resize_size(0, 5), Error);
  // Without a crop the output size depends on the image.
  c.do_center_crop = false;
  EXPECT_THROW(c.out_height(), Error);
  EXPECT_EQ(c.output_size(600, 400), (std::pair<int, int>{504, 336}));
  c.pad_to_square = true;
  EXPECT_EQ(c.out_height(), 336);
  EXPECT_EQ(c.output_size(600, 400), (std::pair<int, int>{336, 336}));
}

// map_box against the real pipeline: a white box on black, preprocessed, lands where map_box says (within the
// pixel the resampling blurs), through a shortest-edge resize with a centre crop and through a pad to square.
TEST(VisionPreprocess, MapBoxFollowsTheImage) {
  struct Case {
    PreprocessConfig c;
    int w, h;
    std::array<int, 4> box;
  };
  PreprocessConfig crop;
  crop.shortest_edge = 32, crop.crop_width = crop.crop_height = 32;
  crop.resample = Resample::Bilinear;
  PreprocessConfig pad = crop;
  pad.pad_to_square = true, pad.do_center_crop = false;
  const std::vector<Case> cases = {{crop, 80, 48, {30, 6, 60, 30}},  // 80x48 -> 53x32, crop x from 10
                                   {crop, 48, 96, {4, 40, 40, 70}},  // 48x96 -> 32x64, crop y from 16
                                   {pad, 40, 64, {8, 8, 32, 40}}};   // padded x by 12, then 64 -> 32
  for (const Case& t : cases) {
    SCOPED_TRACE(testing::Message() << t.w << "x" << t.h << " pad " << t.c.pad_to_square);
    Image img = Image::zeros(t.w, t.h, 3);
    for (int y = t.box[1]; y < t.box[3]; ++y)
      for (int x = t.box[0]; x < t.box[2]; ++x) std::fill_n(img.row(y) + 3 * x, 3, uint8_t(255));
    PreprocessConfig c = t.c;
    c.pad_color = {0, 0, 0};
    const Image out = preprocess_u8(img, c);
    int x0 = out.width, y0 = out.height, x1 = 0, y1 = 0;  // the bright pixels' bounds
    for (int y = 0; y < out.height; ++y)
      for (int x = 0; x < out.width; ++x)
        if (out.row(y)[3 * x] > 127) x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x + 1), y1 = std::max(y1, y + 1);
    const auto m = c.map_box(t.w, t.h, {double(t.box[0]), double(t.box[1]), double(t.box[2]), double(t.box[3])});
    EXPECT_NEAR(m[0], x0, 1.0);
    EXPECT_NEAR(m[1], y0, 1.0);
    EXPECT_NEAR(m[2], x1, 1.0);
    EXPECT_NEAR(m[3], y1, 1.0);
  }
  EXPECT_THROW(crop.map_box(0, 4, {0, 0, 1, 1}), Error);
}

TEST(VisionPreprocess, ChannelsAndFloatOptions) {
  PreprocessConfig c;
  c.shortest_edge = 8;
  c.crop_height = c.crop_width = 8;
  Image rgba = Image::zeros(12, 10, 4);
  for (size_t i = 0; i < rgba.pixels.size(); ++i) rgba.pixels[i] = uint8_t(i * 37 % 251);
  // RGBA: alpha dropped before anything else, whatever do_convert_rgb says.
  const std::vector<float> a = preprocess(rgba, c);
  EXPECT_EQ(a, preprocess(to_rgb(rgba), c));
  c.do_convert_rgb = false;
  EXPECT_EQ(preprocess(rgba, c), a);
  ASSERT_EQ(a.size(), size_t(3 * 8 * 8));

  // Gray: all three planes equal.
  Image g = Image::zeros(9, 9, 1);
  for (size_t i = 0; i < g.pixels.size(); ++i) g.pixels[i] = uint8_t(i * 29);
  c.image_mean = {0.5f, 0.5f, 0.5f};
  c.image_std = {0.5f, 0.5f, 0.5f};
  const std::vector<float> gv = preprocess(g, c);
  for (size_t i = 0; i < 64; ++i) {
    EXPECT_EQ(gv[i], gv[64 + i]);
    EXPECT_EQ(gv[i], gv[128 + i]);
    EXPECT_GE(gv[i], -1.0f);
    EXPECT_LE(gv[i], 1.0f);
  }

  // Neither rescale nor normalise: the raw uint8 values as floats, CHW.
  Image px = Image::zeros(2, 1, 3);
  px.pixels = {0, 1, 2, 253, 254, 255};
  PreprocessConfig raw;
  raw.do_rescale = raw.do_normalize = false;
  EXPECT_EQ(normalize_chw(px, raw), (std::vector<float>{0, 253, 1, 254, 2, 255}));
  raw.do_rescale = true;  // x/255 only
  EXPECT_EQ(normalize_chw(px, raw)[1], float(253.0 * (1.0 / 255.0)));
  EXPECT_THROW(normalize_chw(g, raw), Error);  // needs RGB
  // No resize and no crop: the image keeps its size.
  PreprocessConfig none;
  none.do_resize = none.do_center_crop = false;
  EXPECT_EQ(preprocess_u8(rgba, none).width, 12);
}
