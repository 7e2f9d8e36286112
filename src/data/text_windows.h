// Language-model pretraining data (`iris train --objective lm`): documents tokenized once (BOS as the tokenizer
// adds it, the text, then EOS), concatenated into one stream and cut into windows of `window` tokens (GPT-style
// packing: a window may hold the end of one document and the start of the next; the last partial window is
// kept when it holds at least two tokens). Every token of a window is a target (labels = ids; the trainer
// shifts by one). Windows are served in batches, in a per-epoch order drawn from (seed, epoch), with the same
// position/state/restore contract as DataLoader, so a killed run resumes with exactly the same batches.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "text/tokenizer.h"

namespace iris::data {

class TextWindowLoader : public BatchSource {
 public:
  // Throws iris::Error when window < 2, batch_size < 1, or the documents hold fewer than two tokens.
  TextWindowLoader(const std::vector<std::string>& documents, const text::Tokenizer& tok, int64_t window,
                   int batch_size, uint64_t seed);

  std::optional<std::vector<Example>> next_batch() override;
  int64_t epoch() const override { return epoch_; }
  int64_t position() const override { return position_; }
  int64_t epoch_size() const override { return int64_t(windows_.size()); }
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;
  LoadReport report() const override;

  std::vector<int64_t> epoch_order(int64_t epoch) const;
  const std::vector<std::vector<int32_t>>& windows() const { return windows_; }
  int64_t total_tokens() const { return total_tokens_; }
  uint64_t fingerprint() const;

 private:
  std::vector<std::vector<int32_t>> windows_;
  int batch_size_;
  uint64_t seed_;
  int64_t total_tokens_ = 0, documents_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  std::vector<int64_t> order_;  // of epoch_
};

}  // namespace iris::data
