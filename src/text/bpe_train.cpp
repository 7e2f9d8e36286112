// Byte-level BPE training: pre-token counting (through the loader's own Split pre-tokenizer, so training and
// encoding cut text identically), the merge loop with incremental pair counts, and the Hugging Face files.
//
// The merge loop keeps, for every adjacent pair of symbols, its count over the corpus (each distinct pre-token
// weighted by its occurrences) and the pre-tokens it occurs in. Merging (a, b) into c rewrites only the
// pre-tokens listed for (a, b), and only pairs that touch c can appear, so one merge costs the size of the
// pre-tokens it changes rather than a recount of the corpus. The best pair comes from a max-heap with lazy
// deletion: an entry whose count is no longer the pair's count is stale and skipped; every count change pushes a
// fresh entry.
#include "text/bpe_train.h"

#include <algorithm>
#include <queue>

#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "text/conversation.h"
#include "text/tok_internal.h"

namespace iris::text {

namespace {

using detail::Json;
using OJson = nlohmann::ordered_json;

constexpr int32_t kNumSpecial = 4;
constexpr int32_t kFirstByte = kNumSpecial;  // byte b is token kFirstByte + b

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
int32_t key_left(uint64_t k) { return int32_t(k >> 32); }
int32_t key_right(uint64_t k) { return int32_t(k & 0xFFFFFFFFu); }

Json split_pre_tokenizer_json() {
  return Json{{"type", "Split"}, {"pattern", {{"Regex", bpe_split_pattern()}}}, {"behavior", "Isolated"},
              {"invert", false}};
}

// The specials as added tokens (and as tokenizer_config's added_tokens_decoder entries, which omit the id).
template <typename J>
J added_token_json(const std::string& content, int32_t id, bool with_id) {
  J t = J::object();
  if (with_id) t["id"] = id;
  t["content"] = content;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = true;
  return t;
}

}  // namespace

const std::vector<std::string>& bpe_special_tokens() {
  static const std::vector<std::string> tokens = {kBpeBos, kBpeEos, kBpePad, kBpeImage};
  return tokens;
}

const std::string& bpe_split_pattern() {
  static const std::string pattern = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
                                     R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  return pattern;
}

// ---- Counting ----

BpeTrainer::BpeTrainer(const BpeTrainOptions& options) : opt_(options) {
  IRIS_CHECK(opt_.vocab_size >= kBpeMinVocab, "bpe: vocabulary size ", opt_.vocab_size, " is too small: the ",
             kNumSpecial, " special tokens and the 256 byte tokens need at least ", kBpeMinVocab);
  IRIS_CHECK(opt_.vocab_size <= INT32_MAX, "bpe: vocabulary size ", opt_.vocab_size, " is too large");
  IRIS_CHECK(opt_.min_frequency >= 1, "bpe: min frequency must be >= 1, got ", opt_.min_frequency);
  pre_tokenizer_ = detail::make_pre_tokenizer(split_pre_tokenizer_json(), "bpe trainer");
}

BpeTrainer::~BpeTrainer() = default;
BpeTrainer::BpeTrainer(BpeTrainer&&) noexcept = default;
BpeTrainer& BpeTrainer::operator=(BpeTrainer&&) noexcept = default;

void BpeTrainer::add_document(std::string_view text) {
  const size_t bad = detail::utf8_invalid_at(text);
  IRIS_CHECK(bad == std::string_view::npos, "bpe: text is not valid UTF-8 at byte ", bad);
  ++documents_;
  bytes_ += int64_t(text.size());
  // Split out the special tokens (leftmost, longest first) as the tokenizer's added-token matcher does.
  const std::vector<std::string>& specials = bpe_special_tokens();
  size_t start = 0, pos = 0;
  while ((pos = text.find('<', pos)) != std::string_view::npos) {
    size_t len = 0;
    for (const std::string& s : specials) {
      if (s.size() > len && text.compare(pos, s.size(), s) == 0) len = s.size();
    }
    if (len == 0) {
      ++pos;
      continue;
    }
    count_pre_tokens(text.substr(start, pos - start));
    pos += len;
    start = pos;
  }
  count_pre_tokens(text.substr(start));
}

void BpeTrainer::count_pre_tokens(std::string_view text) {
  if (text.empty()) return;
  std::vector<detail::Piece> pieces{detail::Piece{std::string(text), true}};
  pre_tokenizer_->pre_tokenize(pieces);
  for (detail::Piece& p : pieces) {
    ++pre_tokens_;
    auto it = words_.find(p.text);
    if (it != words_.end())
      ++it->second;
    else
      words_.emplace(std::move(p.text), 1);
  }
}

// ---- Merging ----

BpeTrainResult BpeTrainer::train() const {
  BpeTrainResult r;
  for (const std::string& s : bpe_special_tokens()) r.tokens.push_back(s);
  std::unordered_map<std::string, int32_t> index;  // bytes -> id of the byte and merged tokens
  for (int b = 0; b < 256; ++b) {
    r.tokens.emplace_back(1, char(b));
    index.emplace(r.tokens.back(), kFirstByte + b);
  }

  // The distinct pre-tokens in byte order, so that everything below is independent of hash order.
  std::vector<std::pair<std::string_view, int64_t>> sorted(words_.begin(), words_.end());
  std::sort(sorted.begin(), sorted.end());
  struct Word {
    std::vector<int32_t> syms;
    int64_t count;
  };
  std::vector<Word> words(sorted.size());
  std::unordered_map<uint64_t, int64_t> counts;              // pair -> occurrences
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words it may occur in (a superset)
  for (size_t w = 0; w < sorted.size(); ++w) {
    Word& word = words[w];
    word.count = sorted[w].second;
    for (char c : sorted[w].first) word.syms.push_back(kFirstByte + (unsigned char)c);
    for (size_t k = 0; k + 1 < word.syms.size(); ++k) {
      const uint64_t key = pair_key(word.syms[k], word.syms[k + 1]);
      counts[key] += word.count;
      std::vector<int32_t>& list = where[key];
      if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
    }
  }

  struct Entry {
    int64_t count;
    uint64_t key;
  };
  // Lower priority: fewer occurrences, or as many and a lexicographically larger (left, right) byte pair.
  const auto lower = [&r](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    const std::string& xl = r.tokens[size_t(key_left(x.key))];
    const std::string& yl = r.tokens[size_t(key_left(y.key))];
    if (xl != yl) return xl > yl;
    return r.tokens[size_t(key_right(x.key))] > r.tokens[size_t(key_right(y.key))];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower)> heap(lower);
  for (const auto& [key, n] : counts) heap.push({n, key});

  std::unordered_map<uint64_t, int64_t> delta;
  std::vector<int32_t> rewritten;
  while (r.vocab_size() < opt_.vocab_size) {
    bool found = false;
    Entry top{};
    while (!heap.empty()) {
      top = heap.top();
      heap.pop();
      const auto it = counts.find(top.key);
      if (it != counts.end() && it->second == top.count) {
        found = true;
        break;
      }
    }
    if (!found || top.count < opt_.min_frequency) {
      r.stop_reason = str_cat("no pair reaches the minimum frequency ", opt_.min_frequency);
      return r;
    }
    const int32_t a = key_left(top.key), b = key_right(top.key);
    std::string merged = r.tokens[size_t(a)] + r.tokens[size_t(b)];
    int32_t c;
    if (const auto it = index.find(merged); it != index.end()) {
      c = it->second;  // another pair already made this string: the merge is recorded, the vocabulary keeps size
    } else {
      c = int32_t(r.tokens.size());
      index.emplace(merged, c);
      r.tokens.push_back(std::move(merged));
    }
    r.merges.push_back({a, b, c, top.count});

    // Rewrite every word that holds (a, b), left to right without overlaps (the order encoding merges in).
    std::vector<int32_t> ws = std::move(where[top.key]);
    where.erase(top.key);
    std::sort(ws.begin(), ws.end());
    ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
    delta.clear();
    for (int32_t w : ws) {
      Word& word = words[size_t(w)];
      const std::vector<int32_t>& syms = word.syms;
      rewritten.clear();
      bool changed = false;
      for (size_t k = 0; k < syms.size(); ++k) {
        if (k + 1 < syms.size() && syms[k] == a && syms[k + 1] == b) {
          rewritten.push_back(c);
          ++k;
          changed = true;
        } else {
          rewritten.push_back(syms[k]);
        }
      }
      if (!changed) continue;  // a stale listing
      for (size_t k = 0; k + 1 < syms.size(); ++k) delta[pair_key(syms[k], syms[k + 1])] -= word.count;
      for (size_t k = 0; k + 1 < rewritten.size(); ++k) {
        const uint64_t key = pair_key(rewritten[k], rewritten[k + 1]);
        delta[key] += word.count;
        if (rewritten[k] == c || rewritten[k + 1] == c) {  // only pairs with c are new to this word
          std::vector<int32_t>& list = where[key];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
      word.syms.swap(rewritten);
    }
    for (const auto& [key, d] : delta) {
      if (d == 0) continue;
      const int64_t n = counts[key] += d;
      IRIS_ASSERT(n >= 0);
      if (n == 0) {
        counts.erase(key);
        where.erase(key);
      } else {
        heap.push({n, key});
      }
    }
    IRIS_ASSERT(!counts.count(top.key));
  }
  r.stop_reason = "vocabulary size reached";
  return r;
}

// ---- Hugging Face files ----

std::string bpe_tokenizer_json(const BpeTrainResult& result) {
  const std::vector<std::string>& specials = bpe_special_tokens();
  IRIS_CHECK(result.tokens.size() >= size_t(kBpeMinVocab), "bpe: a trained vocabulary has at least ", kBpeMinVocab,
             " tokens, got ", result.tokens.size());
  for (size_t i = 0; i < specials.size(); ++i)
    IRIS_CHECK(result.tokens[i] == specials[i], "bpe: token ", i, " must be ", specials[i]);

  OJson j = OJson::object();
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  OJson added = OJson::array();
  for (size_t i = 0; i < specials.size(); ++i) added.push_back(added_token_json<OJson>(specials[i], int32_t(i), true));
  j["added_tokens"] = std::move(added);
  j["normalizer"] = nullptr;  // no NFC: any UTF-8 text decodes back to itself
  // The same Split the trainer counted with (bpe_split_pattern()).
  OJson split_o = OJson::object();
  split_o["type"] = "Split";
  split_o["pattern"] = {{"Regex", bpe_split_pattern()}};
  split_o["behavior"] = "Isolated";
  split_o["invert"] = false;
  OJson byte_level = OJson::object();
  byte_level["type"] = "ByteLevel";
  byte_level["add_prefix_space"] = false;
  byte_level["trim_offsets"] = false;
  byte_level["use_regex"] = false;
  OJson pre = OJson::object();
  pre["type"] = "Sequence";
  pre["pretokenizers"] = OJson::array({split_o, byte_level});
  j["pre_tokenizer"] = std::move(pre);

  // <s> before the sequence (before each of a pair), no EOS: Llama-3's post-processor.
  const auto special_item = [](const std::string& id, int type_id) {
    OJson inner = OJson::object();
    inner["id"] = id;
    inner["type_id"] = type_id;
    OJson item = OJson::object();
    item["SpecialToken"] = std::move(inner);
    return item;
  };
  const auto sequence_item = [](const std::string& id, int type_id) {
    OJson inner = OJson::object();
    inner["id"] = id;
    inner["type_id"] = type_id;
    OJson item = OJson::object();
    item["Sequence"] = std::move(inner);
    return item;
  };
  OJson post = OJson::object();
  post["type"] = "TemplateProcessing";
  post["single"] = OJson::array({special_item(kBpeBos, 0), sequence_item("A", 0)});
  post["pair"] = OJson::array(
      {special_item(kBpeBos, 0), sequence_item("A", 0), special_item(kBpeBos, 1), sequence_item("B", 1)});
  OJson bos = OJson::object();
  bos["id"] = kBpeBos;
  bos["ids"] = OJson::array({0});
  bos["tokens"] = OJson::array({kBpeBos});
  post["special_tokens"] = OJson::object();
  post["special_tokens"][kBpeBos] = std::move(bos);
  j["post_processor"] = std::move(post);
  j["decoder"] = byte_level;

  OJson model = OJson::object();
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  // The specials are in the vocabulary too (as the library's own trainer writes them), so that every loader
  // gives them these ids rather than appending them after the vocabulary.
  OJson vocab = OJson::object();
  std::vector<std::string> names(result.tokens.size());
  for (size_t id = 0; id < result.tokens.size(); ++id) {
    names[id] = id < specials.size() ? result.tokens[id] : detail::byte_level_encode(result.tokens[id]);
    IRIS_CHECK(!vocab.contains(names[id]), "bpe: token '", names[id], "' appears twice in the vocabulary");
    vocab[names[id]] = int32_t(id);
  }
  model["vocab"] = std::move(vocab);
  // "a b" strings: byte-level tokens never hold a space (it is "Ġ"), and every library version reads this form.
  OJson merges = OJson::array();
  for (const BpeMerge& m : result.merges) {
    IRIS_CHECK(m.left >= kFirstByte && m.right >= kFirstByte && size_t(m.left) < names.size() &&
                   size_t(m.right) < names.size() && size_t(m.merged) < names.size(),
               "bpe: merge of tokens ", m.left, " and ", m.right, " is out of range");
    merges.push_back(names[size_t(m.left)] + " " + names[size_t(m.right)]);
  }
  model["merges"] = std::move(merges);
  j["model"] = std::move(model);
  return j.dump(2) + "\n";
}

std::string bpe_tokenizer_config_json(int64_t model_max_length) {
  IRIS_CHECK(model_max_length >= 1, "bpe: model_max_length must be >= 1, got ", model_max_length);
  const std::vector<std::string>& specials = bpe_special_tokens();
  // Sorted keys, as transformers' save_pretrained writes them.
  Json cfg = Json::object();
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  Json decoder = Json::object();
  for (size_t i = 0; i < specials.size(); ++i)
    decoder[std::to_string(i)] = added_token_json<Json>(specials[i], int32_t(i), false);
  cfg["added_tokens_decoder"] = std::move(decoder);
  cfg["additional_special_tokens"] = Json::array({kBpeImage});
  cfg["bos_token"] = kBpeBos;
  cfg["chat_template"] = llava15_chat_template();
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["eos_token"] = kBpeEos;
  cfg["model_input_names"] = Json::array({"input_ids", "attention_mask"});
  cfg["model_max_length"] = model_max_length;
  cfg["pad_token"] = kBpePad;
  cfg["padding_side"] = "right";
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  return cfg.dump(2) + "\n";
}

std::string bpe_special_tokens_map_json() {
  const auto token = [](const char* content) {
    return Json{{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false},
                {"single_word", false}};
  };
  Json m = Json::object();
  m["additional_special_tokens"] = Json::array({kBpeImage});
  m["bos_token"] = token(kBpeBos);
  m["eos_token"] = token(kBpeEos);
  m["pad_token"] = token(kBpePad);
  return m.dump(2) + "\n";
}

}  // namespace iris::text
