// Qwen2-VL and Qwen2.5-VL against their references: the shared transformers case (refcases/qwen2_vl_s: two real
// photos through the real processor) and our own plain-torch cases (tests/data/qwen2_vl/<case>/, written by
// scripts/gen_qwen2_vl_cases.py with scripts/ref_qwen2_vl.py): other head counts and widths, mrope_sections, GQA,
// tied embeddings, three images from 28x28 to 28x140, large non-square images of hundreds of patches, a
// text-only prompt, and Qwen2.5-VL with window attention, RMSNorm / gated vision blocks and windows cut by the
// image's edge. Every case folder is one test; all shapes are
// read from the files. Tolerances are the refcases': vision outputs 1e-4, logits 3e-4, greedy tokens and
// positions exact, processor outputs within 1e-5 and grids exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>

#include "io/file.h"
#include "io/npy.h"
#include "model_test_util.h"
#include "models/qwen2_vit.h"
#include "models/vlm.h"
#include "vision/image.h"

using namespace iris;
using test::greedy;
using test::ids_of;
using test::max_diff;

namespace {

std::string cases_root() { return std::string(IRIS_SOURCE_DIR) + "/tests/data/qwen2_vl"; }

// The shared case and every case folder of ours (one with a config.json), sorted.
std::vector<std::string> qwen_cases() {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cases_root(), ec))
    if (e.is_directory() && std::filesystem::exists(e.path() / "config.json")) dirs.push_back(e.path().string());
  std::sort(dirs.begin(), dirs.end());
  dirs.insert(dirs.begin(), test::shared_dir() + "/refcases/qwen2_vl_s");
  return dirs;
}

bool has(const std::string& p) { return std::filesystem::exists(p); }

// The input photos of a case, in image order.
std::vector<std::string> case_images(const std::string& dir) {
  if (has(dir + "/photo_cat_451x300.png"))
    return {dir + "/photo_cat_451x300.png", dir + "/photo_hopper_512x600_420.jpg"};
  std::vector<std::string> out;
  for (int i = 0; has(dir + "/image" + std::to_string(i) + ".png"); ++i)
    out.push_back(dir + "/image" + std::to_string(i) + ".png");
  return out;
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  int64_t rows = 0;
  for (const Tensor& t : parts) rows += t.dim(0);
  Tensor out = Tensor::empty({rows, parts.at(0).dim(1)});
  int64_t r = 0;
  for (const Tensor& t : parts) {
    std::copy_n(t.contiguous().data<float>(), t.numel(), out.data<float>() + r * t.dim(1));
    r += t.dim(0);
  }
  return out;
}

std::string case_name(const std::string& dir) { return std::filesystem::path(dir).filename().string(); }

}  // namespace

class QwenCase : public ::testing::TestWithParam<std::string> {};

TEST(QwenCases, FolderHasCases) { EXPECT_GE(qwen_cases().size(), 5u) << "no case folders under " << cases_root(); }

TEST_P(QwenCase, MatchesReference) {
  const std::string dir = GetParam();
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  ASSERT_TRUE(m->has_vision());
  EXPECT_TRUE(m->unused_tensors().empty()) << "unused tensors, first: " << m->unused_tensors().front();
  std::vector<int32_t> ids = ids_of(io::load_npy(dir + "/input_ids.npy"));
  Tensor ref_logits = io::load_npy(dir + "/logits.npy");  // (1, S, V)
  const int64_t S = ref_logits.dim(1), V = ref_logits.dim(2);
  ASSERT_EQ(int64_t(ids.size()), S);

  // Images: the model from the saved pixel_values, the processor from the photos.
  std::vector<models::ImageFeatures> feats;
  double vis_diff = -1;
  if (has(dir + "/image_grid_thw.npy")) {
    // The large cases do not store their pixel_values (megabytes): our processor, bit-exact with the reference's
    // on every case that stores them, makes them from the photo.
    Tensor grid = io::load_npy(dir + "/image_grid_thw.npy");
    Tensor pv;
    if (has(dir + "/pixel_values.npy")) {
      pv = io::load_npy(dir + "/pixel_values.npy");
    } else {
      std::vector<models::ImagePixels> made;
      for (const std::string& f : case_images(dir)) made.push_back(m->processor().process(vision::load_image(f)));
      pv = m->processor().batch_pixel_values(made);
    }
    std::vector<models::ImagePixels> px = m->processor().split_pixel_values(pv, grid);
    std::vector<Tensor> hidden, out;
    for (const auto& p : px) {
      test::Capture cap;
      models::ImageFeatures f = m->encode_image(p, cap.tap());
      const auto& h = cap.m[{"vision_hidden", -1}];
      hidden.push_back(Tensor::from_vector(h, {p.values.dim(0), int64_t(h.size()) / p.values.dim(0)}));
      out.push_back(f.embeddings);
      feats.push_back(std::move(f));
    }
    Tensor ref_pre = io::load_npy(dir + "/vision_pre_merger.npy"), ref_out = io::load_npy(dir + "/vision_output.npy");
    Tensor h = concat_rows(hidden), o = concat_rows(out);
    ASSERT_EQ(h.shape(), ref_pre.shape());
    ASSERT_EQ(o.shape(), ref_out.shape());
    EXPECT_LE(max_diff(ref_pre, h.data<float>(), h.numel()), 1e-4) << "vision tower output (before the merger)";
    vis_diff = max_diff(ref_out, o.data<float>(), o.numel());
    EXPECT_LE(vis_diff, 1e-4) << "merger output";

    // Our processor on the photos gives the same pixel values and grids.
    std::vector<models::ImagePixels> mine;
    for (const std::string& f : case_images(dir)) mine.push_back(m->processor().process(vision::load_image(f)));
    ASSERT_EQ(mine.size(), px.size());
    Tensor pv_mine = m->processor().batch_pixel_values(mine);
    ASSERT_EQ(pv_mine.shape(), pv.shape());
    EXPECT_LE(max_diff(pv, pv_mine.data<float>(), pv.numel()), 1e-5) << "processor pixel_values";
    for (size_t i = 0; i < px.size(); ++i) {
      EXPECT_EQ(mine[i].grid_t, px[i].grid_t);
      EXPECT_EQ(mine[i].grid_h, px[i].grid_h);
      EXPECT_EQ(mine[i].grid_w, px[i].grid_w);
      EXPECT_EQ(m->processor().tokens_for(mine[i]), feats[i].n_tokens());
    }
  }

  // Positions exactly as get_rope_index gives them, then the decoder.
  models::PromptInput in = m->prepare_prompt(ids, feats);
  Tensor ref_pos = io::load_npy(dir + "/mrope_position_ids.npy").to(DType::I64);  // (3, 1, S)
  ASSERT_EQ(ref_pos.numel(), 3 * S);
  EXPECT_TRUE(std::equal(in.positions.ids.begin(), in.positions.ids.end(), ref_pos.data<int64_t>()))
      << "M-RoPE positions";
  nn::KVCache cache = m->text().make_cache(S + 16);
  std::vector<float> logits(size_t(S * V));
  m->text().forward(in.embeddings.data<float>(), S, in.positions, cache, logits.data(), true);
  const double logit_diff = max_diff(ref_logits, logits.data(), S * V);
  EXPECT_LE(logit_diff, 3e-4) << "logits";
  Tensor ref_gen = io::load_npy(dir + "/generated_ids.npy");
  std::vector<float> last(logits.end() - V, logits.end());
  EXPECT_EQ(greedy(m->text(), cache, last, int(ref_gen.numel()), in.next_position), ids_of(ref_gen))
      << "greedy tokens (decoding from rotary position " << in.next_position << ")";
  std::cout << "[qwen2-vl] " << case_name(dir) << ": logits max|diff| " << logit_diff << ", vision output "
            << vis_diff << "\n";
}

// Qwen2.5-VL's window order and window boundaries against the reference's get_window_index.
TEST_P(QwenCase, WindowIndex) {
  const std::string dir = GetParam();
  if (!has(dir + "/vision_window_index.npy")) GTEST_SKIP() << "not a Qwen2.5-VL case";
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  const auto& vit = dynamic_cast<const models::Qwen2Vit&>(m->vision());
  Tensor grid = io::load_npy(dir + "/image_grid_thw.npy").to(DType::I64);
  Tensor ref_idx = io::load_npy(dir + "/vision_window_index.npy").to(DType::I64);
  Tensor ref_cu = io::load_npy(dir + "/vision_cu_window_seqlens.npy").to(DType::I64);
  std::vector<int64_t> idx, cu{0};
  int64_t unit_offset = 0, row_offset = 0;
  for (int64_t i = 0; i < grid.dim(0); ++i) {
    const int64_t* g = grid.data<int64_t>() + 3 * i;
    models::Qwen2VitLayout l = vit.layout(g[0], g[1], g[2]);
    for (size_t r = 0; r < l.order.size(); r += 4) idx.push_back(unit_offset + l.order[r] / 4);
    for (size_t k = 1; k < l.window.size(); ++k) cu.push_back(row_offset + l.window[k]);
    unit_offset += int64_t(l.order.size()) / 4;
    row_offset += int64_t(l.order.size());
  }
  EXPECT_EQ(idx, std::vector<int64_t>(ref_idx.data<int64_t>(), ref_idx.data<int64_t>() + ref_idx.numel()));
  EXPECT_EQ(cu, std::vector<int64_t>(ref_cu.data<int64_t>(), ref_cu.data<int64_t>() + ref_cu.numel()));
}

INSTANTIATE_TEST_SUITE_P(Folders, QwenCase, ::testing::ValuesIn(qwen_cases()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return case_name(i.param); });

// Pixel values that disagree with their grid, prompts whose image tokens do not match the images, and images the
// processor cannot take are clear errors.
TEST(Qwen2VL, BadInputsAreClearErrors) {
  auto m = models::Vlm::load(test::shared_dir() + "/refcases/qwen2_vl_s", {models::WeightPrecision::F32});
  Tensor pv = io::load_npy(test::shared_dir() + "/refcases/qwen2_vl_s/pixel_values.npy");
  Tensor grid = io::load_npy(test::shared_dir() + "/refcases/qwen2_vl_s/image_grid_thw.npy");
  // A grid that disagrees with pixel_values.
  Tensor bad = grid.clone();
  bad.data<int64_t>()[1] = 8;
  EXPECT_THROW(m->processor().split_pixel_values(pv, bad), Error);
  EXPECT_THROW(m->processor().split_pixel_values(pv, Tensor()), Error);
  EXPECT_THROW(m->processor().split_pixel_values(pv.slice(0, 0, 95).contiguous(), grid), Error);
  // Too few image tokens for the images.
  std::vector<models::ImagePixels> px = m->processor().split_pixel_values(pv, grid);
  models::ImageFeatures f = m->encode_image(px[0]);
  std::vector<int32_t> ids = {5, 314, 316, 316, 315};
  EXPECT_THROW(m->prepare_prompt(ids, {f}), Error);
  // Images too small or too elongated for the processor.
  EXPECT_THROW(m->processor().process(vision::Image::zeros(20, 100, 3)), Error);
  EXPECT_THROW(m->processor().process(vision::Image::zeros(28 * 201, 28, 3)), Error);
}

// transformers >= 4.52 saves Qwen2-VL as "model.visual.*", "model.language_model.*", "lm_head.weight": the same
// weights under those names load and give the same logits.
TEST(Qwen2VL, NewerWeightLayoutLoads) {
  const std::string src = test::shared_dir() + "/refcases/qwen2_vl_s", dir = test::temp_dir() + "/qwen2vl-v452";
  std::filesystem::create_directories(dir);
  io::Checkpoint ckpt = io::Checkpoint::open(src);
  io::NamedTensors renamed;
  for (const std::string& n : ckpt.names()) {
    std::string to = n;
    if (n.rfind("visual.", 0) == 0) to = "model." + n;
    else if (n.rfind("model.", 0) == 0) to = "model.language_model." + n.substr(6);
    renamed.emplace_back(to, ckpt.get(n));
  }
  io::save_safetensors(dir + "/model.safetensors", renamed);
  for (const char* f : {"config.json", "preprocessor_config.json"})
    std::filesystem::copy_file(src + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
  auto a = models::Vlm::load(src, {models::WeightPrecision::F32});
  auto b = models::Vlm::load(dir, {models::WeightPrecision::F32});
  EXPECT_TRUE(b->unused_tensors().empty());
  Tensor pv = io::load_npy(src + "/pixel_values.npy"), grid = io::load_npy(src + "/image_grid_thw.npy");
  std::vector<int32_t> ids = ids_of(io::load_npy(src + "/input_ids.npy"));
  auto logits = [&](const models::Vlm& m) {
    std::vector<models::ImageFeatures> f;
    for (const auto& p : m.processor().split_pixel_values(pv, grid)) f.push_back(m.encode_image(p));
    models::PromptInput in = m.prepare_prompt(ids, f);
    const int64_t S = int64_t(ids.size()), V = m.text().vocab_size();
    nn::KVCache cache = m.text().make_cache(S);
    std::vector<float> l(size_t(S * V));
    m.text().forward(in.embeddings.data<float>(), S, in.positions, cache, l.data(), true);
    return l;
  };
  EXPECT_EQ(logits(*a), logits(*b));
}

// The decoder's sliding window (case qwen2vl_sliding_window, matched against the reference above): it changes the
// result (the same folder with use_sliding_window off gives other logits), layer_types choosing the same layer
// gives identical logits, and layer_types that do not fit the model are clear errors.
TEST(Qwen2VL, SlidingWindowFollowsTheConfig) {
  const std::string src = cases_root() + "/qwen2vl_sliding_window";
  nlohmann::json cfg = io::read_json_file(src + "/config.json");
  ASSERT_TRUE(cfg["use_sliding_window"].get<bool>());
  ASSERT_LT(cfg["sliding_window"].get<int>(), int(ids_of(io::load_npy(src + "/input_ids.npy")).size()));
  auto logits_of = [&](const std::string& dir) {
    auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
    Tensor pv = io::load_npy(src + "/pixel_values.npy"), grid = io::load_npy(src + "/image_grid_thw.npy");
    std::vector<int32_t> ids = ids_of(io::load_npy(src + "/input_ids.npy"));
    std::vector<models::ImageFeatures> f;
    for (const auto& p : m->processor().split_pixel_values(pv, grid)) f.push_back(m->encode_image(p));
    models::PromptInput in = m->prepare_prompt(ids, f);
    const int64_t S = int64_t(ids.size()), V = m->text().vocab_size();
    nn::KVCache cache = m->text().make_cache(S);
    std::vector<float> l(size_t(S * V));
    m->text().forward(in.embeddings.data<float>(), S, in.positions, cache, l.data(), true);
    return l;
  };
  auto variant = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const std::string dir = test::temp_dir() + "/" + name;
    std::filesystem::create_directories(dir);
    for (const char* f : {"model.safetensors", "preprocessor_config.json"})
      std::filesystem::copy_file(src + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
    nlohmann::json c = cfg;
    edit(c);
    io::write_file_atomic(dir + "/config.json", c.dump(2));
    return dir;
  };
  const std::vector<float> windowed = logits_of(src);
  const std::vector<float> full = logits_of(variant("qwen-sw-off", [](nlohmann::json& c) { c["use_sliding_window"] = false; }));
  double diff = 0;
  for (size_t i = 0; i < full.size(); ++i) diff = std::max(diff, double(std::fabs(full[i] - windowed[i])));
  EXPECT_GT(diff, 1e-2) << "the window does not change the logits: the case does not test it";
  EXPECT_EQ(logits_of(variant("qwen-sw-types", [](nlohmann::json& c) {
              c["max_window_layers"] = 0;  // ignored when layer_types is given
              c["layer_types"] = {"full_attention", "sliding_attention"};
            })),
            windowed);
  EXPECT_THROW(models::Vlm::load(variant("qwen-sw-bad1", [](nlohmann::json& c) { c["layer_types"] = {"full_attention"}; }),
                                 {models::WeightPrecision::F32}),
               Error);
  EXPECT_THROW(models::Vlm::load(variant("qwen-sw-bad2",
                                         [](nlohmann::json& c) { c["layer_types"] = {"full_attention", "chunked"}; }),
                                 {models::WeightPrecision::F32}),
               Error);
}
