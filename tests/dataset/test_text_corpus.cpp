// Text documents from plain-text, JSONL and LLaVA JSON files, and tokenizer training end to end: files written
// byte-identically, loaded by Tokenizer::from_dir, and training examples encoded through the tokenizer's chat
// template identical to LLaVA-1.5's built-in format. Bad input: missing files, malformed JSON, bad sizes.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/encode.h"
#include "data/text_corpus.h"
#include "data/tokenizer_train.h"
#include "tensor/error.h"
#include "test_util.h"
#include "text/conversation.h"
#include "text/tokenizer.h"

namespace iris::data {
namespace {

using Docs = std::vector<std::string>;

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = test::temp_dir() + "/corpus/" + name;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  test::write_file(path, text);
  return path;
}

template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& hints) {
  try {
    fn();
    ADD_FAILURE() << "no error, wanted '" << hints[0] << "'";
  } catch (const Error& e) {
    for (const std::string& h : hints)
      EXPECT_NE(std::string(e.what()).find(h), std::string::npos) << "wanted '" << h << "' in: " << e.what();
  }
}

const char* kLlavaJson = R"([
{"id": "a", "image": "images/0.png", "conversations": [
  {"from": "human", "value": "<image>\nWhat shape is it?"}, {"from": "gpt", "value": "A red circle."},
  {"from": "human", "value": "  How many?  "}, {"from": "gpt", "value": "2"}]},
{"id": "b", "conversations": [{"from": "human", "value": "<image>"}]},
{"id": "c", "conversations": [{"from": "human", "value": "Text <image> in the middle"}, {"from": "gpt", "value": "ok"}]}
])";

TEST(TextCorpus, FormatByName) {
  EXPECT_EQ(text_format_of("a/captions.jsonl"), TextFormat::Jsonl);
  EXPECT_EQ(text_format_of("X.JSONL"), TextFormat::Jsonl);
  EXPECT_EQ(text_format_of("llava.json"), TextFormat::LlavaJson);
  EXPECT_EQ(text_format_of("notes.txt"), TextFormat::Plain);
  EXPECT_EQ(text_format_of("/usr/share/common-licenses/GPL-3"), TextFormat::Plain);
  EXPECT_EQ(text_format_of("GFDL-1.2"), TextFormat::Plain);
}

TEST(TextCorpus, PlainTextParagraphs) {
  const std::string path = write_temp(
      "plain.txt", "\xEF\xBB\xBF" "First paragraph,\n  second line.\n\n\n \t \nSecond\r\none\r\n\f\nThird  ");
  EXPECT_EQ(read_text_documents(path), (Docs{"First paragraph,\n  second line.", "Second\none", "Third  "}));
  EXPECT_EQ(read_text_documents(write_temp("empty", "")), Docs{});
  EXPECT_EQ(read_text_documents(write_temp("blank", "\n\n  \n")), Docs{});
}

TEST(TextCorpus, JsonlStringValues) {
  const std::string path =
      write_temp("c.jsonl",
                 "{\"caption\": \"A red square.\", \"image\": \"images/1.png\"}\n"
                 "\n"
                 "{\"id\": \"x\", \"question\": \"Is there?\", \"answer\": \"yes\", \"n\": 3, "
                 "\"nested\": {\"list\": [\"b\", 4, \"c\"], \"images\": [\"i.png\"]}, \"t\": true}\n"
                 "{\"image\": \"only.png\", \"empty\": \"\"}\r\n"
                 "{\"caption\": \"line\\nbreak \\u00e9\"}");
  EXPECT_EQ(read_text_documents(path), (Docs{"A red square.", "Is there?\nyes\nb\nc", "line\nbreak \xc3\xa9"}));
}

TEST(TextCorpus, LlavaConversations) {
  const std::string path = write_temp("llava.json", kLlavaJson);
  EXPECT_EQ(read_text_documents(path),
            (Docs{"What shape is it?\nA red circle.\nHow many?\n2", "Text  in the middle\nok"}));
}

TEST(TextCorpus, BadInput) {
  const std::string missing = test::temp_dir() + "/corpus/no-such-file.txt";
  expect_error([&] { read_text_documents(missing); }, {"no-such-file.txt"});
  expect_error([&] { read_text_documents(test::temp_dir()); }, {"is a directory"});
  const std::string bad_line = write_temp("bad.jsonl", "{\"caption\": \"ok\"}\n{\"caption\": \"broken\n");
  expect_error([&] { read_text_documents(bad_line); }, {"bad.jsonl:2", "malformed JSON"});
  const std::string not_object = write_temp("array.jsonl", "[\"a\", \"b\"]\n");
  expect_error([&] { read_text_documents(not_object); }, {"array.jsonl:1", "expected a JSON object"});
  const std::string truncated = write_temp("trunc.json", std::string(kLlavaJson).substr(0, 120));
  expect_error([&] { read_text_documents(truncated); }, {"trunc.json"});
  const std::string object = write_temp("object.json", "{\"conversations\": []}");
  expect_error([&] { read_text_documents(object); }, {"object.json", "expected a JSON array"});
  const std::string no_conv = write_temp("noconv.json", "[{\"id\": \"a\"}]");
  expect_error([&] { read_text_documents(no_conv); }, {"noconv.json: entry 0", "conversations"});
  const std::string bad_turn =
      write_temp("badturn.json", "[{\"conversations\": [{\"from\": \"human\", \"value\": 3}]}]");
  expect_error([&] { read_text_documents(bad_turn); }, {"badturn.json: entry 0", "turn 0"});
}

// A small corpus in the three formats.
std::vector<std::string> corpus_files() {
  std::string captions, plain;
  const char* colours[] = {"red", "green", "blue", "yellow", "purple"};
  const char* shapes[] = {"circle", "square", "triangle", "star"};
  for (int i = 0; i < 40; ++i) {
    captions += std::string("{\"caption\": \"A ") + colours[i % 5] + " " + shapes[i % 4] + " and a " +
                colours[(i + 2) % 5] + " " + shapes[(i + 1) % 4] + ".\", \"image\": \"images/" + std::to_string(i) +
                ".png\"}\n";
    plain += "Paragraph " + std::to_string(i) + " of plain text, with some words repeated: the the the.\n\n";
  }
  return {write_temp("train/captions.jsonl", captions), write_temp("train/llava.json", kLlavaJson),
          write_temp("train/LICENSE", plain)};
}

TEST(TokenizerTrain, WritesLoadableDeterministicFolder) {
  TokenizerTrainOptions o;
  o.inputs = corpus_files();
  o.vocab_size = 300;
  const std::string dir1 = test::temp_dir() + "/tok1", dir2 = test::temp_dir() + "/tok2/nested";
  const TokenizerTrainSummary s = train_tokenizer(o, dir1);
  train_tokenizer(o, dir2);
  EXPECT_EQ(s.files, 3);
  EXPECT_EQ(s.documents, 40 + 2 + 40);
  EXPECT_EQ(s.vocab_size, 300);
  EXPECT_EQ(s.merges, 40);
  EXPECT_EQ(s.stop_reason, "vocabulary size reached");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string a = test::read_file(dir1 + "/" + f);
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_EQ(a, test::read_file(dir2 + "/" + f)) << f;
  }

  const text::Tokenizer tok = text::Tokenizer::from_dir(dir1);
  EXPECT_EQ(tok.vocab_size(), 300);
  const std::string s1 = "A purple star and a red circle.";
  const std::vector<int32_t> ids = tok.encode(s1);
  EXPECT_EQ(ids[0], 0);
  EXPECT_LT(ids.size(), s1.size());  // some caption words were merged
  EXPECT_EQ(tok.decode(ids, true), s1);
  EXPECT_EQ(tok.encode("<image>", false), std::vector<int32_t>{3});
  EXPECT_EQ(tok.chat_template(), text::llava15_chat_template());

  // min_frequency stops early on a small corpus.
  o.vocab_size = 100000;
  o.min_frequency = 30;
  const TokenizerTrainSummary s2 = train_tokenizer(o, test::temp_dir() + "/tok3");
  EXPECT_LT(s2.vocab_size, 100000);
  EXPECT_NE(s2.stop_reason.find("minimum frequency 30"), std::string::npos);
}

TEST(TokenizerTrain, ChatTemplateEncodesLikeLlava15) {
  TokenizerTrainOptions o;
  o.inputs = corpus_files();
  o.vocab_size = 320;
  const std::string dir = test::temp_dir() + "/tok-chat";
  train_tokenizer(o, dir);
  const text::Tokenizer tok = text::Tokenizer::from_dir(dir);

  PromptFormat with_template = prompt_format_for(tok, 3, 5);
  ASSERT_FALSE(with_template.chat_template.empty());
  PromptFormat builtin = with_template;
  builtin.chat_template = "";  // LLaVA-1.5's format through text::render_llava15
  const ConversationEncoder a(with_template), b(builtin);
  const std::vector<std::vector<text::ChatMessage>> convs = {
      {{"user", "What shape is it?", 1}, {"assistant", "A red circle.", 0}},
      {{"system", "Answer briefly.", 0},
       {"user", "How many?\nAnswer the question using a single word or phrase.", 1},
       {"assistant", "2", 0},
       {"user", "Which colour is the star?", 0},
       {"assistant", "purple", 0}},
      {{"user", "Compare them.", 2}, {"assistant", "The first is red; the second is blue.", 0}},
  };
  for (const auto& msgs : convs) {
    const Encoded ea = a.encode(msgs), eb = b.encode(msgs);
    EXPECT_EQ(ea.ids, eb.ids);
    EXPECT_EQ(ea.labels, eb.labels);
    EXPECT_EQ(ea.n_images, eb.n_images);
    EXPECT_EQ(ea.boundary_adjusted, 0);
    EXPECT_EQ(a.render(msgs, true), b.render(msgs, true));
    EXPECT_EQ(a.tokenize(a.render(msgs, true)), b.tokenize(b.render(msgs, true)));
    // The supervised tokens are " answer</s>" for each answer.
    std::vector<int32_t> supervised;
    for (size_t i = 0; i < ea.ids.size(); ++i)
      if (ea.labels[i] != kIgnoreIndex) supervised.push_back(ea.labels[i]);
    std::string want;
    for (const auto& m : msgs)
      if (m.role == "assistant") want += " " + m.text + "</s>";
    EXPECT_EQ(tok.decode(supervised), want);
  }
}

TEST(TokenizerTrain, BadInput) {
  TokenizerTrainOptions o;
  o.inputs = corpus_files();
  const std::string dir = test::temp_dir() + "/tok-bad";
  o.vocab_size = 259;
  expect_error([&] { train_tokenizer(o, dir); }, {"vocabulary size 259", "at least 260"});
  EXPECT_FALSE(std::filesystem::exists(dir));
  o.vocab_size = 300;
  o.min_frequency = 0;
  expect_error([&] { train_tokenizer(o, dir); }, {"min frequency"});
  o.min_frequency = 2;
  TokenizerTrainOptions none = o;
  none.inputs.clear();
  expect_error([&] { train_tokenizer(none, dir); }, {"no input files"});
  TokenizerTrainOptions missing = o;
  missing.inputs.push_back(test::temp_dir() + "/corpus/missing.jsonl");
  expect_error([&] { train_tokenizer(missing, dir); }, {"missing.jsonl"});
  TokenizerTrainOptions latin1 = o;
  latin1.inputs.push_back(write_temp("latin1.txt", "fine\n\ncaf\xe9 au lait\n"));
  expect_error([&] { train_tokenizer(latin1, dir); }, {"latin1.txt: document 2", "not valid UTF-8 at byte 3"});
  EXPECT_FALSE(std::filesystem::exists(dir));  // nothing written for bad input
  const std::string file = write_temp("a-file", "x");
  expect_error([&] { train_tokenizer(o, file); }, {"a-file", "not a folder"});
}

}  // namespace
}  // namespace iris::data
