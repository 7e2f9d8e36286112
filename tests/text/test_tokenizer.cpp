// Unit tests of the tokenizer on small tokenizer.json files written here: merge order, byte fallback, unknown
// tokens, added tokens (lstrip/rstrip/single_word/normalized), Metaspace prepend schemes, split behaviours,
// the streaming decoder, tokenize_jsonl, tokenizer_config handling and bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>

#include "tensor/error.h"
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "text/tok_internal.h"
#include "text/tokenizer.h"

using iris::Error;
using iris::text::StreamDecoder;
using iris::text::Tokenizer;
using Ids = std::vector<int32_t>;

namespace {

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const size_t pos = s.find(from);
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

// Writes `text` as <temp>/<name> and returns the path.
std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = iris::test::temp_dir() + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  iris::test::write_file(path, text);
  return path;
}

// "<0x00>": first, ..., "<0xFF>": first + 255,
std::string byte_vocab(int first) {
  std::string s;
  for (int b = 0; b < 256; ++b) {
    char buf[40];
    std::snprintf(buf, sizeof(buf), "\"<0x%02X>\": %d, ", b, first + b);
    s += buf;
  }
  return s;
}

constexpr int kSpace = 259, kA = 260, kB = 261, kC = 262, kAB = 263, kBC = 264, kABC = 265, kAA = 268;
int byte_id(int b) { return 3 + b; }

// A SentencePiece-style toy: Prepend ▁ + Replace normalizer, no pre-tokenizer, byte fallback, <s> template.
std::string sp_json(const std::string& merges = R"(["a b", "b c", "ab c", "a a"])", bool byte_fallback = true,
                    bool fuse_unk = true) {
  std::string j = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                 {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": FUSE, "byte_fallback": FALLBACK,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, BYTES "▁": 259, "a": 260, "b": 261, "c": 262, "ab": 263, "bc": 264,
              "abc": 265, "▁a": 266, "▁ab": 267, "aa": 268},
    "merges": MERGES}
})";
  j = replace(j, "BYTES", byte_vocab(3));
  j = replace(j, "MERGES", merges);
  j = replace(j, "FALLBACK", byte_fallback ? "true" : "false");
  j = replace(j, "FUSE", fuse_unk ? "true" : "false");
  return j;
}

Tokenizer load(const std::string& name, const std::string& json, const std::string& config = "") {
  const std::string path = write_temp(name + "/tokenizer.json", json);
  return Tokenizer::from_files(path, config.empty() ? "" : write_temp(name + "/tokenizer_config.json", config));
}

// A character-level toy without normalizer or pre-tokenizer, with added tokens of every flavour.
std::string char_json(const std::string& normalizer = "null") {
  std::string j = R"({
  "added_tokens": [
    {"id": 100, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true},
    {"id": 101, "content": "[X]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
    {"id": 102, "content": "<w>", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
    {"id": 103, "content": "HeLLo", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false},
    {"id": 104, "content": "<mask>x", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": NORMALIZER,
  "pre_tokenizer": null, "post_processor": null, "decoder": null,
  "model": {"type": "BPE", "unk_token": "?", "fuse_unk": false, "byte_fallback": false,
    "vocab": {"?": 0, " ": 1, "a": 2, "b": 3, "<": 4, ">": 5, "w": 6, "x": 7, "h": 8, "e": 9, "l": 10, "o": 11,
              "A": 12},
    "merges": []}
})";
  return replace(j, "NORMALIZER", normalizer);
}

// A toy for the Metaspace pre-tokenizer: with ignore_merges, a pre-token in the vocabulary is one token.
std::string metaspace_json(const std::string& scheme, bool split = true) {
  std::string j = R"({
  "added_tokens": [{"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "SCHEME", "split": SPLIT},
  "post_processor": null,
  "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "SCHEME", "split": SPLIT},
  "model": {"type": "BPE", "ignore_merges": true, "unk_token": "?",
    "vocab": {"?": 0, "<s>": 1, "▁hi": 10, "hi": 11, "▁there": 12, "there": 13, "▁": 14, "▁hi▁there": 15},
    "merges": []}
})";
  j = replace(replace(j, "SCHEME", scheme), "SCHEME", scheme);
  return replace(replace(j, "SPLIT", split ? "true" : "false"), "SPLIT", split ? "true" : "false");
}

// A GPT-2 style toy: ByteLevel pre-tokenizer and decoder, every byte character a token (id = byte), few merges.
std::string byte_level_json(const std::string& pre_tokenizer) {
  const auto& map = iris::text::detail::byte_to_unicode();
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string ch = map[size_t(b)];
    if (ch == "\"" || ch == "\\") ch = "\\" + ch;
    vocab += "\"" + ch + "\": " + std::to_string(b) + ", ";
  }
  std::string j = R"({
  "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": PRE,
  "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "vocab": {VOCAB "Ġa": 256, "Ġab": 257, "12": 258},
    "merges": [["Ġ", "a"], ["Ġa", "b"], ["1", "2"]]}
})";
  return replace(replace(j, "PRE", pre_tokenizer), "VOCAB ", vocab);
}

// ---- BPE model ----

TEST(Tokenizer, MergesApplyInRankOrder) {
  // "a b" ranks before "b c": abc -> ab c -> abc.
  Tokenizer t1 = load("merge1", sp_json(R"(["a b", "b c", "ab c"])"));
  EXPECT_EQ(t1.encode("abc", false), (Ids{kSpace, kABC}));
  // "b c" first: a bc, and there is no merge of "a bc".
  Tokenizer t2 = load("merge2", sp_json(R"(["b c", "a b", "ab c"])"));
  EXPECT_EQ(t2.encode("abc", false), (Ids{kSpace, kA, kBC}));
  // Pairs in ["a", "b"] form are read the same way.
  Tokenizer t3 = load("merge3", sp_json(R"([["b", "c"], ["a", "b"], ["ab", "c"]])"));
  EXPECT_EQ(t3.encode("abc", false), (Ids{kSpace, kA, kBC}));
  // Equal ranks merge leftmost first.
  EXPECT_EQ(t1.encode("aaa", false), (Ids{kSpace, kA, kA, kA}));  // t1 has no "a a"
  Tokenizer t4 = load("merge4", sp_json(R"(["a a"])"));
  EXPECT_EQ(t4.encode("aaa", false), (Ids{kSpace, kAA, kA}));
  EXPECT_EQ(t4.encode("aaaa", false), (Ids{kSpace, kAA, kAA}));
  // The template adds <s>; add_special_tokens=false does not.
  EXPECT_EQ(t1.encode("ab"), (Ids{1, kSpace, kAB}));
  EXPECT_EQ(t1.encode(""), (Ids{1}));
  EXPECT_EQ(t1.encode("", false), (Ids{}));
  EXPECT_EQ(t1.bos_id(), 1);
  EXPECT_EQ(t1.bos_token(), "<s>");
}

TEST(Tokenizer, ByteFallbackAndUnknown) {
  Tokenizer t = load("bytes", sp_json());
  // é is not in the vocabulary: its UTF-8 bytes C3 A9.
  const Ids ids = t.encode("aé", false);
  EXPECT_EQ(ids, (Ids{kSpace, kA, byte_id(0xC3), byte_id(0xA9)}));
  EXPECT_EQ(t.decode(ids), "aé");
  EXPECT_EQ(t.decode({1, kSpace, kA}), "<s> a");  // <s> first: the Strip decoder strips nothing
  EXPECT_EQ(t.decode({1, kSpace, kA}, true), "a");
  // A byte run that is not UTF-8 gives one U+FFFD per byte.
  EXPECT_EQ(t.decode({byte_id(0xC3)}), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({byte_id(0xE5), byte_id(0x8F), kA}), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(t.decode({byte_id(0xE5), byte_id(0x8F), byte_id(0xAB)}), "叫");
  // Ids without a token are dropped, as the reference library does.
  EXPECT_EQ(t.decode({kA, 99999, -5, kB}), "ab");
  EXPECT_EQ(t.id_to_token(byte_id(0x0A)), "<0x0A>");

  // Without byte fallback, unknown characters become <unk>, fused into one when fuse_unk is set.
  Tokenizer fused = load("unk_fused", sp_json(R"([])", false, true));
  EXPECT_EQ(fused.encode("axyzb", false), (Ids{kSpace, kA, 0, kB}));
  Tokenizer unfused = load("unk_unfused", sp_json(R"([])", false, false));
  EXPECT_EQ(unfused.encode("axyzb", false), (Ids{kSpace, kA, 0, 0, 0, kB}));
}

TEST(Tokenizer, LongInputWithoutPreTokenizer) {
  Tokenizer t = load("long", sp_json());
  std::string text;
  for (int k = 0; k < 20000; ++k) text += "abc ";
  const Ids ids = t.encode(text, false);
  // "▁" + "abc" repeated; each space before the next "abc" is its own ▁.
  ASSERT_EQ(ids.size(), 40001u);
  EXPECT_EQ(ids[0], kSpace);
  EXPECT_EQ(ids[1], kABC);
  EXPECT_EQ(t.decode(ids), text);
}

TEST(Tokenizer, SubwordPrefixAndSuffix) {
  // Merging "a" with "##b" gives "ab": the continuation prefix of the right part is dropped.
  Tokenizer t = load("affixes", R"({
    "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
    "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "unk_token": "?", "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>",
      "vocab": {"a": 0, "##b": 1, "##c</w>": 2, "ab": 3, "abc</w>": 4, "?": 5, "a</w>": 6},
      "merges": ["a ##b", "ab ##c</w>"]}})");
  EXPECT_EQ(t.encode("abc a abd"), (Ids{4, 6, 3, 5}));
}

// ---- Normalizers and Unicode helpers ----

TEST(Tokenizer, NormalizersAndUnicode) {
  namespace d = iris::text::detail;
  const auto norm = [](const std::string& json, std::string s) {
    d::make_normalizer(nlohmann::json::parse(json), "test")->normalize(s);
    return s;
  };
  EXPECT_EQ(norm(R"({"type": "NFC"})", "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(norm(R"({"type": "NFD"})", "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(norm(R"({"type": "NFKC"})", "ﬁ①Ｆ"), "fi1F");
  EXPECT_EQ(norm(R"({"type": "NFC"})", "ﬁ①Ｆ"), "ﬁ①Ｆ");  // compatibility characters stay
  EXPECT_EQ(norm(R"({"type": "NFC"})", std::string("a\0" "e\xCC\x81", 5)), std::string("a\0" "\xC3\xA9", 4));
  EXPECT_EQ(norm(R"({"type": "Lowercase"})", "ÀB\xC4\xB0Σ"), "àbi\xCC\x87σ");
  EXPECT_EQ(norm(R"({"type": "Strip", "strip_left": true, "strip_right": true})", " \t\xE3\x80\x80" "a b\n "), "a b");
  EXPECT_EQ(norm(R"({"type": "Strip", "strip_left": false, "strip_right": true})", " a "), " a");
  EXPECT_EQ(norm(R"({"type": "StripAccents"})", "e\xCC\x81" "a"), "ea");
  EXPECT_EQ(norm(R"({"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": "_"})", "a  b\tc"), "a_b_c");
  EXPECT_EQ(norm(R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})", "a b"), "▁a▁b");
  EXPECT_EQ(norm(R"({"type": "Prepend", "prepend": "▁"})", ""), "");

  // Rust's from_utf8_lossy: one U+FFFD per maximal invalid subsequence.
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(d::utf8_lossy("\xF0\x9F\x98" "a"), fffd + "a");
  EXPECT_EQ(d::utf8_lossy("\xC0\x80"), fffd + fffd);
  EXPECT_EQ(d::utf8_lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // a surrogate
  EXPECT_EQ(d::utf8_lossy("ok\xE2\x82"), "ok" + fffd);
  EXPECT_EQ(d::utf8_invalid_at("ab\xF4\x90\x80\x80"), 2u);  // above U+10FFFF
  EXPECT_EQ(d::utf8_invalid_at("日本"), std::string::npos);

  // \s follows White_Space (as Oniguruma does), so U+180E is not a space; inside classes too.
  std::vector<std::pair<size_t, size_t>> m;
  d::Regex ws("\\s+", "test");
  ws.find_all("a\xE1\xA0\x8E\xE3\x80\x80" "b", m);  // U+180E, then U+3000 (ideographic space)
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{4, 7}}));
  m.clear();
  d::Regex cls("[^\\s\\p{L}]+|\\S(?!\\S)", "test");
  cls.find_all("ab 1,", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{1, 2}, {3, 5}}));
}

// ---- Added tokens ----

TEST(Tokenizer, AddedTokensStripAndSingleWord) {
  Tokenizer t = load("added", char_json());
  // lstrip + rstrip: the spaces around <mask> belong to it.
  EXPECT_EQ(t.encode("a <mask> b"), (Ids{2, 100, 3}));
  // Longest match wins: "<mask>x" over "<mask>".
  EXPECT_EQ(t.encode("a<mask>xb"), (Ids{2, 104, 3}));
  // No strip: the spaces stay.
  EXPECT_EQ(t.encode("a [X] b"), (Ids{2, 1, 101, 1, 3}));
  EXPECT_EQ(t.encode("[X][X]"), (Ids{101, 101}));
  // single_word: only between non-word characters.
  EXPECT_EQ(t.encode("a <w> b"), (Ids{2, 1, 102, 1, 3}));
  EXPECT_EQ(t.encode("<w>"), (Ids{102}));
  EXPECT_EQ(t.encode("a<w>b"), (Ids{2, 4, 6, 5, 3}));
  // normalized=true matches the normalized text (no normalizer here: the exact string).
  EXPECT_EQ(t.encode("xHeLLox"), (Ids{7, 103, 7}));
  EXPECT_TRUE(t.is_special(100));
  EXPECT_FALSE(t.is_special(101));
  EXPECT_EQ(t.token_to_id("[X]"), 101);
  EXPECT_EQ(t.id_to_token(104), "<mask>x");
  // No decoder: tokens are joined with spaces; special tokens can be skipped.
  EXPECT_EQ(t.decode({2, 100, 101, 3}), "a <mask> [X] b");
  EXPECT_EQ(t.decode({2, 100, 101, 3}, true), "a [X] b");
  EXPECT_EQ(t.vocab_size(), 105);

  // With a Lowercase normalizer, the normalized token matches any casing of the text.
  Tokenizer lower = load("added_lower", char_json(R"({"type": "Lowercase"})"));
  EXPECT_EQ(lower.encode("xHELLOx"), (Ids{7, 103, 7}));
  EXPECT_EQ(lower.encode("A<mask>xA"), (Ids{2, 104, 2}));  // raw-text tokens are matched before normalizing
}

TEST(Tokenizer, AddSpecialToken) {
  Tokenizer t = load("add_special", sp_json());
  const Tokenizer before = t;
  const int32_t image = t.add_special_token("<image>");
  EXPECT_EQ(image, 269);  // the next free id
  EXPECT_EQ(t.vocab_size(), 270);
  EXPECT_TRUE(t.is_special(image));
  EXPECT_EQ(t.encode("a<image>b", false), (Ids{kSpace, kA, image, kSpace, kB}));
  EXPECT_EQ(t.decode({kSpace, kA, image, kSpace, kB}, true), "a b");
  // A copy made before is not affected.
  EXPECT_EQ(before.vocab_size(), 269);
  EXPECT_EQ(before.token_to_id("<image>"), std::nullopt);
  // A vocabulary token keeps its id (and is now split out of text whole).
  EXPECT_EQ(t.add_special_token("abc"), kABC);
  EXPECT_EQ(t.encode("xabcx", false)[2], kABC);
  // Adding again is idempotent; an explicit id must agree and be free.
  EXPECT_EQ(t.add_special_token("<image>"), image);
  EXPECT_THROW(t.add_special_token("<image>", 5), Error);
  EXPECT_THROW(t.add_special_token("<video>", kA), Error);
  EXPECT_EQ(t.add_special_token("<video>", 1000), 1000);
  EXPECT_EQ(t.vocab_size(), 1001);
  EXPECT_THROW(t.add_special_token(""), Error);
}

// ---- Pre-tokenizers ----

TEST(Tokenizer, MetaspacePrependSchemes) {
  Tokenizer always = load("ms_always", metaspace_json("always"));
  EXPECT_EQ(always.encode("hi there"), (Ids{10, 12}));
  EXPECT_EQ(always.encode("<s>hi"), (Ids{1, 10}));
  EXPECT_EQ(always.decode({10, 12}), "hi there");
  EXPECT_EQ(always.encode(""), (Ids{}));  // nothing to prepend to

  Tokenizer first = load("ms_first", metaspace_json("first"));
  EXPECT_EQ(first.encode("hi there"), (Ids{10, 12}));
  EXPECT_EQ(first.encode("<s>hi"), (Ids{1, 11}));  // not at the start of the input: no ▁
  EXPECT_EQ(first.decode({10, 12}), "hi there");

  Tokenizer never = load("ms_never", metaspace_json("never"));
  EXPECT_EQ(never.encode("hi there"), (Ids{11, 12}));
  EXPECT_EQ(never.decode({11, 12}), "hi there");
  EXPECT_EQ(never.decode({10}), " hi");

  Tokenizer whole = load("ms_nosplit", metaspace_json("always", false));
  EXPECT_EQ(whole.encode("hi there"), (Ids{15}));
}

TEST(Tokenizer, SplitBehaviours) {
  using iris::text::detail::Piece;
  using iris::text::detail::SplitBehavior;
  const Piece p{"The-final--countdown", true};
  const std::vector<std::pair<size_t, size_t>> dashes{{3, 4}, {9, 10}, {10, 11}};
  const auto run = [&](SplitBehavior b, bool invert) {
    std::vector<Piece> out;
    iris::text::detail::split_piece(p, dashes, b, invert, out);
    std::vector<std::string> s;
    for (const Piece& q : out) s.push_back(q.text);
    return s;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(run(SplitBehavior::Removed, false), (V{"The", "final", "countdown"}));
  EXPECT_EQ(run(SplitBehavior::Isolated, false), (V{"The", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(run(SplitBehavior::MergedWithPrevious, false), (V{"The-", "final-", "-", "countdown"}));
  EXPECT_EQ(run(SplitBehavior::MergedWithNext, false), (V{"The", "-final", "-", "-countdown"}));
  EXPECT_EQ(run(SplitBehavior::Contiguous, false), (V{"The", "-", "final", "--", "countdown"}));
  EXPECT_EQ(run(SplitBehavior::Removed, true), (V{"-", "-", "-"}));
  // Only the first part keeps "at start of input".
  std::vector<Piece> out;
  iris::text::detail::split_piece(p, dashes, SplitBehavior::Isolated, false, out);
  EXPECT_TRUE(out[0].at_start);
  EXPECT_FALSE(out[1].at_start);
}

TEST(Tokenizer, ByteLevelPreTokenizer) {
  // GPT-2 style: prefix space, the GPT-2 regex, bytes mapped to characters.
  Tokenizer t = load("bytelevel", byte_level_json(
                                      R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true})"));
  EXPECT_EQ(t.encode("ab a"), (Ids{257, 256}));  // " ab" " a"
  EXPECT_EQ(t.decode({257, 256}), " ab a");
  EXPECT_EQ(t.encode(""), (Ids{}));
  const std::string text = "é😀 x\n";
  const Ids ids = t.encode(text, false);
  EXPECT_EQ(ids.size(), 1u + 2 + 4 + 2 + 1);  // Ġ, é (2 bytes), 😀 (4 bytes), Ġx, \n
  EXPECT_EQ(t.decode(ids), " " + text);
  // A broken byte sequence decodes to U+FFFD, as Rust's from_utf8_lossy does.
  EXPECT_EQ(t.decode({0xF0, 0x9F, 'a'}), "\xEF\xBF\xBD" "a");

  // A Split regex with Isolated digits, then ByteLevel without its own regex (the Llama-3 arrangement).
  Tokenizer s = load("split_digits", byte_level_json(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{N}{1,2}"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})"));
  EXPECT_EQ(s.encode("12312"), (Ids{258, '3', '1', '2'}));  // "12" "31" "2": only "12" is a merge
  Tokenizer d = load("digits", byte_level_json(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Digits", "individual_digits": true},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})"));
  EXPECT_EQ(d.encode("a12"), (Ids{'a', '1', '2'}));
  Tokenizer w = load("whitespace", byte_level_json(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Whitespace"}, {"type": "ByteLevel", "add_prefix_space": true, "use_regex": false}]})"));
  EXPECT_EQ(w.encode("a  ab!"), (Ids{256, 257, ' ', '!'}));  // "Ġa" "Ġab" "Ġ!" (Ġ is the token of byte 0x20)
}

// ---- Streaming ----

TEST(Tokenizer, StreamDecoderMultiByteAndByteFallback) {
  Tokenizer t = load("stream", sp_json());
  const std::string text = "ab 😀c é";
  const Ids ids = t.encode(text);
  std::vector<std::string> pieces;
  StreamDecoder sd(t, true);
  std::string all;
  for (int32_t id : ids) {
    pieces.push_back(sd.push(id));
    EXPECT_EQ(iris::text::detail::utf8_invalid_at(pieces.back()), std::string::npos);
    EXPECT_EQ(pieces.back().find("\xEF\xBF\xBD"), std::string::npos) << "emitted an incomplete character";
    all += pieces.back();
  }
  all += sd.flush();
  EXPECT_EQ(all, t.decode(ids, true, false));
  EXPECT_EQ(all, text);
  // The emoji's four byte tokens give nothing until the last one.
  StreamDecoder sd2(t, false);
  EXPECT_EQ(sd2.push(kSpace), "");  // the leading ▁ is stripped from the first token
  EXPECT_EQ(sd2.push(byte_id(0xF0)), "");
  EXPECT_EQ(sd2.push(byte_id(0x9F)), "");
  EXPECT_EQ(sd2.push(byte_id(0x98)), "");
  EXPECT_EQ(sd2.push(byte_id(0x80)), "😀");
  EXPECT_EQ(sd2.push(kSpace), " ");  // not the first token any more: its space is kept
  EXPECT_EQ(sd2.push(kA), "a");
  EXPECT_EQ(sd2.flush(), "");
  // An unfinished sequence comes out at flush as decode() gives it.
  StreamDecoder sd3(t, false);
  EXPECT_EQ(sd3.push(kA), "a");
  EXPECT_EQ(sd3.push(byte_id(0xE5)), "");
  EXPECT_EQ(sd3.flush(), "\xEF\xBF\xBD");
}

// ---- JSONL ----

TEST(Tokenizer, TokenizeJsonl) {
  Tokenizer t = load("jsonl", sp_json());
  std::istringstream in("{\"text\": \"ab\"}\n\n{\"text\": \"c\", \"id\": 7}\r\n");
  std::ostringstream out;
  iris::text::tokenize_jsonl(in, out, t, true);
  EXPECT_EQ(out.str(), "{\"ids\":[1,259,263]}\n{\"ids\":[1,259,262]}\n");

  std::istringstream bad("{\"text\": \"ab\"}\n{\"text\": \"ab\"\n");
  std::ostringstream out2;
  try {
    iris::text::tokenize_jsonl(bad, out2, t, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(out2.str(), "{\"ids\":[259,263]}\n");
  std::istringstream no_text("{\"txt\": \"ab\"}\n");
  EXPECT_THROW(iris::text::tokenize_jsonl(no_text, out2, t, false), Error);
}

// ---- Config and folders ----

TEST(Tokenizer, ConfigTemplatesAndEos) {
  const std::string dir = iris::test::temp_dir() + "/model_dir";
  write_temp("model_dir/tokenizer.json", sp_json());
  write_temp("model_dir/tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
    "clean_up_tokenization_spaces": true,
    "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  Tokenizer t = Tokenizer::from_dir(dir);
  EXPECT_EQ(t.chat_template(), "D");
  EXPECT_EQ(t.eos_ids(), Ids{2});
  EXPECT_EQ(t.eos_token(), "</s>");
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_TRUE(t.clean_up_spaces_default());
  EXPECT_EQ(t.decode(t.encode("a , b", false)), "a, b");
  EXPECT_EQ(t.decode(t.encode("a , b", false), false, false), "a , b");

  write_temp("model_dir/chat_template.jinja", "J");
  write_temp("model_dir/generation_config.json", R"({"eos_token_id": [2, 0]})");
  Tokenizer t2 = Tokenizer::from_dir(dir);
  EXPECT_EQ(t2.chat_template(), "J");
  EXPECT_EQ(t2.eos_ids(), (Ids{2, 0}));

  // transformers' Llama tokenizers rebuild the template from add_bos_token / add_eos_token.
  Tokenizer llama = load("llama_cfg", sp_json(),
                         R"({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                             "add_bos_token": true, "add_eos_token": true})");
  EXPECT_EQ(llama.encode("ab"), (Ids{1, kSpace, kAB, 2}));
  Tokenizer no_bos = load("llama_nobos", sp_json(),
                          R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "add_bos_token": false})");
  EXPECT_EQ(no_bos.encode("ab"), (Ids{kSpace, kAB}));
  // Other classes keep tokenizer.json's post-processor.
  Tokenizer other = load("other_cfg", sp_json(), R"({"tokenizer_class": "PreTrainedTokenizerFast",
                                                     "add_bos_token": false})");
  EXPECT_EQ(other.encode("ab"), (Ids{1, kSpace, kAB}));
}

TEST(Tokenizer, CleanUpTokenization) {
  EXPECT_EQ(iris::text::clean_up_tokenization("Hi , I 'm here . Is it ? Yes ! don 't"),
            "Hi, I'm here. Is it? Yes! don 't");
  EXPECT_EQ(iris::text::clean_up_tokenization("they 're , we 've , it 's , do n't , a ' b"),
            "they're, we've, it's, don't, a'b");
}

// ---- Bad input ----

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Tokenizer, BadFiles) {
  const std::string missing = iris::test::temp_dir() + "/nope/tokenizer.json";
  EXPECT_NE(error_of([&] { Tokenizer::from_files(missing); }).find(missing), std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_dir(iris::test::temp_dir() + "/nope"); }).find("nope"),
            std::string::npos);

  const std::string bad_json = write_temp("bad1/tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  const std::string e1 = error_of([&] { Tokenizer::from_files(bad_json); });
  EXPECT_NE(e1.find("malformed JSON"), std::string::npos) << e1;
  EXPECT_NE(e1.find(bad_json), std::string::npos) << e1;

  const std::string unigram =
      write_temp("bad2/tokenizer.json", R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
  const std::string e2 = error_of([&] { Tokenizer::from_files(unigram); });
  EXPECT_NE(e2.find("Unigram"), std::string::npos) << e2;
  EXPECT_NE(e2.find(unigram), std::string::npos) << e2;

  const std::string e3 = error_of([&] { load("bad3", replace(sp_json(), "\"Prepend\"", "\"Precompiled\"")); });
  EXPECT_NE(e3.find("normalizer type 'Precompiled'"), std::string::npos) << e3;
  const std::string e4 = error_of([&] { load("bad4", replace(sp_json(), "\"ByteFallback\"", "\"CTC\"")); });
  EXPECT_NE(e4.find("decoder type 'CTC'"), std::string::npos) << e4;
  const std::string e5 = error_of([&] { load("bad5", sp_json(R"(["a z"])")); });
  EXPECT_NE(e5.find("merge #0"), std::string::npos) << e5;
  const std::string e6 = error_of([&] { load("bad6", sp_json(R"(["a b c"])")); });
  EXPECT_NE(e6.find("merge #0"), std::string::npos) << e6;
  const std::string e7 = error_of([&] {
    load("bad7", replace(sp_json(), "\"pre_tokenizer\": null", "\"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}"));
  });
  EXPECT_NE(e7.find("pre_tokenizer type 'UnicodeScripts'"), std::string::npos) << e7;
  const std::string e8 = error_of([&] {
    load("bad8", replace(sp_json(), "\"pre_tokenizer\": null",
                         R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"})"));
  });
  EXPECT_NE(e8.find("cannot compile regex"), std::string::npos) << e8;
  const std::string e9 = error_of([&] { load("bad9", sp_json(), "{ nope"); });
  EXPECT_NE(e9.find("tokenizer_config.json"), std::string::npos) << e9;

  Tokenizer t = load("bad_text", sp_json());
  const std::string e10 = error_of([&] { t.encode("ab\xC3("); });
  EXPECT_NE(e10.find("not valid UTF-8 at byte 2"), std::string::npos) << e10;
  EXPECT_THROW(t.id_to_token(5000), Error);
}

}  // namespace
