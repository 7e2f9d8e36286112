// Golden cases in shapes other than the shared refcases' (tests/data/shapes/<case>/, written by
// scripts/gen_shape_cases.py with the independent plain-torch reference scripts/ref_llava.py): GQA ratios 1/3/4,
// head_dim != hidden/heads, positive and last vision feature layers, the "full" strategy, several image/patch sizes,
// projector and CLIP activations, llama3 and linear RoPE scaling, attention/MLP biases, tied embeddings, BF16
// storage, and plain LlamaForCausalLM. Every folder is one test; all shapes are read from the files.
// Tolerances are the refcases' (projector output 1e-4, logits 3e-4, greedy tokens exact): never loosen them to
// make a case pass; each case's meta.json says what it varies and its greedy margins (>= 0.05).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>

#include "io/npy.h"
#include "models/vlm.h"
#include "model_test_util.h"

using namespace iris;
using test::greedy;
using test::ids_of;
using test::max_diff;

namespace {

std::string shapes_root() { return std::string(IRIS_SOURCE_DIR) + "/tests/data/shapes"; }

// Every case folder (one with a config.json), sorted, discovered at run time.
std::vector<std::string> shape_cases() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(shapes_root(), ec))
    if (e.is_directory() && std::filesystem::exists(e.path() / "config.json"))
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

bool has_file(const std::string& path) { return std::filesystem::exists(path); }

}  // namespace

class ShapeCase : public ::testing::TestWithParam<std::string> {};

TEST(ShapeCases, FolderHasCases) {
  EXPECT_GE(shape_cases().size(), 1u) << "no case folders under " << shapes_root();
}

TEST_P(ShapeCase, MatchesReference) {
  const std::string dir = shapes_root() + "/" + GetParam();
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});

  std::vector<int32_t> ids = ids_of(io::load_npy(dir + "/input_ids.npy"));  // (1, S)
  Tensor ref_logits = io::load_npy(dir + "/logits.npy");                    // (1, S, V)
  Tensor ref_gen = io::load_npy(dir + "/generated_ids.npy");                // (1, n)
  ASSERT_EQ(ref_logits.ndim(), 3);
  const int64_t S = ref_logits.dim(1), V = ref_logits.dim(2);
  ASSERT_EQ(int64_t(ids.size()), S);
  ASSERT_EQ(m->text().vocab_size(), V);

  std::vector<models::ImageFeatures> images;
  double proj_diff = -1;
  if (has_file(dir + "/pixel_values.npy")) {
    ASSERT_TRUE(m->has_vision());
    Tensor px = io::load_npy(dir + "/pixel_values.npy");         // (1, C, H, W)
    Tensor ref_proj = io::load_npy(dir + "/projector_output.npy");  // (1, N, D_text)
    ASSERT_EQ(px.ndim(), 4);
    ASSERT_EQ(ref_proj.ndim(), 3);
    test::LlavaEncoding enc = test::encode_llava(*m, px);
    ASSERT_EQ(enc.embeddings.shape(), (Shape{ref_proj.dim(1), ref_proj.dim(2)}));
    proj_diff = max_diff(ref_proj, enc.embeddings.data<float>(), enc.embeddings.numel());
    EXPECT_LE(proj_diff, 1e-4) << "projector output";
    EXPECT_EQ(std::count(ids.begin(), ids.end(), m->image_token_id()), m->processor().fixed_tokens());
    images.push_back(test::features_of(enc.embeddings));
  } else {
    ASSERT_FALSE(m->has_vision());
  }

  Tensor emb = m->embed_prompt(ids, images);
  nn::KVCache cache = m->text().make_cache(S + ref_gen.numel() + 1);
  std::vector<float> logits(size_t(S * V));
  m->text().forward(emb.data<float>(), S, models::Positions::range(0, S), cache, logits.data(), true);
  const double logit_diff = max_diff(ref_logits, logits.data(), S * V);
  EXPECT_LE(logit_diff, 3e-4) << "logits";

  std::vector<float> last(logits.end() - V, logits.end());
  std::vector<int32_t> gen = greedy(m->text(), cache, last, int(ref_gen.numel()));
  EXPECT_EQ(gen, ids_of(ref_gen)) << "greedy tokens";

  std::cout << "[shapes] " << GetParam() << ": logits max|diff| " << logit_diff;
  if (proj_diff >= 0) std::cout << ", projector max|diff| " << proj_diff;
  std::cout << ", greedy " << (gen == ids_of(ref_gen) ? "exact" : "MISMATCH") << "\n";
}

INSTANTIATE_TEST_SUITE_P(Shapes, ShapeCase, ::testing::ValuesIn(shape_cases()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ShapeCase);
