// `iris data tokenizer`: trains a byte-level BPE tokenizer (text::BpeTrainer) on the documents of text, JSONL and
// LLaVA JSON files (read_text_documents) and writes a Hugging Face tokenizer folder: tokenizer.json,
// tokenizer_config.json (with LLaVA-1.5's chat template) and special_tokens_map.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace iris::data {

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // files, read in this order
  int64_t vocab_size = 0;           // special tokens + 256 bytes + merges (>= text::kBpeMinVocab)
  int64_t min_frequency = 2;        // fewest occurrences of a pair worth a merge
  int64_t model_max_length = 2048;  // tokenizer_config.json's model_max_length
};

struct TokenizerTrainSummary {
  int64_t files = 0, documents = 0, bytes = 0;
  int64_t pre_tokens = 0, unique_pre_tokens = 0;
  int64_t merges = 0, vocab_size = 0;
  std::string stop_reason;
  double read_seconds = 0, train_seconds = 0;
};

// Throws iris::Error (naming the file, and the document for invalid UTF-8) for bad options and bad inputs,
// before anything is written. The same inputs and options give byte-identical files. Files are written
// atomically; `out_dir` is created if needed.
TokenizerTrainSummary train_tokenizer(const TokenizerTrainOptions& options, const std::string& out_dir);

}  // namespace iris::data
