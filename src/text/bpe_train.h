// Training a byte-level BPE tokenizer (GPT-2 / Qwen2 style) and writing it in the Hugging Face `tokenizers`
// format. Text is split at the special tokens, pre-tokenized with Qwen2's split regex (the one the loader runs for
// byte-level tokenizers), and the pre-tokens are counted; then the most frequent adjacent pair of symbols is
// merged, again and again, with incremental pair counts. The files it describes load with Tokenizer::from_dir and
// with transformers' PreTrainedTokenizerFast; the chat template renders exactly text::render_llava15.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace iris::text {

namespace detail {
class PreTokenizer;
}

// The special tokens of a trained tokenizer, ids 0..3 in this order: BOS, EOS, padding and the image placeholder.
inline constexpr const char* kBpeBos = "<s>";
inline constexpr const char* kBpeEos = "</s>";
inline constexpr const char* kBpePad = "<pad>";
inline constexpr const char* kBpeImage = "<image>";
const std::vector<std::string>& bpe_special_tokens();
// Special tokens + the 256 byte tokens: the smallest possible vocabulary.
inline constexpr int64_t kBpeMinVocab = 4 + 256;

// Qwen2's pre-tokenizer split pattern (every digit on its own, contractions, letter runs with one leading
// non-letter, punctuation runs, newlines, spaces).
const std::string& bpe_split_pattern();

struct BpeTrainOptions {
  int64_t vocab_size = 0;     // the whole vocabulary: special tokens + 256 bytes + merged tokens (>= kBpeMinVocab)
  int64_t min_frequency = 2;  // a pair must occur at least this often (counted over the corpus) to be merged
};

struct BpeMerge {
  int32_t left, right, merged;  // token ids
  int64_t count;                // occurrences of the pair when it was merged
};

struct BpeTrainResult {
  // The bytes each token stands for, by id: the special tokens' own text for ids 0..3, then byte b at id 4 + b,
  // then the merged tokens in the order they were created.
  std::vector<std::string> tokens;
  std::vector<BpeMerge> merges;  // in rank order (two merges can make the same token; it has one id)
  std::string stop_reason;       // "vocabulary size reached" or "no pair reaches the minimum frequency N"
  int64_t vocab_size() const { return int64_t(tokens.size()); }
};

class BpeTrainer {
 public:
  // Throws iris::Error for a vocabulary smaller than kBpeMinVocab or min_frequency < 1.
  explicit BpeTrainer(const BpeTrainOptions& options);
  ~BpeTrainer();
  BpeTrainer(BpeTrainer&&) noexcept;
  BpeTrainer& operator=(BpeTrainer&&) noexcept;

  // Counts the pre-tokens of one document. The special tokens written in it are split out (they are matched in
  // text when encoding, so their characters never meet a neighbour). Throws iris::Error for invalid UTF-8.
  void add_document(std::string_view text);
  // Learns the merges; deterministic (ties go to the lexicographically smallest pair of byte strings). May be
  // called again after more documents.
  BpeTrainResult train() const;

  int64_t documents() const { return documents_; }
  int64_t bytes() const { return bytes_; }
  int64_t unique_pre_tokens() const { return int64_t(words_.size()); }
  int64_t pre_tokens() const { return pre_tokens_; }

 private:
  void count_pre_tokens(std::string_view text);

  BpeTrainOptions opt_;
  std::unique_ptr<detail::PreTokenizer> pre_tokenizer_;  // the Split of bpe_split_pattern()
  std::unordered_map<std::string, int64_t> words_;  // pre-token bytes -> occurrences
  int64_t documents_ = 0, bytes_ = 0, pre_tokens_ = 0;
};

// The Hugging Face files for a trained tokenizer (pretty-printed JSON, byte-identical for the same result).
// tokenizer.json: BPE model (vocab, merges), Split(regex) + ByteLevel pre-tokenizer, ByteLevel decoder, no
// normalizer, a TemplateProcessing post-processor that puts <s> first; the special tokens are added tokens.
std::string bpe_tokenizer_json(const BpeTrainResult& result);
// tokenizer_config.json: PreTrainedTokenizerFast, bos/eos/pad tokens, added_tokens_decoder, model_max_length and
// text::llava15_chat_template().
std::string bpe_tokenizer_config_json(int64_t model_max_length);
std::string bpe_special_tokens_map_json();

}  // namespace iris::text
