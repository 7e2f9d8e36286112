// Idefics3 / SmolVLM's image processor against transformers: the shared case (refcases/idefics3_s: a real photo
// into 2x3 tiles + the global image, LANCZOS) and our plain-torch cases (tests/data/idefics3: other tile sizes,
// no splitting, two images, frames padded to the largest of the call). The frames must equal the saved
// pixel_values (bit for bit on these RGB images) inside their own size, the padding must be zeros with a zero
// pixel_attention_mask, and the tile grid must be the case's.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file.h"
#include "io/npy.h"
#include "vision/idefics3_processor.h"
#include "tensor/error.h"
#include "test_util.h"
#include "vision/image.h"

using namespace iris;

namespace {

std::vector<std::string> processor_cases() {
  std::vector<std::string> dirs{test::shared_dir() + "/refcases/idefics3_s"};
  std::error_code ec;
  std::vector<std::string> own;
  for (const auto& e : std::filesystem::directory_iterator(std::string(IRIS_SOURCE_DIR) + "/tests/data/idefics3", ec))
    if (std::filesystem::exists(e.path() / "image0.png")) own.push_back(e.path().string());
  std::sort(own.begin(), own.end());
  dirs.insert(dirs.end(), own.begin(), own.end());
  return dirs;
}

std::vector<std::string> photos(const std::string& dir) {
  if (std::filesystem::exists(dir + "/photo_cat_451x300.png")) return {dir + "/photo_cat_451x300.png"};
  std::vector<std::string> out;
  for (int i = 0; std::filesystem::exists(dir + "/image" + std::to_string(i) + ".png"); ++i)
    out.push_back(dir + "/image" + std::to_string(i) + ".png");
  return out;
}

}  // namespace

class Idefics3Processor : public ::testing::TestWithParam<std::string> {};

TEST_P(Idefics3Processor, MatchesTransformers) {
  const std::string dir = GetParam();
  const auto cfg = vision::Idefics3ProcessorConfig::from_file(dir + "/preprocessor_config.json");
  Tensor pv = io::load_npy(dir + "/pixel_values.npy");                           // (1, n, 3, H, W)
  Tensor mask = io::load_npy(dir + "/pixel_attention_mask.npy").to(DType::I64);  // (1, n, H, W)
  const int64_t n = pv.dim(1), H = pv.dim(3), W = pv.dim(4);
  int64_t f = 0;
  double worst = 0;
  std::vector<int64_t> grids;
  for (const std::string& p : photos(dir)) {
    vision::Idefics3Image im = vision::idefics3_process(vision::load_image(p), cfg);
    grids.push_back(im.rows);
    grids.push_back(im.cols);
    for (size_t k = 0; k < im.frames.size(); ++k, ++f) {
      ASSERT_LT(f, n) << "more frames than transformers made";
      const auto [fh, fw] = im.frame_hw[k];
      ASSERT_LE(fh, H);
      ASSERT_LE(fw, W);
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) {
            const float want = pv.data<float>()[((f * 3 + c) * H + y) * W + x];
            const int64_t m = mask.data<int64_t>()[(f * H + y) * W + x];
            if (y < fh && x < fw) {
              worst = std::max(worst, double(std::fabs(im.frames[k][size_t((c * fh + y) * fw + x)] - want)));
              ASSERT_EQ(m, 1);
            } else {
              ASSERT_EQ(want, 0.0f);
              ASSERT_EQ(m, 0);
            }
          }
    }
  }
  EXPECT_EQ(f, n) << "frames";
  EXPECT_EQ(worst, 0.0) << "pixel values differ from transformers'";
  nlohmann::json meta = io::read_json_file(dir + "/meta.json");
  if (meta.contains("notes") && meta["notes"].contains("processor") && meta["notes"]["processor"].contains("rows_cols")) {
    // [rows, cols] for one image (the shared case) or [[rows, cols], ...] per image (ours).
    std::vector<int64_t> want;
    for (const auto& v : meta["notes"]["processor"]["rows_cols"]) {
      if (v.is_array()) {
        for (const auto& x : v) want.push_back(x.get<int64_t>());
      } else {
        want.push_back(v.get<int64_t>());
      }
    }
    EXPECT_EQ(grids, want);
  }
}

INSTANTIATE_TEST_SUITE_P(Folders, Idefics3Processor, ::testing::ValuesIn(processor_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return std::filesystem::path(i.param).filename().string();
                         });

// The resize rules (int() truncation, odd short side + 1, whole tiles, the 1820 bound) on edge sizes, against the
// reference's geometry (scripts/ref_idefics3.py geometry H W --longest-edge L --tile M).
TEST(Idefics3Geometry, EdgeSizes) {
  vision::Idefics3ProcessorConfig c;
  c.longest_edge = 64;
  c.tile = 32;
  auto g = vision::idefics3_geometry(100, 99, c);  // h > w: w = int(64 * 0.99) = 63 -> 64
  EXPECT_EQ(g.resized, (std::pair<int64_t, int64_t>{64, 64}));
  c.longest_edge = 63;
  g = vision::idefics3_geometry(50, 50, c);  // square, odd L: h = 63 -> 64, w = 63
  EXPECT_EQ(g.resized, (std::pair<int64_t, int64_t>{64, 63}));
  c.longest_edge = 168;
  c.tile = 56;
  g = vision::idefics3_geometry(95, 150, c);  // 150x95 -> 168x106 -> 168x112: 2 rows x 3 cols + global
  EXPECT_EQ(g.resized, (std::pair<int64_t, int64_t>{106, 168}));
  EXPECT_EQ(g.encoder, (std::pair<int64_t, int64_t>{112, 168}));
  EXPECT_EQ(g.rows, 2);
  EXPECT_EQ(g.cols, 3);
  EXPECT_EQ(g.frames.size(), 7u);
  c.longest_edge = 2048;  // SmolVLM-256M's setting: allowed (transformers >= the release that added it)
  c.tile = 512;
  g = vision::idefics3_geometry(1536, 2048, c);
  EXPECT_EQ(g.rows, 3);
  EXPECT_EQ(g.cols, 4);
  c.longest_edge = 5000;
  EXPECT_THROW(vision::idefics3_geometry(100, 100, c), Error);
  nlohmann::json bad = {{"image_processor_type", "CLIPImageProcessor"}};
  EXPECT_THROW(vision::Idefics3ProcessorConfig::from_json(bad), Error);
  bad = {{"max_image_size", {{"longest_edge", -3}}}};
  EXPECT_THROW(vision::Idefics3ProcessorConfig::from_json(bad), Error);
}
