// Idefics3 / SmolVLM as a whole model, loaded like any checkpoint folder, against the shared transformers case
// (refcases/idefics3_s) and our plain-torch cases (tests/data/idefics3): from the saved pixel values and
// pixel_attention_mask and the saved (expanded) input ids, logits at every position within 3e-4 and 8 greedy
// tokens exact; the vision output spliced at the image tokens equals connector_output. Our processor on the
// case's photos gives the same frames (tests/vision/test_idefics3_processor.cpp checks the values).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <tuple>

#include "io/file.h"
#include "io/npy.h"
#include "model_test_util.h"
#include "models/vlm.h"
#include "vision/image.h"

using namespace iris;
using test::greedy;
using test::ids_of;
using test::max_diff;

namespace {

std::vector<std::string> idefics3_model_cases() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(std::string(IRIS_SOURCE_DIR) + "/tests/data/idefics3", ec))
    if (e.is_directory() && std::filesystem::exists(e.path() / "config.json")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  dirs.insert(dirs.begin(), test::shared_dir() + "/refcases/idefics3_s");
  return dirs;
}

}  // namespace

class Idefics3Model : public ::testing::TestWithParam<std::string> {};

TEST_P(Idefics3Model, MatchesReference) {
  const std::string dir = GetParam();
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  ASSERT_TRUE(m->has_vision());
  EXPECT_TRUE(m->unused_tensors().empty()) << "unused tensors, first: " << m->unused_tensors().front();
  std::vector<int32_t> ids = ids_of(io::load_npy(dir + "/input_ids.npy"));
  Tensor ref_logits = io::load_npy(dir + "/logits.npy");
  const int64_t S = ref_logits.dim(1), V = ref_logits.dim(2);
  ASSERT_EQ(int64_t(ids.size()), S);
  std::vector<models::ImageFeatures> feats;
  double conn_diff = -1;
  if (std::filesystem::exists(dir + "/pixel_values.npy")) {
    std::vector<models::ImagePixels> px = m->processor().split_pixel_values(
        io::load_npy(dir + "/pixel_values.npy"), io::load_npy(dir + "/pixel_attention_mask.npy"));
    int64_t rows = 0;
    for (const auto& p : px) {
      feats.push_back(m->encode_image(p));
      rows += feats.back().n_tokens();
    }
    Tensor ref_conn = io::load_npy(dir + "/connector_output.npy");
    ASSERT_EQ(rows * m->text().hidden_size(), ref_conn.numel());
    Tensor all = Tensor::empty({rows, m->text().hidden_size()});
    int64_t r = 0;
    for (const auto& f : feats) {
      std::copy_n(f.embeddings.data<float>(), f.embeddings.numel(), all.data<float>() + r);
      r += f.embeddings.numel();
    }
    conn_diff = max_diff(ref_conn, all.data<float>(), all.numel());
    EXPECT_LE(conn_diff, 1e-4) << "image embeddings (connector output)";
    // Our processor on the photos makes as many image tokens as the case's prompt holds.
    int64_t made = 0;
    for (int i = 0;; ++i) {
      const std::string p = i == 0 && std::filesystem::exists(dir + "/photo_cat_451x300.png")
                                ? dir + "/photo_cat_451x300.png"
                                : dir + "/image" + std::to_string(i) + ".png";
      if (!std::filesystem::exists(p)) break;
      made += m->processor().tokens_for(m->processor().process(vision::load_image(p)));
      if (p.find("photo_cat") != std::string::npos) break;
    }
    EXPECT_EQ(made, int64_t(std::count(ids.begin(), ids.end(), m->image_token_id())));
  }
  models::PromptInput in = m->prepare_prompt(ids, feats);
  nn::KVCache cache = m->text().make_cache(S + 16);
  std::vector<float> logits(size_t(S * V));
  m->text().forward(in.embeddings.data<float>(), S, in.positions, cache, logits.data(), true);
  const double logit_diff = max_diff(ref_logits, logits.data(), S * V);
  EXPECT_LE(logit_diff, 3e-4) << "logits";
  Tensor ref_gen = io::load_npy(dir + "/generated_ids.npy");
  std::vector<float> last(logits.end() - V, logits.end());
  EXPECT_EQ(greedy(m->text(), cache, last, int(ref_gen.numel()), in.next_position), ids_of(ref_gen));
  std::cout << "[idefics3] " << std::filesystem::path(dir).filename().string() << ": logits max|diff| " << logit_diff
            << ", connector " << conn_diff << "\n";
}

INSTANTIATE_TEST_SUITE_P(Folders, Idefics3Model, ::testing::ValuesIn(idefics3_model_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return std::filesystem::path(i.param).filename().string();
                         });

// What is not supported yet says so: training, and expanding an image in a text prompt (the engine refuses).
TEST(Idefics3Model, UnsupportedPathsAreClearErrors) {
  auto m = models::Vlm::load(test::shared_dir() + "/refcases/idefics3_s", {models::WeightPrecision::F32});
  std::vector<models::ImagePixels> px = m->processor().split_pixel_values(
      io::load_npy(test::shared_dir() + "/refcases/idefics3_s/pixel_values.npy"), Tensor());
  std::unique_ptr<models::PartActs> acts;
  EXPECT_THROW(m->vision().forward_train(px[0], acts, false), Error);
  EXPECT_THROW(m->processor().split_pixel_values(Tensor::zeros({1, 2, 3, 84, 84}), Tensor()), Error);
  EXPECT_THROW(m->processor().split_pixel_values(Tensor::zeros({3, 84, 84}), Tensor()), Error);
}

namespace {

// The refcases' toy tokenizer: the case's special strings to their ids, "\n" to 300, "w<id>" to <id>, spaces
// dropped, BOS 1 first.
std::vector<int32_t> toy_tokenize(const std::string& text, const nlohmann::json& specials) {
  std::vector<int32_t> ids{1};
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ' ') {
      ++i;
    } else if (text[i] == '\n') {
      ids.push_back(300);
      ++i;
    } else if (text[i] == '<') {
      const size_t e = text.find('>', i);
      const std::string tok = text.substr(i, e + 1 - i);
      EXPECT_TRUE(specials.contains(tok)) << tok;
      ids.push_back(specials.value(tok, -1));
      i = e + 1;
    } else {
      EXPECT_EQ(text[i], 'w');
      size_t e = i + 1;
      while (e < text.size() && std::isdigit(static_cast<unsigned char>(text[e]))) ++e;
      ids.push_back(int32_t(std::stoi(text.substr(i + 1, e - i - 1))));
      i = e;
    }
  }
  return ids;
}

}  // namespace

// The prompt expansion of each image (tiles with <row_r_col_c>, newlines, the global view; unsplit images), from
// our processor on the case's photos, gives exactly the case's input ids once tokenized like the case was.
TEST_P(Idefics3Model, PromptExpansionMatchesTheProcessor) {
  const std::string dir = GetParam();
  nlohmann::json meta = io::read_json_file(dir + "/meta.json");
  if (!meta.contains("notes") || !meta["notes"].contains("processor")) GTEST_SKIP() << "no processor prompt";
  const nlohmann::json& p = meta["notes"]["processor"];
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  std::vector<std::string> photos;
  if (std::filesystem::exists(dir + "/photo_cat_451x300.png")) photos.push_back(dir + "/photo_cat_451x300.png");
  for (int i = 0; std::filesystem::exists(dir + "/image" + std::to_string(i) + ".png"); ++i)
    photos.push_back(dir + "/image" + std::to_string(i) + ".png");
  std::string text = p["prompt_text_before_expansion"], expanded;
  size_t k = 0, pos = 0;
  for (size_t at; (at = text.find("<image>", pos)) != std::string::npos; pos = at + 7) {
    ASSERT_LT(k, photos.size());
    expanded += text.substr(pos, at - pos) + m->processor().expand_image(m->processor().process(
                                                 vision::load_image(photos[k++])));
  }
  expanded += text.substr(pos);
  EXPECT_EQ(k, photos.size());
  EXPECT_EQ(toy_tokenize(expanded, p["specials"]), ids_of(io::load_npy(dir + "/input_ids.npy")));
}

// --max-tiles (ProcessOptions::max_tiles): the largest longest edge whose grid has at most that many tiles, or the
// image whole (one tile) for 1; the expansion and the model follow the grid.
TEST(Idefics3Model, MaxTilesBoundsTheGrid) {
  const std::string dir = test::shared_dir() + "/refcases/idefics3_s";
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  const vision::Image img = vision::load_image(dir + "/photo_cat_451x300.png");
  auto frames = [&](int64_t max_tiles) {
    models::ProcessOptions o;
    o.max_tiles = max_tiles;
    models::ImagePixels px = m->processor().process(img, o);
    EXPECT_EQ(m->encode_image(px).n_tokens(), m->processor().tokens_for(px));
    return std::tuple<int64_t, int64_t, int64_t>{px.values.dim(0), px.grid_h, px.grid_w};
  };
  EXPECT_EQ(frames(0), (std::tuple<int64_t, int64_t, int64_t>{7, 2, 3}));   // the folder's: 252 px, 2x3 tiles
  EXPECT_EQ(frames(6), (std::tuple<int64_t, int64_t, int64_t>{7, 2, 3}));
  EXPECT_EQ(frames(4), (std::tuple<int64_t, int64_t, int64_t>{5, 2, 2}));   // 168 px: 168x112 -> 168x168
  EXPECT_EQ(frames(2), (std::tuple<int64_t, int64_t, int64_t>{1, 0, 0}));   // 84 px: no 2-tile grid fits
  EXPECT_EQ(frames(1), (std::tuple<int64_t, int64_t, int64_t>{1, 0, 0}));   // the whole image as one tile
}
