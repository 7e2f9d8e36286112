// The BPE model of tokenizer.json: vocabulary, ranked merges (as "a b" strings or ["a", "b"] pairs), byte fallback,
// unknown-token fusing, ignore_merges and subword prefix/suffix, with the reference library's merge order: the pair
// of lowest rank first, ties broken by position, using a heap over a linked list of symbols (O(n log n), since
// SentencePiece-style tokenizers run BPE over whole texts without a pre-tokenizer).
#include <algorithm>
#include <cstdio>

#include "tensor/error.h"
#include "text/tok_internal.h"

namespace iris::text::detail {

namespace {

std::string optional_string(const Json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return "";
  IRIS_CHECK(j[key].is_string(), where, ": field '", key, "' must be a string or null, got ", j[key].dump());
  return j[key].get<std::string>();
}

}  // namespace

BpeModel::BpeModel(const Json& model, const std::string& file) {
  const std::string where = file + ": model";
  const std::string type = model.contains("type") ? json_string(model, "type", where) : "BPE";
  IRIS_CHECK(type == "BPE", file, ": unsupported model type '", type, "' (only BPE is supported)");

  const Json& vocab = json_field(model, "vocab", where);
  IRIS_CHECK(vocab.is_object(), where, ": 'vocab' must be an object of token -> id");
  vocab_.reserve(vocab.size());
  int32_t max_id = -1;
  for (const auto& [token, id_json] : vocab.items()) {
    IRIS_CHECK(id_json.is_number_integer() && id_json.get<int64_t>() >= 0 && id_json.get<int64_t>() < INT32_MAX,
               where, ": id of token '", token, "' must be a non-negative integer, got ", id_json.dump());
    const int32_t id = id_json.get<int32_t>();
    vocab_.emplace(token, id);
    max_id = std::max(max_id, id);
  }
  vocab_r_.resize(size_t(max_id + 1));
  has_id_.assign(size_t(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    vocab_r_[size_t(id)] = token;
    has_id_[size_t(id)] = true;
  }

  continuing_subword_prefix_ = optional_string(model, "continuing_subword_prefix", where);
  end_of_word_suffix_ = optional_string(model, "end_of_word_suffix", where);
  fuse_unk_ = json_bool(model, "fuse_unk", false, where);
  byte_fallback_ = json_bool(model, "byte_fallback", false, where);
  ignore_merges_ = json_bool(model, "ignore_merges", false, where);
  const std::string unk = optional_string(model, "unk_token", where);
  if (!unk.empty()) {
    unk_token_ = unk;
    if (auto id = token_to_id(unk)) unk_id_ = *id;  // a missing one is an error only when an unknown char appears
  }
  // "dropout" only matters for training (it randomly skips merges); inference never drops.

  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto id = token_to_id(name);
    byte_ids_[size_t(b)] = id ? *id : -1;
  }

  const Json& merges = json_field(model, "merges", where);
  IRIS_CHECK(merges.is_array(), where, ": 'merges' must be an array");
  merges_.reserve(merges.size());
  const size_t prefix_len = continuing_subword_prefix_.size();
  std::string a, b, merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& m = merges[rank];
    if (m.is_string()) {
      // Legacy form "a b": exactly one space, since tokens of such files never contain one.
      const std::string& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      IRIS_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, where, ": merge #", rank,
                 " '", s, "' must be two tokens separated by one space");
      a.assign(s, 0, sp);
      b.assign(s, sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      throw Error(str_cat(where, ": merge #", rank, " must be \"a b\" or [\"a\", \"b\"], got ", m.dump()));
    }
    const auto a_id = token_to_id(a), b_id = token_to_id(b);
    IRIS_CHECK(a_id, where, ": merge #", rank, ": token '", a, "' is not in the vocabulary");
    IRIS_CHECK(b_id, where, ": merge #", rank, ": token '", b, "' is not in the vocabulary");
    IRIS_CHECK(b.size() >= prefix_len, where, ": merge #", rank, ": token '", b,
               "' is shorter than the continuing_subword_prefix");
    merged = a;
    merged.append(b, prefix_len);
    const auto merged_id = token_to_id(merged);
    IRIS_CHECK(merged_id, where, ": merge #", rank, ": merged token '", merged, "' is not in the vocabulary");
    // A repeated pair takes the later rank, as the library's map collection does.
    merges_[pair_key(*a_id, *b_id)] = {int32_t(rank), *merged_id};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= vocab_r_.size() || !has_id_[size_t(id)]) return nullptr;
  return &vocab_r_[size_t(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    // A pre-token that is itself a token is taken whole (Llama-3), even where the merges would split it.
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + long(first), out.end()));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the linked list; -1 at the ends
    bool alive;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  const auto add = [&](int32_t id) {
    const int32_t n = int32_t(syms.size());
    syms.push_back({id, n - 1, -1, true});
    if (n > 0) syms[size_t(n - 1)].next = n;
  };

  // 1. One symbol per character (or per byte with byte fallback, or an unknown token).
  const bool affixes = !continuing_subword_prefix_.empty() || !end_of_word_suffix_.empty();
  int32_t pending_unk = -1;  // an unknown run not yet emitted (so consecutive ones can fuse), or -1
  std::string scratch;
  size_t i = 0;
  while (i < word.size()) {
    const size_t start = i;
    i += std::min(utf8_seq_len((unsigned char)word[i]), word.size() - i);
    std::string_view piece = word.substr(start, i - start);
    if (affixes) {
      scratch.clear();
      if (start > 0) scratch += continuing_subword_prefix_;
      scratch += piece;
      if (i == word.size()) scratch += end_of_word_suffix_;
      piece = scratch;
    }
    if (const auto id = token_to_id(piece)) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : piece) all = all && byte_ids_[(unsigned char)c] >= 0;
      if (all) {
        // (A pending unknown run is emitted after these bytes, as the library does.)
        for (char c : piece) add(byte_ids_[(unsigned char)c]);
        continue;
      }
    }
    if (!unk_token_.empty()) {
      IRIS_CHECK(unk_id_, "tokenizer: unk_token '", unk_token_, "' is not in the vocabulary");
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      if (pending_unk < 0 || !fuse_unk_) pending_unk = *unk_id_;
    }
    // Without an unk_token the character is dropped, as in the library.
  }
  if (pending_unk >= 0) add(pending_unk);

  // 2. Merge the lowest-ranked adjacent pair until none is left. Heap entries go stale when a neighbour merges;
  // they are recognised by re-checking the pair at pop time.
  struct Cand {
    int32_t rank, pos, new_id;
  };
  const auto later = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::vector<Cand> heap;
  heap.reserve(syms.size());
  const auto find_merge = [&](int32_t left, int32_t right) -> const std::pair<int32_t, int32_t>* {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < syms.size(); ++k) {
    if (const auto* m = find_merge(syms[k].id, syms[k + 1].id)) heap.push_back({m->first, int32_t(k), m->second});
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand top = heap.back();
    heap.pop_back();
    Symbol& left = syms[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[size_t(left.next)];
    const auto* m = find_merge(left.id, right.id);
    if (!m || m->second != top.new_id) continue;  // stale: this pair no longer exists here
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) syms[size_t(left.next)].prev = top.pos;
    if (left.prev >= 0) {
      if (const auto* pm = find_merge(syms[size_t(left.prev)].id, left.id)) {
        heap.push_back({pm->first, left.prev, pm->second});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (left.next >= 0) {
      if (const auto* nm = find_merge(left.id, syms[size_t(left.next)].id)) {
        heap.push_back({nm->first, top.pos, nm->second});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (const Symbol& s : syms) {
    if (s.alive) out.push_back(s.id);
  }
}

}  // namespace iris::text::detail
