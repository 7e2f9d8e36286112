// Internals of the tokenizer shared by the tok_*.cpp files: UTF-8 and Unicode helpers, the PCRE2 wrapper, and the
// pipeline components (normalizers, pre-tokenizers, BPE model, post-processors, decoders) built from tokenizer.json.
// Each component mirrors one type of the Hugging Face `tokenizers` library, without offsets (iris needs ids only).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

struct pcre2_real_code_8;

namespace iris::text::detail {

using Json = nlohmann::json;

// ---- UTF-8 and Unicode (tok_unicode.cpp) ----

// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated), or npos.
size_t utf8_invalid_at(std::string_view s);
// Length of the UTF-8 sequence starting with `lead` (1 for a stray byte, so loops always advance).
inline size_t utf8_seq_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : lead < 0xF8 ? 4 : 1;
}
// Decodes the code point at s[i] (s valid UTF-8) and advances i.
uint32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, uint32_t cp);
// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

bool is_white_space(uint32_t cp);  // the Unicode White_Space property (Rust char::is_whitespace, regex \s)
bool is_numeric(uint32_t cp);      // general category Nd, Nl or No (Rust char::is_numeric)
bool is_punctuation(uint32_t cp);  // ASCII punctuation or general category P*
bool is_word_char(uint32_t cp);    // regex \w: letters, marks, decimal digits, connector punctuation
bool is_mark_nonspacing(uint32_t cp);

enum class NormForm { NFC, NFD, NFKC, NFKD };
std::string unicode_normalize(std::string_view s, NormForm form);
std::string unicode_lowercase(std::string_view s);

// GPT-2's reversible byte -> printable character map ("Ġ" is the space byte), as UTF-8 strings.
const std::array<std::string, 256>& byte_to_unicode();
// The byte a mapped character stands for, or -1.
int unicode_to_byte(uint32_t cp);
// Maps every byte of s through byte_to_unicode().
std::string byte_level_encode(std::string_view s);

// ---- Regex (tok_regex.cpp) ----

// A PCRE2 pattern compiled with UTF|UCP and JIT. `\s` is rewritten to the White_Space set so that it agrees with
// Oniguruma/Rust (PCRE2's \s also takes U+180E). Immutable after construction, so shareable across threads.
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends the [start, end) byte ranges of successive non-overlapping matches (an empty match advances one char).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  pcre2_real_code_8* code_ = nullptr;
};

// A literal or regex pattern as tokenizer.json writes it: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;  // set for {"Regex": ...}
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
};
Pattern parse_pattern(const Json& j, const std::string& where);
// Replaces every match of `pat` in s with `content`.
std::string replace_all(std::string_view s, const Pattern& pat, std::string_view content);
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// ---- Common JSON accessors (tok_regex.cpp) ----

// Field `key` of object `j`, or throws naming `where` (the file and component).
const Json& json_field(const Json& j, const char* key, const std::string& where);
std::string json_string(const Json& j, const char* key, const std::string& where);
bool json_bool(const Json& j, const char* key, bool fallback, const std::string& where);
std::string json_type(const Json& j, const std::string& where);

// ---- Normalizers (tok_normalize.cpp) ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};
// Null JSON gives nullptr. `file` is named in errors.
std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& file);

// ---- Pre-tokenizers (tok_pretok.cpp) ----

// A piece of text on its way to the model. at_start: it begins at offset 0 of the original input (Metaspace's
// "first" prepend scheme only adds the ▁ there).
struct Piece {
  std::string text;
  bool at_start = false;
};

// How the pieces between and at pattern matches are kept (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
SplitBehavior parse_split_behavior(const std::string& name, const std::string& where);
// Splits `p` at the given sorted, non-overlapping matches; appends the non-empty parts to `out`.
void split_piece(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
                 bool invert, std::vector<Piece>& out);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces the pieces with their splits (in order; empty pieces are dropped).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const;
  // Splits one piece; the default pre_tokenize applies it to each piece.
  virtual void split(const Piece& p, std::vector<Piece>& out) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& file);
// Metaspace settings shared by the Metaspace decoder: whether a ▁ is prepended (scheme not "never"), and the
// replacement character.
bool metaspace_prepends(const Json& j, const std::string& where);
std::string metaspace_replacement(const Json& j, const std::string& where);

// ---- BPE model (tok_bpe.cpp) ----

class BpeModel {
 public:
  BpeModel(const Json& model, const std::string& file);
  // Appends the ids of one pre-token.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when no token has this id
  int32_t vocab_size() const { return int32_t(vocab_r_.size()); }  // max id + 1

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  Vocab vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left, right) -> (rank, merged id)
  std::string unk_token_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // "<0xNN>" ids for byte fallback, -1 where missing

  // Pre-token -> ids. Pre-tokens repeat a lot in natural text, and merging is the costly step.
  static constexpr size_t kCacheMaxWordBytes = 256, kCacheCapacity = 20000;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

// ---- Post-processors (tok_decode.cpp) ----

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
  // The special tokens put before / after the sequence (for bos_id()).
  virtual std::vector<std::pair<std::string, int32_t>> prefix_tokens() const { return {}; }
};
std::unique_ptr<PostProcessor> make_post_processor(const Json& j, const std::string& file);
// TemplateProcessing "bos $A eos" as transformers' LlamaTokenizerFast.update_post_processor builds it.
std::unique_ptr<PostProcessor> make_bos_eos_processor(std::optional<std::pair<std::string, int32_t>> bos,
                                                      std::optional<std::pair<std::string, int32_t>> eos);

// ---- Decoders (tok_decode.cpp) ----

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& file);

// ---- Added tokens (tokenizer.cpp) ----

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Leftmost-longest matcher over the added tokens' contents (a byte trie, like aho-corasick's LeftmostLongest).
class TokenMatcher {
 public:
  void add(std::string_view pattern, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest pattern starting at s[pos]: (length, value), or (0, -1).
  std::pair<size_t, int32_t> longest_at(std::string_view s, size_t pos) const;
  // First position >= pos where some pattern could start (npos when none).
  size_t next_candidate(std::string_view s, size_t pos) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // sorted by byte
    int32_t value = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
  std::array<bool, 256> first_{};
};

struct AddedVocab {
  std::vector<AddedToken> tokens;  // special ones first, then the others, each in file order (the library's order)
  std::unordered_map<std::string, size_t> by_content;
  std::unordered_map<int32_t, size_t> by_id;
  TokenMatcher raw;         // tokens with normalized=false, matched on the raw text
  TokenMatcher normalized;  // tokens with normalized=true, matched (in normalized form) on normalized text
};

struct Pipeline {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
};

}  // namespace iris::text::detail
