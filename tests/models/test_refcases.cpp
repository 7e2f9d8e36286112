// The shared reference cases (Hugging Face transformers outputs on tiny random models): logits, hidden states,
// vision features, projector output and greedy tokens must match at the README's tolerances. Shapes are read from
// the files, never assumed.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "io/npy.h"
#include "io/safetensors.h"
#include "models/vit_clip.h"
#include "models/vlm.h"
#include "model_test_util.h"

using namespace iris;
using test::Capture;
using test::greedy;
using test::ids_of;
using test::max_diff;

namespace {

std::string refcase(const std::string& name) { return test::shared_dir() + "/refcases/" + name; }

}  // namespace

TEST(RefcaseLlamaText, LogitsHiddenStatesAndGreedy) {
  const std::string dir = refcase("llama_text");
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  ASSERT_FALSE(m->has_vision());
  std::vector<int32_t> ids = ids_of(io::load_npy(dir + "/input_ids.npy"));
  Tensor ref_logits = io::load_npy(dir + "/logits.npy");   // (1, S, V)
  Tensor ref_hidden = io::load_npy(dir + "/hidden_states.npy");  // (L+1, S, D)
  const int64_t S = int64_t(ids.size()), D = m->text().hidden_size(), V = m->text().vocab_size();
  ASSERT_EQ(ref_logits.shape(), (Shape{1, S, V}));
  const int L = m->config().text().num_hidden_layers;
  ASSERT_EQ(ref_hidden.shape(), (Shape{L + 1, S, D}));

  Tensor emb = m->embed_prompt(ids, {});
  EXPECT_LE(max_diff(ref_hidden.select(0, 0).contiguous(), emb.data<float>(), S * D), 1e-6);
  nn::KVCache cache = m->text().make_cache(S + 16);
  std::vector<float> logits(size_t(S * V));
  Capture cap;
  m->text().forward(emb.data<float>(), S, models::Positions::range(0, S), cache, logits.data(), true, cap.tap());
  EXPECT_LE(max_diff(ref_logits, logits.data(), S * V), 3e-4);
  for (int il = 0; il + 1 < L; ++il)
    EXPECT_LE(max_diff(ref_hidden.select(0, il + 1).contiguous(), cap.m[{"layer_out", il}].data(), S * D), 1e-4)
        << "layer " << il;
  EXPECT_LE(max_diff(ref_hidden.select(0, L).contiguous(), cap.m[{"output_norm", -1}].data(), S * D), 1e-4);

  Tensor ref_gen = io::load_npy(dir + "/generated_ids.npy");
  std::vector<float> last(logits.end() - V, logits.end());
  EXPECT_EQ(greedy(m->text(), cache, last, int(ref_gen.numel())), ids_of(ref_gen));
}

TEST(RefcaseClipVision, HiddenStatesAndPooler) {
  const std::string dir = refcase("clip_vision");
  nlohmann::json j = nlohmann::json::parse(test::read_file(dir + "/config.json"));
  models::ClipVisionConfig cfg = models::ClipVisionConfig::from_json(j);
  io::Checkpoint ckpt = io::Checkpoint::open(dir);
  models::WeightLoader w(ckpt, cpu::MatmulPrecision::F32);
  models::ClipVision vt;
  vt.load(w, "vision_model.", cfg, -1, true);
  EXPECT_TRUE(w.unused().empty());
  Tensor px = io::load_npy(dir + "/pixel_values.npy");  // (1, C, H, W)
  Tensor ref_hidden = io::load_npy(dir + "/hidden_states.npy");  // (L+1, T, D)
  Tensor ref_last = io::load_npy(dir + "/last_hidden_state.npy");
  Tensor ref_pool = io::load_npy(dir + "/pooler_output.npy");
  Capture cap;
  Tensor h = vt.forward(px.data<float>(), px.dim(1), px.dim(2), px.dim(3), cfg.num_hidden_layers, cap.tap());
  const int64_t T = h.dim(0), D = h.dim(1);
  ASSERT_EQ(ref_hidden.shape(), (Shape{cfg.num_hidden_layers + 1, T, D}));
  EXPECT_LE(max_diff(ref_hidden.select(0, 0).contiguous(), cap.m[{"embeddings", -1}].data(), T * D), 1e-4);
  for (int il = 0; il < cfg.num_hidden_layers; ++il)
    EXPECT_LE(max_diff(ref_hidden.select(0, il + 1).contiguous(), cap.m[{"layer_out", il}].data(), T * D), 1e-4)
        << "layer " << il;
  EXPECT_LE(max_diff(ref_last, h.data<float>(), T * D), 1e-4);
  Tensor pooled = vt.post_layernorm(h.slice(0, 0, 1).contiguous());
  EXPECT_LE(max_diff(ref_pool, pooled.data<float>(), D), 1e-4);
}

TEST(RefcaseLlava, FeaturesProjectorLogitsGreedy) {
  const std::string dir = refcase("llava");
  auto m = models::Vlm::load(dir, {models::WeightPrecision::F32});
  ASSERT_TRUE(m->has_vision());
  Tensor px = io::load_npy(dir + "/pixel_values.npy");
  test::LlavaEncoding enc = test::encode_llava(*m, px);
  Tensor ref_sel = io::load_npy(dir + "/vision_selected_layer.npy");
  Tensor ref_feat = io::load_npy(dir + "/vision_selected_features.npy");
  Tensor ref_proj = io::load_npy(dir + "/projector_output.npy");
  EXPECT_LE(max_diff(ref_sel, enc.selected_layer.data<float>(), enc.selected_layer.numel()), 1e-4);
  EXPECT_LE(max_diff(ref_feat, enc.features.data<float>(), enc.features.numel()), 1e-4);
  EXPECT_LE(max_diff(ref_proj, enc.embeddings.data<float>(), enc.embeddings.numel()), 1e-4);

  std::vector<int32_t> ids = ids_of(io::load_npy(dir + "/input_ids.npy"));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), m->image_token_id()), m->processor().fixed_tokens());
  Tensor emb = m->embed_prompt(ids, {test::features_of(enc.embeddings)});
  const int64_t S = int64_t(ids.size()), V = m->text().vocab_size();
  nn::KVCache cache = m->text().make_cache(S + 16);
  std::vector<float> logits(size_t(S * V));
  m->text().forward(emb.data<float>(), S, models::Positions::range(0, S), cache, logits.data(), true);
  Tensor ref_logits = io::load_npy(dir + "/logits.npy");
  EXPECT_LE(max_diff(ref_logits, logits.data(), S * V), 3e-4);
  Tensor ref_gen = io::load_npy(dir + "/generated_ids.npy");
  std::vector<float> last(logits.end() - V, logits.end());
  EXPECT_EQ(greedy(m->text(), cache, last, int(ref_gen.numel())), ids_of(ref_gen));
}

TEST(RefcaseLlava, ImageTokenCountMismatchIsAnError) {
  auto m = models::Vlm::load(refcase("llava"), {models::WeightPrecision::F32});
  std::vector<int32_t> ids = {1, 5, m->image_token_id(), 7};
  Tensor one_row = Tensor::zeros({1, m->text().hidden_size()});
  EXPECT_NO_THROW(m->embed_prompt(ids, {test::features_of(one_row)}));
  Tensor two_rows = Tensor::zeros({2, m->text().hidden_size()});
  EXPECT_THROW(m->embed_prompt(ids, {test::features_of(two_rows)}), Error);
  std::vector<int32_t> bad = {1, 100000};
  EXPECT_THROW(m->embed_prompt(bad, {}), Error);
}
