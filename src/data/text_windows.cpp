// TextWindowLoader: tokenize, pack, cut, serve in a seeded order.
#include "data/text_windows.h"

#include <algorithm>

#include "data/rng.h"
#include "tensor/error.h"

namespace iris::data {

TextWindowLoader::TextWindowLoader(const std::vector<std::string>& documents, const text::Tokenizer& tok,
                                   int64_t window, int batch_size, uint64_t seed)
    : batch_size_(batch_size), seed_(seed) {
  IRIS_CHECK(window >= 2, "language-model windows need at least 2 tokens, got ", window);
  IRIS_CHECK(batch_size >= 1, "batch size must be >= 1, got ", batch_size);
  const std::vector<int32_t> eos = tok.eos_ids();
  std::vector<int32_t> stream;
  for (const std::string& d : documents) {
    if (d.empty()) continue;
    std::vector<int32_t> ids = tok.encode(d, /*add_special_tokens=*/true);
    if (!eos.empty()) ids.push_back(eos[0]);
    stream.insert(stream.end(), ids.begin(), ids.end());
    ++documents_;
  }
  total_tokens_ = int64_t(stream.size());
  for (int64_t b = 0; b < total_tokens_; b += window) {
    const int64_t e = std::min(total_tokens_, b + window);
    if (e - b >= 2) windows_.emplace_back(stream.begin() + b, stream.begin() + e);
  }
  IRIS_CHECK(!windows_.empty(), "the text corpus holds fewer than 2 tokens (", documents_, " documents)");
  order_ = epoch_order(0);
}

std::vector<int64_t> TextWindowLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(windows_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  Rng rng(hash_key({seed_, uint64_t(epoch), 0x746578740aULL /* "text" */}));
  shuffle(order, rng);
  return order;
}

std::optional<std::vector<Example>> TextWindowLoader::next_batch() {
  if (position_ >= epoch_size()) {  // the end of an epoch: report it once, then move on
    ++epoch_;
    position_ = 0;
    order_ = epoch_order(epoch_);
    return std::nullopt;
  }
  std::vector<Example> batch;
  for (int b = 0; b < batch_size_ && position_ < epoch_size(); ++b, ++position_) {
    const int64_t i = order_[size_t(position_)];
    Example e;
    e.id = "window_" + std::to_string(i);
    e.index = i;
    e.ids = windows_[size_t(i)];
    e.labels = e.ids;
    batch.push_back(std::move(e));
  }
  return batch;
}

uint64_t TextWindowLoader::fingerprint() const {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto& w : windows_)
    for (int32_t t : w) h = mix64(h ^ uint64_t(uint32_t(t)));
  return hash_key({h, seed_, uint64_t(batch_size_), uint64_t(windows_.size())});
}

nlohmann::json TextWindowLoader::state() const {
  return {{"epoch", epoch_}, {"position", position_}, {"fingerprint", std::to_string(fingerprint())}};
}

void TextWindowLoader::restore(const nlohmann::json& st) {
  IRIS_CHECK(st.is_object() && st.contains("epoch") && st["epoch"].is_number_integer() && st.contains("position") &&
                 st["position"].is_number_integer() && st.contains("fingerprint") && st["fingerprint"].is_string(),
             "text data: a loader state needs integer \"epoch\" and \"position\" and a \"fingerprint\" string, got ",
             st.dump());
  const std::string fp = st["fingerprint"].get<std::string>();
  IRIS_CHECK(fp == std::to_string(fingerprint()), "text data: the saved loader state is for another corpus or other "
             "settings (fingerprint ", fp, ", this corpus's ", fingerprint(), ")");
  const int64_t epoch = st["epoch"].get<int64_t>(), pos = st["position"].get<int64_t>();
  IRIS_CHECK(epoch >= 0 && pos >= 0 && pos <= epoch_size(), "text data: position ", pos, " of epoch ", epoch,
             " is outside the corpus (", epoch_size(), " windows)");
  epoch_ = epoch;
  position_ = pos;
  order_ = epoch_order(epoch_);
}

LoadReport TextWindowLoader::report() const {
  LoadReport r;
  r.loaded = documents_;
  return r;
}

}  // namespace iris::data
