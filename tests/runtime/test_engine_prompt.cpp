// Prompt building for a text-only model with a tokenizer chat template (Llama-3's, which expects string content):
// the rendered text and its tokens are what the template and tokenizer give.
#include <gtest/gtest.h>

#include "runtime/engine.h"
#include "test_util.h"

using namespace iris;

namespace {

// A tiny text-only Llama with the Llama-3 tokenizer, saved in `name` under the test's temp folder.
std::string llama3_text_model(const std::string& name) {
  models::ModelConfig cfg;
  cfg.arch = models::Architecture::Llama;
  models::LlamaConfig& t = cfg.llava.text;
  t.vocab_size = 128256, t.hidden_size = 16, t.intermediate_size = 32, t.num_hidden_layers = 1;
  t.num_attention_heads = 2, t.num_key_value_heads = 1, t.head_dim = 8, t.max_position_embeddings = 64;
  std::string dir = test::temp_dir() + "/" + name;
  auto m = models::Vlm::create(cfg, 1);
  models::Vlm::save_folder(dir, cfg, m->created_weights(), DType::BF16, test::shared_dir() + "/tokenizers/llama3");
  return dir;
}

}  // namespace

TEST(EnginePrompt, TextModelUsesTokenizerTemplateWithStringContent) {
  auto e = runtime::Engine::load(llama3_text_model("llama3-text"));
  std::string p = e->render_prompt({{"user", "Hi there", 0}});
  EXPECT_EQ(p,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  std::vector<int32_t> ids = e->tokenize_prompt(p);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 128000);  // BOS once: the template wrote it, so the tokenizer does not add another
  EXPECT_NE(ids[1], 128000);
  EXPECT_THROW(e->render_prompt({{"user", "look", 1}}), Error);
  runtime::GenerateOptions g;
  g.max_new_tokens = 3;
  g.stop_at_eos = false;
  EXPECT_EQ(e->generate(ids, {}, g).tokens.size(), 3u);
}

// generation_config.json gives the sampling defaults, as Hugging Face's generate() reads them: greedy unless
// do_sample, repetition_penalty over the whole history either way; a malformed file is an error naming it.
TEST(EnginePrompt, GenerationConfigDefaults) {
  const std::string dir = llama3_text_model("llama3-genconfig");
  EXPECT_EQ(runtime::Engine::load(dir)->generation_defaults().temperature, 0.0f);  // no file: greedy
  test::write_file(dir + "/generation_config.json",
                   R"({"do_sample": true, "temperature": 0.1, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05})");
  text::SamplingParams p = runtime::Engine::load(dir)->generation_defaults();
  EXPECT_FLOAT_EQ(p.temperature, 0.1f);
  EXPECT_EQ(p.top_k, 1);
  EXPECT_FLOAT_EQ(p.top_p, 0.001f);
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.05f);
  EXPECT_EQ(p.repeat_last_n, -1);
  test::write_file(dir + "/generation_config.json", R"({"temperature": 0.7, "repetition_penalty": 1.1})");
  p = runtime::Engine::load(dir)->generation_defaults();
  EXPECT_EQ(p.temperature, 0.0f);  // do_sample false: greedy, the penalty still applies
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.1f);
  test::write_file(dir + "/generation_config.json", R"({"do_sample": true, "temperature": "hot"})");
  EXPECT_THROW(runtime::Engine::load(dir), Error);
  test::write_file(dir + "/generation_config.json", "{not json");
  EXPECT_THROW(runtime::Engine::load(dir), Error);
}
