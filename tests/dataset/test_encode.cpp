// Conversations -> (ids, labels) with the real mistral (SentencePiece), llama3 and qwen2 (byte-level)
// tokenizers, with LLaVA-1.5's format and with chat templates: ids equal the inference tokenization, every
// assistant answer's prompt prefix equals the inference prompt's ids, and the supervised tokens decode to
// exactly the answers plus the end-of-turn token.
#include <gtest/gtest.h>

#include <functional>

#include "data/encode.h"
#include "fixtures.h"
#include "text/conversation.h"

namespace iris::data {
namespace {

using testing::shared_tokenizer;

// llava-hf/llava-1.5-7b-hf's template (answers in {% generation %} blocks, no EOS after them).
const char* kLlava15Hf =
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% "
    "endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}"
    "{% endfor %}{% if message['role'] != 'assistant' %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}"
    "{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% "
    "endif %}";

// llava-hf/llava-v1.6-mistral-7b-hf's template (no generation prompt; "</s> " after each answer).
const char* kLlavaNextMistral =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + "
    "message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% "
    "endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] "
    "}}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] "
    "+ '</s> '}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% "
    "endfor %}";

// A Llama-3 style template over content lists (bos_token written by the template, content trimmed).
const char* kLlama3Vision =
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{% for c in "
    "m['content'] %}{% if c['type'] == 'image' %}<image>\n{% endif %}{% endfor %}{% for c in m['content'] %}{% "
    "if c['type'] == 'text' %}{{ c['text'] | trim }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}{% if "
    "add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

// Qwen/Qwen2-VL-7B-Instruct's template (default system message, <|image_pad|> as the image placeholder).
const char* kQwen2VL =
    "{% set image_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif "
    "%}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] "
    "}}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' "
    "in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if "
    "add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% "
    "elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% "
    "if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

Sample make_sample(std::vector<Turn> turns) {
  Sample s;
  s.id = "t";
  for (const Turn& t : turns)
    for (int i = 0; i < t.n_images; ++i) s.image_paths.push_back("img" + std::to_string(s.image_paths.size()));
  s.turns = std::move(turns);
  return s;
}

std::vector<std::pair<std::string, Sample>> conversations() {
  return {
      {"single", make_sample({{"user", "What is in the picture?", 1}, {"assistant", "A red square on blue.", 0}})},
      {"multi_turn", make_sample({{"user", "Describe it.", 1},
                                  {"assistant", "It is a cat sitting on a mat.", 0},
                                  {"user", "What colour is it?", 0},
                                  {"assistant", "The cat is orange and white.", 0},
                                  {"user", "Is it asleep?", 0},
                                  {"assistant", "No, its eyes are open.", 0}})},
      {"system", make_sample({{"system", "You are a careful assistant.", 0},
                              {"user", "Count the dots.", 1},
                              {"assistant", "There are 12 dots.", 0}})},
      {"text_only", make_sample({{"user", "What is 2+2?", 0},
                                 {"assistant", "4", 0},
                                 {"user", "And 3+3?", 0},
                                 {"assistant", "6, because 3 + 3 = 6.", 0}})},
      {"several_images", make_sample({{"user", "Compare the two images.", 2},
                                      {"assistant", "The first one is brighter.", 0},
                                      {"user", "And this one?", 1},
                                      {"assistant", "It is darker than both.", 0}})},
      {"unicode", make_sample({{"user", "Où est-ce ?", 1}, {"assistant", "C'est à Tōkyō, 東京 🙂 — café.", 0}})},
      {"multiline", make_sample({{"user", "List two things.", 0},
                                 {"assistant", "Here:\n- one\n- two\n\nDone.", 0}})},
  };
}

struct Format {
  std::string name;
  std::string tokenizer;
  std::string tmpl;             // "" = LLaVA-1.5's format
  std::string image_token_str;  // a vocabulary token to use as the image token; "" = a new id
  // The text an answer's supervised tokens decode to.
  std::function<std::string(const std::string& answer, const text::Tokenizer&)> expected;
  int adjusted_per_inner_answer = 0;  // known boundary adjustments per answer that is not the last message
};

std::string strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

std::vector<Format> formats() {
  auto plus_eos = [](const std::string& a, const text::Tokenizer& t) { return a + t.eos_token(); };
  return {
      {"mistral_llava15", "mistral", "", "", plus_eos},
      {"llama3_llava15", "llama3", "", "", plus_eos},
      {"qwen2_llava15", "qwen2", "", "", plus_eos},
      // The {% generation %} block holds "answer " but the space tokenizes with the next turn's "USER": the end
      // moves back one character (counted). The template writes no EOS.
      {"mistral_llava15_hf", "mistral", kLlava15Hf, "", [](const std::string& a, const text::Tokenizer&) { return a; },
       1},
      {"mistral_llava_next", "mistral", kLlavaNextMistral, "",
       [](const std::string& a, const text::Tokenizer&) { return a + "</s>"; }},
      {"llama3_template", "llama3", kLlama3Vision, "",
       [](const std::string& a, const text::Tokenizer&) { return strip(a) + "<|eot_id|>"; }},
      {"qwen2_vl_template", "qwen2", kQwen2VL, "<|image_pad|>",
       [](const std::string& a, const text::Tokenizer&) { return a + "<|im_end|>"; }},
  };
}

PromptFormat make_format(const Format& f) {
  const text::Tokenizer& tok = shared_tokenizer(f.tokenizer);
  PromptFormat pf;
  pf.tok = &tok;
  pf.chat_template = f.tmpl;
  pf.image_token = f.image_token_str.empty() ? tok.vocab_size() : *tok.token_to_id(f.image_token_str);
  pf.image_tokens_per_image = 5;
  return pf;
}

// Contiguous runs [begin, end) of supervised positions.
std::vector<std::pair<size_t, size_t>> supervised_runs(const Encoded& e) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < e.labels.size(); ++i) {
    if (e.labels[i] == kIgnoreIndex) continue;
    if (!runs.empty() && runs.back().second == i)
      runs.back().second = i + 1;
    else
      runs.emplace_back(i, i + 1);
  }
  return runs;
}

void check_conversation(const ConversationEncoder& enc, const Format& f, const Sample& s) {
  const text::Tokenizer& tok = enc.tokenizer();
  const Encoded e = enc.encode(s);
  const std::vector<text::ChatMessage> msgs = enc.messages(s);
  ASSERT_EQ(e.ids.size(), e.labels.size());
  // The ids are what inference makes of the whole conversation.
  EXPECT_EQ(e.ids, enc.tokenize(enc.render(msgs, false)));
  for (size_t i = 0; i < e.ids.size(); ++i)
    ASSERT_TRUE(e.labels[i] == kIgnoreIndex || e.labels[i] == e.ids[i]) << "position " << i;
  // Image tokens: n per image, never supervised.
  int n_images = 0;
  for (const auto& t : s.turns) n_images += t.n_images;
  EXPECT_EQ(e.n_images, n_images);
  EXPECT_EQ(std::count(e.ids.begin(), e.ids.end(), enc.format().image_token),
            n_images * enc.format().image_tokens_per_image);

  const auto runs = supervised_runs(e);
  std::vector<size_t> assistant;
  for (size_t m = 0; m < msgs.size(); ++m)
    if (msgs[m].role == "assistant") assistant.push_back(m);
  ASSERT_EQ(runs.size(), assistant.size());
  int expected_adjusted = 0;
  for (size_t k = 0; k < runs.size(); ++k) {
    const size_t m = assistant[k];
    if (m + 1 < msgs.size()) expected_adjusted += f.adjusted_per_inner_answer;
    // Everything before the answer is exactly the inference prompt for the conversation so far.
    const std::vector<text::ChatMessage> before(msgs.begin(), msgs.begin() + long(m));
    const std::vector<int32_t> prompt = enc.tokenize(enc.render(before, true));
    ASSERT_LE(prompt.size(), e.ids.size());
    EXPECT_EQ(std::vector<int32_t>(e.ids.begin(), e.ids.begin() + long(runs[k].first)), prompt)
        << "answer " << k << " prompt: " << enc.render(before, true);
    // The supervised tokens are the answer and its end-of-turn token.
    std::string decoded = tok.decode(std::vector<int32_t>(e.ids.begin() + long(runs[k].first),
                                                          e.ids.begin() + long(runs[k].second)),
                                     false, false);
    std::string expected = f.expected(msgs[m].text, tok);
    if (!decoded.empty() && decoded[0] == ' ' && (expected.empty() || expected[0] != ' ')) decoded.erase(0, 1);
    // The last answer of the llava-hf template keeps its trailing space (nothing follows to take it).
    if (f.adjusted_per_inner_answer && m + 1 == msgs.size() && !decoded.empty() && decoded.back() == ' ')
      decoded.pop_back();
    EXPECT_EQ(decoded, expected) << "answer " << k;
  }
  EXPECT_EQ(e.boundary_adjusted, expected_adjusted);
}

class EncodeFormats : public ::testing::TestWithParam<Format> {};

TEST_P(EncodeFormats, AnswersSupervisedPromptsMatchInference) {
  const Format& f = GetParam();
  ConversationEncoder enc(make_format(f));
  for (const auto& [name, s] : conversations()) {
    SCOPED_TRACE(name);
    check_conversation(enc, f, s);
  }
}

INSTANTIATE_TEST_SUITE_P(All, EncodeFormats, ::testing::ValuesIn(formats()),
                         [](const ::testing::TestParamInfo<Format>& i) { return i.param.name; });

// ---- exact ids for hand-checked cases ----

TEST(Encode, MistralLlava15ExactIds) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  PromptFormat pf;
  pf.tok = &tok;
  pf.image_token = 32000;
  pf.image_tokens_per_image = 3;
  ConversationEncoder enc(pf);
  Sample s = make_sample({{"user", "Hi", 1}, {"assistant", "Hello world", 0}});
  Encoded e = enc.encode(s);
  // "<s>" "USER: " <image> "\nHi ASSISTANT: Hello world" "</s>"
  std::vector<int32_t> ids = tok.encode("USER: ", true);
  ids.insert(ids.end(), 3, 32000);
  text::Tokenizer t2 = tok;
  t2.add_special_token("<image>", 32000);
  std::vector<int32_t> rest = t2.encode("\nHi ASSISTANT: Hello world</s>", false);
  ids.insert(ids.end(), rest.begin(), rest.end());
  EXPECT_EQ(e.ids, ids);
  // Supervised: "▁Hello" "▁world" "</s>" (22557, 1526, 2), nothing else.
  std::vector<int32_t> sup;
  for (size_t i = 0; i < e.ids.size(); ++i)
    if (e.labels[i] != kIgnoreIndex) sup.push_back(e.labels[i]);
  EXPECT_EQ(sup, (std::vector<int32_t>{22557, 1526, 2}));
  EXPECT_EQ(e.labels.back(), 2);
  EXPECT_EQ(e.ids.front(), 1);
}

TEST(Encode, DefaultSystemMessage) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  PromptFormat pf;
  pf.tok = &tok;
  pf.image_token = 32000;
  pf.default_system = "A chat.";
  ConversationEncoder enc(pf);
  Sample s = make_sample({{"user", "Hi", 1}, {"assistant", "Yo", 0}});
  EXPECT_EQ(enc.render(enc.messages(s), false), "A chat. USER: <image>\nHi ASSISTANT: Yo</s>");
  Sample with = make_sample({{"system", "Own.", 0}, {"user", "Hi", 0}, {"assistant", "Yo", 0}});
  EXPECT_EQ(enc.render(enc.messages(with), false), "Own. USER: Hi ASSISTANT: Yo</s>");
}

// ---- boundary cases ----

// ChatML's generation prompt ends with "\n"; an answer that starts with "\n" merges with it into one "\n\n"
// token (byte-level pre-tokenizer), so no token boundary exists where the answer starts. The start moves to the
// nearest consistent boundary (before the prompt's "\n": the merged token is supervised) and is counted.
TEST(Encode, QwenNewlineMergesAcrossPromptBoundary) {
  PromptFormat pf = make_format({"q", "qwen2", kQwen2VL, "<|image_pad|>", nullptr});
  ConversationEncoder enc(pf);
  Sample s = make_sample({{"user", "Say hi.", 0}, {"assistant", "\nHi there.", 0}});
  Encoded e = enc.encode(s);
  EXPECT_EQ(e.boundary_adjusted, 1);
  auto runs = supervised_runs(e);
  ASSERT_EQ(runs.size(), 1u);
  std::string decoded = enc.tokenizer().decode(
      std::vector<int32_t>(e.ids.begin() + long(runs[0].first), e.ids.begin() + long(runs[0].second)), false, false);
  EXPECT_EQ(decoded, "\n\nHi there.<|im_end|>");  // covers the whole answer
}

// SentencePiece: "ASSISTANT:" is followed by the answer's "▁": boundaries are clean even for answers that start
// with spaces, digits or punctuation.
TEST(Encode, MistralAnswersWithOddStarts) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  PromptFormat pf;
  pf.tok = &tok;
  pf.image_token = 32000;
  ConversationEncoder enc(pf);
  for (std::string answer : {" leading space", "123 go", ".dot", "\nnewline", "", "ASSISTANT: echo"}) {
    SCOPED_TRACE(answer);
    Sample s = make_sample({{"user", "Q", 0}, {"assistant", answer, 0}, {"user", "Q2", 0}, {"assistant", "ok", 0}});
    Encoded e = enc.encode(s);
    auto runs = supervised_runs(e);
    ASSERT_EQ(runs.size(), 2u);
    std::string decoded = tok.decode(
        std::vector<int32_t>(e.ids.begin() + long(runs[0].first), e.ids.begin() + long(runs[0].second)), false,
        false);
    // The decoder strips the one space that belongs to "ASSISTANT: ".
    EXPECT_EQ(decoded, answer + "</s>");
    const std::vector<text::ChatMessage> msgs = enc.messages(s);
    std::vector<text::ChatMessage> before(msgs.begin(), msgs.begin() + 1);
    EXPECT_EQ(std::vector<int32_t>(e.ids.begin(), e.ids.begin() + long(runs[0].first)),
              enc.tokenize(enc.render(before, true)));
  }
}

// ---- errors ----

TEST(Encode, NoAssistantTurn) {
  PromptFormat pf;
  pf.tok = &shared_tokenizer("mistral");
  pf.image_token = 32000;
  ConversationEncoder enc(pf);
  try {
    enc.encode(make_sample({{"user", "Hello?", 0}}));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.reason(), skip_reason::kNoAssistant);
  }
}

TEST(Encode, TemplateRaisesIsTemplateError) {
  PromptFormat pf = make_format({"m", "mistral", kLlavaNextMistral, "", nullptr});
  ConversationEncoder enc(pf);
  try {
    enc.encode(make_sample({{"tool", "x", 0}, {"assistant", "y", 0}}));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.reason(), skip_reason::kTemplate);
    EXPECT_NE(std::string(e.what()).find("Only user and assistant"), std::string::npos) << e.what();
  }
}

TEST(Encode, ImagesTheTemplateDropsAreAMismatch) {
  // A text template that ignores image parts: the image has no token to stand on.
  const char* text_only = "{% for m in messages %}{{ m['role'] }}: {{ m['content'][-1]['text'] }}\n{% endfor %}";
  PromptFormat pf = make_format({"m", "llama3", text_only, "", nullptr});
  ConversationEncoder enc(pf);
  try {
    enc.encode(make_sample({{"user", "Look", 1}, {"assistant", "ok", 0}}));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(e.reason(), skip_reason::kImageMismatch);
  }
  // Without images the same template works. It has no generation prompt, so what inference would have to
  // generate after the prompt "user: Look\n" is "assistant: ok": all of it is supervised.
  Encoded e = enc.encode(make_sample({{"user", "Look", 0}, {"assistant", "ok", 0}}));
  auto runs = supervised_runs(e);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(enc.tokenizer().decode(std::vector<int32_t>(e.ids.begin() + long(runs[0].first),
                                                        e.ids.begin() + long(runs[0].second))),
            "assistant: ok");
  PromptFormat no_image = pf;
  no_image.image_token = -1;
  ConversationEncoder enc2(no_image);
  EXPECT_THROW(enc2.encode(make_sample({{"user", "Look", 1}, {"assistant", "ok", 0}})), DataError);
}

TEST(Encode, ConflictingImageTokenIsRefused) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  text::Tokenizer t = tok;
  t.add_special_token("<image>", 32000);
  PromptFormat pf;
  pf.tok = &t;
  pf.image_token = 32001;
  EXPECT_THROW(ConversationEncoder{pf}, iris::Error);
  pf.image_token = 32000;
  EXPECT_NO_THROW(ConversationEncoder{pf});
}

// ---- truncation ----

TEST(Encode, TruncationNeverSplitsAnImage) {
  Encoded e;
  // BOS, 4 image tokens (id 9), text 5 6, 4 image tokens, 7 8
  e.ids = {1, 9, 9, 9, 9, 5, 6, 9, 9, 9, 9, 7, 8};
  e.labels.assign(e.ids.size(), kIgnoreIndex);
  e.n_images = 2;
  Encoded a = e;
  EXPECT_EQ(truncate_encoded(a, 100, 9, 4), 2);
  EXPECT_EQ(a.ids.size(), 13u);
  Encoded b = e;
  EXPECT_EQ(truncate_encoded(b, 9, 9, 4), 1);  // would cut the second image: cut before it
  EXPECT_EQ(b.ids, (std::vector<int32_t>{1, 9, 9, 9, 9, 5, 6}));
  Encoded c = e;
  EXPECT_EQ(truncate_encoded(c, 12, 9, 4), 2);
  EXPECT_EQ(c.ids.size(), 12u);
  Encoded d = e;
  EXPECT_EQ(truncate_encoded(d, 3, 9, 4), 0);
  EXPECT_EQ(d.ids, (std::vector<int32_t>{1}));
  EXPECT_EQ(d.labels.size(), 1u);
}

// ---- the shared LLaVA-1.5 formatter ----

TEST(Conversation, Llava15FormatAndSpans) {
  std::vector<text::ChatMessage> msgs = {{"system", "Be brief.", 0},
                                         {"user", "What?", 2},
                                         {"assistant", "A cat.", 0},
                                         {"user", "More?", 0},
                                         {"assistant", "No.", 0}};
  text::Spans spans;
  std::string s = text::render_llava15(msgs, "</s>", false, &spans);
  EXPECT_EQ(s, "Be brief. USER: <image>\n<image>\nWhat? ASSISTANT: A cat.</s>USER: More? ASSISTANT: No.</s>");
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(s.substr(spans[0].first, spans[0].second - spans[0].first), " A cat.</s>");
  EXPECT_EQ(s.substr(spans[1].first, spans[1].second - spans[1].first), " No.</s>");
  std::vector<text::ChatMessage> prompt(msgs.begin(), msgs.begin() + 4);
  EXPECT_EQ(text::render_llava15(prompt, "</s>", true),
            "Be brief. USER: <image>\n<image>\nWhat? ASSISTANT: A cat.</s>USER: More? ASSISTANT:");
}

}  // namespace
}  // namespace iris::data
