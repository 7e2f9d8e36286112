// Training ids against inference: for model folders made of the tiny LLaVA refcase with the real mistral, llama3
// and qwen2 tokenizers (with and without a chat template), the data pipeline's ids equal runtime::Engine's
// render_prompt + tokenize_prompt of the whole conversation, and the ids before each supervised answer equal
// Engine's prompt for the conversation up to that answer (add_generation_prompt on).
// Kept apart from tests/dataset because it links the whole runtime.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/encode.h"
#include "runtime/engine.h"
#include "test_util.h"

namespace iris::data {
namespace {

namespace fs = std::filesystem;
using iris::test::read_file;
using iris::test::shared_dir;
using iris::test::temp_dir;
using iris::test::write_file;

// A Llama-3 style template over content lists.
const char* kLlama3Vision =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{% for c in "
    "m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}{% for c in m['content'] %}{% "
    "if c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}{% if "
    "add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

// ChatML over content lists, images as "<image>" (LLaVA-OneVision style).
const char* kChatMl =
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' "
    "%}<image>\n{% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% "
    "endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// LLaVA-1.6-mistral style, no generation prompt.
const char* kMistralInst =
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}{% if c['type'] == "
    "'image' %}<image>\n{% endif %}{% endfor %}{{ m['content'][-1]['text'] }} [/INST]{% elif m['role'] == "
    "'assistant' %} {{ m['content'][-1]['text'] }}</s>{% else %}{{ m['content'][-1]['text'] }}\n\n{% endif %}{% "
    "endfor %}";

struct ModelCase {
  std::string name, tokenizer, tmpl;
};

// The refcase LLaVA with a real tokenizer: image_token_index set to the id "<image>" gets (the vocabulary size).
std::string make_model_dir(const ModelCase& c) {
  const std::string dir = temp_dir() + "/model_" + c.name;
  fs::create_directories(dir);
  const std::string ref = shared_dir() + "/refcases/llava";
  const std::string tk = shared_dir() + "/tokenizers/" + c.tokenizer;
  nlohmann::json tok_json = nlohmann::json::parse(read_file(tk + "/tokenizer.json"));
  int64_t next_id = 0;
  for (const auto& [k, v] : tok_json["model"]["vocab"].items()) next_id = std::max<int64_t>(next_id, v.get<int64_t>() + 1);
  for (const auto& a : tok_json["added_tokens"]) next_id = std::max<int64_t>(next_id, a["id"].get<int64_t>() + 1);
  nlohmann::json cfg = nlohmann::json::parse(read_file(ref + "/config.json"));
  cfg["image_token_index"] = next_id;
  write_file(dir + "/config.json", cfg.dump(1));
  fs::copy_file(ref + "/model.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
  fs::copy_file(tk + "/tokenizer.json", dir + "/tokenizer.json", fs::copy_options::overwrite_existing);
  nlohmann::json tc = nlohmann::json::parse(read_file(tk + "/tokenizer_config.json"));
  tc.erase("chat_template");  // the shipped text templates take string content; the engine passes lists
  write_file(dir + "/tokenizer_config.json", tc.dump(1));
  if (!c.tmpl.empty()) write_file(dir + "/chat_template.jinja", c.tmpl);
  return dir;
}

std::vector<Sample> conversations() {
  auto sample = [](std::vector<Turn> turns) {
    Sample s;
    s.id = "c";
    for (const Turn& t : turns)
      for (int i = 0; i < t.n_images; ++i) s.image_paths.push_back("x.png");
    s.turns = std::move(turns);
    return s;
  };
  return {
      sample({{"user", "What is shown?", 1}, {"assistant", "A small square.", 0}}),
      sample({{"system", "Answer briefly.", 0},
              {"user", "Describe.", 1},
              {"assistant", "Blue sky.", 0},
              {"user", "Clouds?", 0},
              {"assistant", "A few, white.", 0}}),
      sample({{"user", "Compare these.", 2}, {"assistant", "Left is darker.", 0}, {"user", "Now?", 1},
              {"assistant", "Similar.", 0}}),
      sample({{"user", "Text only: 1+1?", 0}, {"assistant", "2", 0}}),
      sample({{"user", "Unicode 東京?", 1}, {"assistant", "Oui — café 🙂.", 0}}),
  };
}

std::vector<runtime::ChatMessage> to_engine(const std::vector<text::ChatMessage>& msgs) {
  std::vector<runtime::ChatMessage> out;
  for (const auto& m : msgs) out.push_back({m.role, m.text, m.n_images});
  return out;
}

class EngineMatch : public ::testing::TestWithParam<ModelCase> {};

TEST_P(EngineMatch, IdsAndAnswerPromptsEqualInference) {
  const ModelCase& c = GetParam();
  auto engine = runtime::Engine::load(make_model_dir(c));
  ASSERT_TRUE(engine->model().has_vision());
  PromptFormat pf = prompt_format_for(engine->tokenizer(), int32_t(engine->model().config().llava.image_token_index),
                                      engine->model().processor().fixed_tokens(), engine->eos_ids());
  ASSERT_EQ(pf.chat_template, c.tmpl);
  ConversationEncoder enc(pf);
  for (const Sample& s : conversations()) {
    const std::vector<text::ChatMessage> msgs = enc.messages(s);
    SCOPED_TRACE(msgs[0].text);
    const Encoded e = enc.encode(s);
    EXPECT_EQ(e.boundary_adjusted, 0);
    EXPECT_EQ(e.ids, engine->tokenize_prompt(engine->render_prompt(to_engine(msgs), false)));
    // One supervised run per answer; the ids before it are the engine's prompt.
    size_t k = 0;
    for (size_t i = 0; i < e.labels.size(); ++i) {
      if (e.labels[i] == kIgnoreIndex || (i > 0 && e.labels[i - 1] != kIgnoreIndex)) continue;
      while (k < msgs.size() && msgs[k].role != "assistant") ++k;
      ASSERT_LT(k, msgs.size());
      std::vector<text::ChatMessage> before(msgs.begin(), msgs.begin() + long(k));
      EXPECT_EQ(std::vector<int32_t>(e.ids.begin(), e.ids.begin() + long(i)),
                engine->tokenize_prompt(engine->render_prompt(to_engine(before), true)))
          << "answer at message " << k;
      ++k;
    }
    EXPECT_EQ(k, msgs.size() - (msgs.back().role == "assistant" ? 0 : 1));
  }
}

INSTANTIATE_TEST_SUITE_P(All, EngineMatch,
                         ::testing::Values(ModelCase{"mistral_llava15", "mistral", ""},
                                           ModelCase{"llama3_llava15", "llama3", ""},
                                           ModelCase{"qwen2_llava15", "qwen2", ""},
                                           ModelCase{"mistral_inst", "mistral", kMistralInst},
                                           ModelCase{"llama3_template", "llama3", kLlama3Vision},
                                           ModelCase{"qwen2_chatml", "qwen2", kChatMl}),
                         [](const ::testing::TestParamInfo<ModelCase>& i) { return i.param.name; });

}  // namespace
}  // namespace iris::data
