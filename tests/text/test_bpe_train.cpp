// Byte-level BPE training: merges worked out by hand on a toy corpus, agreement with a naive trainer that
// recounts every pair for every merge, determinism, the vocabulary size and minimum frequency limits, the
// written tokenizer.json loading and round-tripping arbitrary UTF-8, and the chat template rendering exactly what
// render_llava15 renders (text and answer spans).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "test_util.h"
#include "text/bpe_train.h"
#include "text/conversation.h"
#include "text/jinja.h"
#include "text/tok_internal.h"
#include "text/tokenizer.h"

namespace iris::text {
namespace {

using Ids = std::vector<int32_t>;

BpeTrainResult train(const std::vector<std::string>& docs, int64_t vocab_size, int64_t min_frequency = 2) {
  BpeTrainer t({vocab_size, min_frequency});
  for (const std::string& d : docs) t.add_document(d);
  return t.train();
}

// Writes the tokenizer files of r to a fresh folder and loads it as a model folder.
Tokenizer load(const BpeTrainResult& r, const std::string& name) {
  const std::string dir = test::temp_dir() + "/" + name;
  std::filesystem::create_directories(dir);
  test::write_file(dir + "/tokenizer.json", bpe_tokenizer_json(r));
  test::write_file(dir + "/tokenizer_config.json", bpe_tokenizer_config_json(2048));
  test::write_file(dir + "/special_tokens_map.json", bpe_special_tokens_map_json());
  return Tokenizer::from_dir(dir);
}

std::vector<std::string> merge_strings(const BpeTrainResult& r) {
  std::vector<std::string> out;
  for (const BpeMerge& m : r.merges) out.push_back(r.tokens[size_t(m.left)] + "|" + r.tokens[size_t(m.right)]);
  return out;
}

int32_t byte_id(char c) { return 4 + (unsigned char)c; }

// Some English, numbers, punctuation, newlines and a few non-ASCII words, repeated with variations.
std::vector<std::string> sample_corpus() {
  const std::vector<std::string> base = {
      "A small red circle is to the left of a large blue square.",
      "How many triangles are in the image?\nAnswer the question using a single word or phrase.",
      "There are 3 green triangles and 12 yellow circles; the circles aren't overlapping.",
      "Is there a purple star in the image? No, there isn't.",
      "The quick brown fox jumps over the lazy dog.  Twice!\n\nThen it rests.",
      "Café, naïve, façade: déjà vu. Größe 42 — \"quoted\" (parenthesised) [bracketed] {braced}",
      "\tIndented line\n    four spaces\r\nwindows line",
  };
  std::vector<std::string> docs;
  for (int rep = 0; rep < 6; ++rep) {
    for (size_t i = 0; i < base.size(); ++i) docs.push_back(base[i] + (rep % 2 ? " again" : "") + std::to_string(rep));
  }
  return docs;
}

// The reference: recounts every pair of every word for each merge (quadratic, fine for a small corpus).
std::vector<std::string> naive_merges(const std::vector<std::string>& docs, int64_t vocab_size, int64_t min_freq) {
  auto pre = detail::make_pre_tokenizer(
      nlohmann::json{{"type", "Split"}, {"pattern", {{"Regex", bpe_split_pattern()}}}, {"behavior", "Isolated"}},
      "test");
  std::map<std::vector<std::string>, int64_t> words;
  for (const std::string& d : docs) {
    std::vector<detail::Piece> pieces{{d, true}};
    pre->pre_tokenize(pieces);
    for (const detail::Piece& p : pieces) {
      std::vector<std::string> syms;
      for (char c : p.text) syms.emplace_back(1, c);
      words[syms]++;
    }
  }
  std::vector<std::string> merges;
  std::vector<std::string> vocab;  // merged tokens
  while (4 + 256 + int64_t(vocab.size()) < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> counts;  // ordered: ties go to the smallest pair
    for (const auto& [syms, n] : words) {
      for (size_t k = 0; k + 1 < syms.size(); ++k) counts[{syms[k], syms[k + 1]}] += n;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_n = 0;
    for (const auto& [pair, n] : counts) {
      if (n > best_n) {
        best = &pair;
        best_n = n;
      }
    }
    if (!best || best_n < min_freq) break;
    const auto [a, b] = *best;
    merges.push_back(a + "|" + b);
    if (std::find(vocab.begin(), vocab.end(), a + b) == vocab.end()) vocab.push_back(a + b);
    std::map<std::vector<std::string>, int64_t> next;
    for (const auto& [syms, n] : words) {
      std::vector<std::string> out;
      for (size_t k = 0; k < syms.size(); ++k) {
        if (k + 1 < syms.size() && syms[k] == a && syms[k + 1] == b) {
          out.push_back(a + b);
          ++k;
        } else {
          out.push_back(syms[k]);
        }
      }
      next[out] += n;
    }
    words = std::move(next);
  }
  return merges;
}

TEST(BpeTrain, ToyCorpusMergesByHand) {
  // Pre-tokens: "low" x2, " lower", " lowest", " low". Pair counts: (l,o) 5, (o,w) 5, (' ',l) 3, (w,e) 2, the
  // rest 1. Merges: "l"+"o" (5, ties with "o"+"w" and wins as the smaller pair), "lo"+"w" (5), " "+"low" (3),
  // " low"+"e" (2); then every pair occurs once, under the minimum frequency of 2.
  const std::vector<std::string> docs = {"low lower lowest", "low low"};
  const BpeTrainResult r = train(docs, 1000);
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"l|o", "lo|w", " |low", " low|e"}));
  ASSERT_EQ(r.merges.size(), 4u);
  EXPECT_EQ(r.merges[0].count, 5);
  EXPECT_EQ(r.merges[1].count, 5);
  EXPECT_EQ(r.merges[2].count, 3);
  EXPECT_EQ(r.merges[3].count, 2);
  EXPECT_EQ(r.merges[0].left, byte_id('l'));
  EXPECT_EQ(r.merges[0].right, byte_id('o'));
  EXPECT_EQ(r.merges[1].left, 260);
  EXPECT_EQ(r.merges[2].left, byte_id(' '));
  EXPECT_EQ(r.merges[3].left, 262);
  EXPECT_EQ(r.vocab_size(), 264);
  EXPECT_EQ(r.tokens[0], "<s>");
  EXPECT_EQ(r.tokens[3], "<image>");
  EXPECT_EQ(r.tokens[size_t(byte_id('a'))], "a");
  EXPECT_EQ(r.tokens[260], "lo");
  EXPECT_EQ(r.tokens[261], "low");
  EXPECT_EQ(r.tokens[262], " low");
  EXPECT_EQ(r.tokens[263], " lowe");
  EXPECT_NE(r.stop_reason.find("minimum frequency"), std::string::npos) << r.stop_reason;

  // The written vocabulary and merges, in the byte-level alphabet (space = "Ġ").
  const nlohmann::json j = nlohmann::json::parse(bpe_tokenizer_json(r));
  EXPECT_EQ(j["model"]["merges"], nlohmann::json({"l o", "lo w", "Ġ low", "Ġlow e"}));
  EXPECT_EQ(j["model"]["vocab"]["Ġlowe"], 263);
  EXPECT_EQ(j["model"]["vocab"]["Ġ"], byte_id(' '));
  EXPECT_EQ(j["model"]["vocab"]["<image>"], 3);
  EXPECT_EQ(j["model"]["vocab"].size(), 264u);

  const Tokenizer tok = load(r, "toy");
  EXPECT_EQ(tok.vocab_size(), 264);
  EXPECT_EQ(tok.encode("low lower lowest"), (Ids{0, 261, 263, byte_id('r'), 263, byte_id('s'), byte_id('t')}));
  EXPECT_EQ(tok.encode("low lower lowest", false), (Ids{261, 263, byte_id('r'), 263, byte_id('s'), byte_id('t')}));

  // With min_frequency 1 the single pairs follow, smallest first: " lowe"+"r" before " lowe"+"s".
  const BpeTrainResult r1 = train(docs, 1000, 1);
  EXPECT_EQ(merge_strings(r1), (std::vector<std::string>{"l|o", "lo|w", " |low", " low|e", " lowe|r", " lowe|s",
                                                         " lowes|t"}));
  EXPECT_EQ(r1.vocab_size(), 267);
  EXPECT_EQ(load(r1, "toy1").encode("low lower lowest"), (Ids{0, 261, 264, 266}));

  // A vocabulary of 262 stops after two merges.
  const BpeTrainResult r2 = train(docs, 262);
  EXPECT_EQ(merge_strings(r2), (std::vector<std::string>{"l|o", "lo|w"}));
  EXPECT_EQ(r2.stop_reason, "vocabulary size reached");
}

TEST(BpeTrain, SpecialTokensAreSplitOutOfTheText) {
  // "<image>" and "</s>" never join their neighbours: "x<image>y" counts "x" and "y" alone, so no "x"+"<"...
  const BpeTrainResult r = train({"ab<image>ab</s>ab<s>ab<pad>", "<imag"}, 1000);
  EXPECT_EQ(merge_strings(r), (std::vector<std::string>{"a|b"}));
  EXPECT_EQ(r.merges[0].count, 4);
}

TEST(BpeTrain, MatchesNaiveTrainer) {
  const std::vector<std::string> docs = sample_corpus();
  for (int64_t min_freq : {1, 2, 5}) {
    const BpeTrainResult r = train(docs, 600, min_freq);
    EXPECT_EQ(merge_strings(r), naive_merges(docs, 600, min_freq)) << "min_frequency " << min_freq;
  }
}

TEST(BpeTrain, DeterministicAndOrderIndependent) {
  std::vector<std::string> docs = sample_corpus();
  const std::string a = bpe_tokenizer_json(train(docs, 400));
  const std::string b = bpe_tokenizer_json(train(docs, 400));
  std::reverse(docs.begin(), docs.end());  // counts do not depend on the order of documents
  const std::string c = bpe_tokenizer_json(train(docs, 400));
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_EQ(bpe_tokenizer_config_json(512), bpe_tokenizer_config_json(512));
}

TEST(BpeTrain, VocabSizeAndMinFrequencyRespected) {
  const std::vector<std::string> docs = sample_corpus();
  for (int64_t size : {260, 261, 300, 350}) {
    const BpeTrainResult r = train(docs, size);
    EXPECT_EQ(r.vocab_size(), size);
    EXPECT_EQ(load(r, "size" + std::to_string(size)).vocab_size(), size);
  }
  EXPECT_TRUE(train(docs, 260).merges.empty());

  for (int64_t min_freq : {1, 3, 12}) {
    const BpeTrainResult r = train(docs, 100000, min_freq);
    ASSERT_FALSE(r.merges.empty());
    EXPECT_LT(r.vocab_size(), 100000);
    EXPECT_NE(r.stop_reason.find("minimum frequency"), std::string::npos);
    // Every merged pair occurred at least min_freq times, and the best count never grows.
    for (size_t k = 0; k < r.merges.size(); ++k) {
      EXPECT_GE(r.merges[k].count, min_freq);
      if (k > 0) {
        EXPECT_LE(r.merges[k].count, r.merges[k - 1].count);
      }
    }
  }
}

TEST(BpeTrain, RoundTripsArbitraryText) {
  const BpeTrainResult r = train(sample_corpus(), 420);
  const Tokenizer tok = load(r, "roundtrip");
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_ids(), Ids{1});
  EXPECT_EQ(tok.bos_token(), "<s>");
  EXPECT_EQ(tok.eos_token(), "</s>");
  EXPECT_EQ(tok.token_to_id("<pad>"), 2);
  EXPECT_EQ(tok.token_to_id("<image>"), 3);
  for (int32_t id = 0; id < 4; ++id) EXPECT_TRUE(tok.is_special(id));
  EXPECT_FALSE(tok.is_special(4));
  EXPECT_EQ(tok.chat_template(), llava15_chat_template());

  const std::vector<std::string> texts = {
      "",
      " ",
      "A small red circle is to the left of a large blue square.",
      "never seen: zqxjk QQQ 9876543210",
      "multiple   spaces    and trailing   ",
      "   leading spaces",
      "new\nlines\n\n\nand\r\nwindows\r\n",
      "\ttabs\t\tand\vvertical\fform feeds",
      std::string("control \x01\x02\x1b[0m and nul \0 bytes \x7f", 32),
      "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 and ✓",
      "日本語のテキスト 한국어 العربية हिन्दी Ελληνικά кириллица",
      "decomposed e\xcc\x81 vs composed \xc3\xa9, compatibility \xef\xac\x81 and \xe2\x91\xa0",
      "astral \xf0\x9d\x94\xb8\xf0\x9f\x98\x80 and max \xf4\x8f\xbf\xbf",
      "the <image> marker and <image><image>twice",
      "specials </s><s><pad> in text, and near misses <im age> <s <ima",
      "contractions: it's, I'M, they'll, we've, she'd",
      "x",
  };
  for (const std::string& s : texts) {
    const Ids ids = tok.encode(s);
    ASSERT_FALSE(ids.empty()) << s;
    EXPECT_EQ(ids[0], 0) << s;  // BOS
    for (int32_t id : ids) EXPECT_LT(id, 420) << s;
    const Ids plain = tok.encode(s, false);
    EXPECT_EQ(Ids(ids.begin() + 1, ids.end()), plain) << s;
    EXPECT_EQ(tok.decode(plain), s) << s;
    EXPECT_EQ(tok.decode(ids), "<s>" + s) << s;
  }
  // Random code points from every range (controls, ASCII, BMP, astral; never surrogates).
  uint64_t state = 12345;
  const auto next = [&state](uint32_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return uint32_t((state >> 33) % n);
  };
  for (int k = 0; k < 300; ++k) {
    std::string s;
    const uint32_t len = next(40);
    for (uint32_t i = 0; i < len; ++i) {
      const uint32_t kind = next(10);
      uint32_t cp = kind < 4 ? 0x20 + next(0x5F) : kind < 5 ? next(0x20) : kind < 8 ? 0x80 + next(0xD800 - 0x80)
                  : kind < 9 ? 0xE000 + next(0x2000) : 0x10000 + next(0x100000);
      detail::utf8_append(s, cp);
    }
    EXPECT_EQ(tok.decode(tok.encode(s, false)), s) << k;
  }

  // Specials written in the text are one token each.
  EXPECT_EQ(tok.encode("<image>", false), Ids{3});
  EXPECT_EQ(tok.encode("<image>\nWhat", false)[0], 3);
  const Ids two = tok.encode("a<image><image>b", false);
  EXPECT_EQ(std::count(two.begin(), two.end(), 3), 2);
  EXPECT_EQ(tok.encode("</s><pad><s>", false), (Ids{1, 2, 0}));
  EXPECT_EQ(tok.decode(tok.encode("hi <image> there</s>"), true), "hi  there");
}

TEST(BpeTrain, WrittenFilesDescribeTheFormat) {
  const BpeTrainResult r = train(sample_corpus(), 300);
  const nlohmann::json j = nlohmann::json::parse(bpe_tokenizer_json(r));
  EXPECT_TRUE(j["normalizer"].is_null());
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_EQ(j["model"]["vocab"].size(), 300u);
  EXPECT_EQ(j["model"]["merges"].size(), r.merges.size());
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], bpe_split_pattern());
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  EXPECT_EQ(j["post_processor"]["type"], "TemplateProcessing");
  ASSERT_EQ(j["added_tokens"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(j["added_tokens"][i]["id"], i);
    EXPECT_EQ(j["added_tokens"][i]["content"], bpe_special_tokens()[size_t(i)]);
    EXPECT_EQ(j["added_tokens"][i]["special"], true);
    EXPECT_EQ(j["model"]["vocab"][bpe_special_tokens()[size_t(i)]], i);
  }
  const nlohmann::json cfg = nlohmann::json::parse(bpe_tokenizer_config_json(4096));
  EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(cfg["bos_token"], "<s>");
  EXPECT_EQ(cfg["eos_token"], "</s>");
  EXPECT_EQ(cfg["pad_token"], "<pad>");
  EXPECT_EQ(cfg["model_max_length"], 4096);
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["added_tokens_decoder"]["3"]["content"], "<image>");
  EXPECT_EQ(cfg["chat_template"], llava15_chat_template());
  const nlohmann::json map = nlohmann::json::parse(bpe_special_tokens_map_json());
  EXPECT_EQ(map["bos_token"]["content"], "<s>");
  EXPECT_EQ(map["pad_token"]["content"], "<pad>");
}

TEST(BpeTrain, BadInput) {
  const auto expect_error = [](auto&& fn, const std::string& hint) {
    try {
      fn();
      ADD_FAILURE() << "no error, wanted '" << hint << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
    }
  };
  expect_error([] { BpeTrainer t({259, 2}); }, "at least 260");
  expect_error([] { BpeTrainer t({0, 2}); }, "at least 260");
  expect_error([] { BpeTrainer t({300, 0}); }, "min frequency");
  BpeTrainer t({300, 2});
  expect_error([&] { t.add_document("ok \xff bad"); }, "not valid UTF-8 at byte 3");
  expect_error([&] { t.add_document("\xe2\x82"); }, "not valid UTF-8");
  BpeTrainResult bad;
  expect_error([&] { bpe_tokenizer_json(bad); }, "at least 260");
  expect_error([] { bpe_tokenizer_config_json(0); }, "model_max_length");
}

// ---- The chat template ----

void expect_same_rendering(const std::vector<ChatMessage>& msgs, bool gen_prompt, const std::string& what) {
  const ChatTemplate tmpl(llava15_chat_template());
  Spans want_spans, got_spans;
  const std::string want = render_llava15(msgs, "</s>", gen_prompt, &want_spans);
  const std::string got = render_chat(tmpl, msgs, gen_prompt, "<s>", "</s>", &got_spans);
  EXPECT_EQ(got, want) << what;
  EXPECT_EQ(got_spans, want_spans) << what;
  // Through the plain nlohmann::json entry point (sorted keys) as well.
  nlohmann::json ctx = {{"messages", nlohmann::json::parse(chat_messages_json(msgs).dump())},
                        {"add_generation_prompt", gen_prompt},
                        {"bos_token", "<s>"},
                        {"eos_token", "</s>"}};
  EXPECT_EQ(tmpl.render(ctx), want) << what;
}

TEST(BpeChatTemplate, RendersLikeLlava15) {
  using M = std::vector<ChatMessage>;
  const M one = {{"user", "What shape is it?", 1}, {"assistant", "A red circle.", 0}};
  const M system_turns = {{"system", "A chat between a curious human and an artificial intelligence assistant.", 0},
                          {"user", "How many objects are there?\nAnswer the question using a single word.", 1},
                          {"assistant", "3", 0},
                          {"user", "Which colour is the square?", 0},
                          {"assistant", "blue", 0}};
  const M two_images = {{"user", "Compare the two images.", 2}};
  const M odd = {{"user", "", 1},
                 {"assistant", "", 0},
                 {"tool", "{{ not a template }} 'quotes' \"double\" \\ {% raw %}", 0},
                 {"assistant", "multi\nline\n\nanswer with émoji 👍 and </s> inside", 1},
                 {"system", "late system", 0}};
  const M prompt_only = {{"user", "Describe the image.", 1}};
  for (bool gp : {false, true}) {
    expect_same_rendering(one, gp, "one turn");
    expect_same_rendering(system_turns, gp, "system and several turns");
    expect_same_rendering(two_images, gp, "two images");
    expect_same_rendering(odd, gp, "odd roles and text");
    expect_same_rendering(prompt_only, gp, "prompt only");
    expect_same_rendering({}, gp, "no messages");
  }
  // The generation spans cover " answer</s>".
  Spans spans;
  const std::string out =
      render_chat(ChatTemplate(llava15_chat_template()), one, false, "<s>", "</s>", &spans);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(out.substr(spans[0].first, spans[0].second - spans[0].first), " A red circle.</s>");
  EXPECT_EQ(out, "USER: <image>\nWhat shape is it? ASSISTANT: A red circle.</s>");
}

TEST(BpeChatTemplate, AcceptsStringContentAndAnyPartOrder) {
  const ChatTemplate tmpl(llava15_chat_template());
  nlohmann::ordered_json msgs = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image"},
                                 {"type": "text", "text": "this?"},
                                 {"type": "image_url", "image_url": {"url": "data:,"}}]}
  ])");
  const std::vector<ChatMessage> same = {{"system", "Be brief.", 0},
                                         {"user", "Hi there", 0},
                                         {"assistant", "Hello.", 0},
                                         {"user", "What is this?", 2}};
  EXPECT_EQ(tmpl.render_messages(msgs, true, "<s>", "</s>"), render_llava15(same, "</s>", true));
  EXPECT_EQ(tmpl.render_messages(msgs, false, "<s>", "</s>"), render_llava15(same, "</s>", false));
}

}  // namespace
}  // namespace iris::text
