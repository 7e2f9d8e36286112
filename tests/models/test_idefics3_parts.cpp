// Idefics3 / SmolVLM's vision parts against their references, from the saved pixel values: the SigLIP-style tower
// (bucketed positions, padded frames whose padding is never attended to, post_layernorm) and the pixel-shuffle
// connector, on the shared transformers case (refcases/idefics3_s) and our own plain-torch cases
// (tests/data/idefics3, scripts/gen_idefics3_cases.py): tiles of other sizes and patch sizes, scale 2 and 3,
// padded frames, a vision width of 36. Tolerances are the refcases': 1e-4 on vision outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "io/file.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "model_test_util.h"
#include "models/pixel_shuffle.h"
#include "models/siglip.h"

using namespace iris;
using test::max_diff;

namespace {

std::string idefics3_root() { return std::string(IRIS_SOURCE_DIR) + "/tests/data/idefics3"; }

std::vector<std::string> vision_cases() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(idefics3_root(), ec))
    if (e.is_directory() && std::filesystem::exists(e.path() / "pixel_values.npy")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  dirs.insert(dirs.begin(), test::shared_dir() + "/refcases/idefics3_s");
  return dirs;
}

}  // namespace

class Idefics3Parts : public ::testing::TestWithParam<std::string> {};

TEST_P(Idefics3Parts, VisionAndConnectorMatchReference) {
  const std::string dir = GetParam();
  nlohmann::json cfg = io::read_json_file(dir + "/config.json");
  const models::SiglipVisionConfig vc = models::SiglipVisionConfig::from_json(cfg["vision_config"]);
  const int64_t scale = cfg.value("scale_factor", 2);
  const int64_t text_dim = cfg["text_config"]["hidden_size"].get<int64_t>();
  io::Checkpoint ckpt = io::Checkpoint::open(dir);
  models::WeightLoader w(ckpt, cpu::MatmulPrecision::F32);
  models::SiglipVision tower;
  tower.load(w, "model.vision_model.", vc);
  models::PixelShuffleProjector conn;
  conn.load(w, "model.connector.", vc.hidden_size, scale, text_dim);

  Tensor pv = io::load_npy(dir + "/pixel_values.npy");                               // (1, n, C, H, W)
  Tensor mask = io::load_npy(dir + "/pixel_attention_mask.npy").to(DType::I64);      // (1, n, H, W)
  Tensor ref_hidden = io::load_npy(dir + "/vision_last_hidden_state.npy");           // (n_real, seq, E)
  Tensor ref_conn = io::load_npy(dir + "/connector_output.npy");                     // (n_real, seq/s^2, text)
  ASSERT_EQ(pv.ndim(), 5);
  const int64_t n = pv.dim(1), C = pv.dim(2), H = pv.dim(3), W = pv.dim(4);
  // Frames that are all exactly 0 are batch padding (HF drops them).
  std::vector<Tensor> outs;
  int64_t kept = 0;
  for (int64_t f = 0; f < n; ++f) {
    const float* px = pv.data<float>() + f * C * H * W;
    if (std::all_of(px, px + C * H * W, [](float v) { return v == 0.0f; })) continue;
    std::vector<uint8_t> m(size_t(H * W));
    for (int64_t i = 0; i < H * W; ++i) m[size_t(i)] = mask.data<int64_t>()[f * H * W + i] != 0;
    outs.push_back(tower.forward(px, C, H, W, m.data()));
    ++kept;
  }
  ASSERT_EQ(kept, ref_hidden.dim(0));
  const int64_t seq = outs[0].dim(0), E = outs[0].dim(1);
  Tensor all = Tensor::empty({kept * seq, E});
  for (int64_t f = 0; f < kept; ++f) std::copy_n(outs[size_t(f)].data<float>(), seq * E, all.data<float>() + f * seq * E);
  ASSERT_EQ(all.numel(), ref_hidden.numel());
  const double dv = max_diff(ref_hidden, all.data<float>(), all.numel());
  EXPECT_LE(dv, 1e-4) << "vision_last_hidden_state";
  Tensor c = conn.forward(all, kept);
  ASSERT_EQ(c.numel(), ref_conn.numel());
  const double dc = max_diff(ref_conn, c.data<float>(), c.numel());
  EXPECT_LE(dc, 1e-4) << "connector_output";
  std::cout << "[idefics3] " << std::filesystem::path(dir).filename().string() << ": " << kept << " frames, vision "
            << dv << ", connector " << dc << "\n";
}

INSTANTIATE_TEST_SUITE_P(Folders, Idefics3Parts, ::testing::ValuesIn(vision_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return std::filesystem::path(i.param).filename().string();
                         });

// Idefics3's bucketed position ids equal torch's (tests/data/idefics3/position_buckets.json, made with the
// reference's emulation of torch's float32 arange and checked against torch), including the table sizes where
// torch's rounding maps a full frame to something other than the identity.
TEST(Idefics3Positions, BucketsMatchTorch) {
  nlohmann::json j = io::read_json_file(idefics3_root() + "/position_buckets.json");
  int64_t pairs = 0, non_identity = 0;
  for (auto& [nps_s, per] : j["buckets"].items())
    for (auto& [nb_s, want] : per.items()) {
      const int64_t nps = std::stoll(nps_s), nb = std::stoll(nb_s);
      const std::vector<int64_t> got = models::idefics3_position_buckets(nb, nps);
      EXPECT_EQ(got, want.get<std::vector<int64_t>>()) << "nps " << nps << " nb " << nb;
      ++pairs;
      if (nb == nps) {
        std::vector<int64_t> id(static_cast<size_t>(nps), 0);
        for (int64_t i = 0; i < nps; ++i) id[size_t(i)] = i;
        non_identity += got != id;
      }
    }
  EXPECT_GT(pairs, 200);
  EXPECT_GE(non_identity, 2);  // 19 and 25 are in the file: the rounding is really exercised
}

// Frames whose real pixels are not a top-left rectangle, and shuffles that do not divide, are clear errors.
TEST(Idefics3Parts, BadFramesAreErrors) {
  const std::string dir = test::shared_dir() + "/refcases/idefics3_s";
  nlohmann::json cfg = io::read_json_file(dir + "/config.json");
  const models::SiglipVisionConfig vc = models::SiglipVisionConfig::from_json(cfg["vision_config"]);
  io::Checkpoint ckpt = io::Checkpoint::open(dir);
  models::WeightLoader w(ckpt, cpu::MatmulPrecision::F32);
  models::SiglipVision tower;
  tower.load(w, "model.vision_model.", vc);
  const int64_t S = vc.image_size;
  std::vector<float> px(size_t(3 * S * S), 0.1f);
  std::vector<uint8_t> m(size_t(S * S), 0);
  EXPECT_THROW(tower.forward(px.data(), 3, S, S, m.data()), Error);  // no real pixel
  m[size_t(S * S - 1)] = 1;                                           // only the bottom-right corner
  EXPECT_THROW(tower.forward(px.data(), 3, S, S, m.data()), Error);
  EXPECT_THROW(tower.forward(px.data(), 3, S - 1, S, nullptr), Error);  // not whole patches
  EXPECT_THROW(models::pixel_shuffle(Tensor::zeros({36, 4}), 1, 4), Error);   // 6x6 grid, scale 4
  EXPECT_THROW(models::pixel_shuffle(Tensor::zeros({12, 4}), 1, 2), Error);   // not a square grid
}
