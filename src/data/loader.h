// The training data loader: batches of tokenized, labelled examples with preprocessed images, over epochs.
// Worker threads (std::thread: file I/O, decode, resize, tokenize; no OpenMP) fill a bounded window of ready
// examples ahead of the consumer; examples come out in the epoch's order whatever the worker count.
//
// Order: each epoch is a permutation of the samples from (seed, epoch) (identity without shuffle). With
// group_by_length, the permutation is cut into chunks of batch_size * group_chunks samples and each chunk is
// sorted by token length (longest first), so that batches hold similar lengths (LLaVA's length grouping). The
// lengths come from tokenizing every sample once in the constructor (on the worker threads; about 0.5-1.5 ms per
// 1,000-token conversation and thread), which also finds the samples that cannot be encoded: they leave the order.
// A batch is the next batch_size examples of the order that load; bad samples are skipped (counted once each).
//
// Position: epoch() and position() (entries of the epoch's order consumed by the batches returned so far) are
// the data state of a checkpoint: seek(epoch, position) on a loader over the same samples and config resumes
// with exactly the batches the uninterrupted run would have produced. state()/restore() wrap them with a
// fingerprint of the samples and the order-affecting config, so that a mismatched resume is refused.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/encode.h"
#include "vision/preprocess.h"

namespace iris::data {

struct Example {
  std::string id;
  int64_t index = -1;           // the sample's index in the loader's sample list
  std::vector<int32_t> ids;     // (T)
  std::vector<int32_t> labels;  // (T), kIgnoreIndex outside answers
  std::vector<std::vector<float>> pixel_values;  // one (3, H, W) per image, in the order of the image tokens
                                                 // (with LoaderConfig::process: that processor's layout)
  std::vector<std::pair<int, int>> image_sizes;  // (H, W) of each pixel_values entry (process: (rows, cols))
  std::vector<std::array<int64_t, 3>> image_grids;  // with LoaderConfig::process: each image's (t, h, w) grid
};

// What a model's own image processor makes of an image (LoaderConfig::process).
struct ProcessedImage {
  std::vector<float> values;    // rows x cols, row-major
  int64_t rows = 0, cols = 0;
  std::array<int64_t, 3> grid{1, 0, 0};  // (t, h, w) in patches
  int64_t tokens = 0;           // image tokens it becomes in the prompt
};

enum class OverLength { Truncate, Skip };

struct LoaderConfig {
  std::string image_dir;                // relative image paths are resolved against it
  vision::PreprocessConfig preprocess;  // the model's image processor (CLIP's: every image the same size)
  // An image processor whose token count depends on the image (Qwen2-VL's): each sample's images are processed
  // before its conversation is encoded, with their counts. Length grouping then counts one token per image.
  std::function<ProcessedImage(const vision::Image&)> process;
  int workers = 2;                      // 0: load in the calling thread
  int prefetch = 8;                     // examples loaded or in flight ahead of the consumer (at least workers)
  uint64_t seed = 0;
  bool shuffle = true;
  bool augment = false;
  AugmentConfig augment_config;
  int64_t max_tokens = 2048;            // longer examples are truncated (never inside an image) or skipped
  OverLength over_length = OverLength::Truncate;
  bool group_by_length = false;
  int group_chunks = 32;                // length-sorting chunk = batch_size * group_chunks samples
  int batch_size = 1;
  bool drop_last = false;               // drop an epoch's final partial batch
  bool strict = false;                  // bad samples throw iris::Error instead of being skipped
  int64_t max_pixels = 50'000'000;      // images larger than this are refused (as bad images)
  bool quiet = false;                   // no warnings on stderr (they are still counted)
};

// What the trainer draws batches from (DataLoader for conversations, TextWindowLoader for plain text): batches
// until nullopt at each epoch's end, a position, and a state a checkpoint stores to resume the same order.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual std::optional<std::vector<Example>> next_batch() = 0;
  virtual int64_t epoch() const = 0;
  virtual int64_t position() const = 0;
  virtual int64_t epoch_size() const = 0;
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;
  virtual LoadReport report() const = 0;
};

class DataLoader : public BatchSource {
 public:
  // Throws iris::Error on a bad config (or, with group_by_length and strict, on the first bad sample).
  DataLoader(std::vector<Sample> samples, const PromptFormat& fmt, LoaderConfig cfg);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch (1..batch_size examples), or nullopt once at the end of each epoch; the call after that
  // starts the next epoch. In strict mode a bad sample throws iris::Error naming it.
  std::optional<std::vector<Example>> next_batch() override;

  int64_t epoch() const override { return epoch_; }
  int64_t position() const override { return position_; }  // entries of this epoch's order consumed
  int64_t epoch_size() const override;                     // entries in an epoch's order
  void seek(int64_t epoch, int64_t position);

  // {"epoch", "position", "fingerprint"}; restore() checks the fingerprint, then seeks.
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;
  uint64_t fingerprint() const;

  // The order of an epoch: sample indices (without samples known bad in group_by_length mode).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Token length of each sample (computed once when group_by_length is on; 0 for bad samples), else empty.
  const std::vector<int64_t>& lengths() const { return lengths_; }

  LoadReport report() const override;  // skips found so far (each sample counted once)
  size_t size() const { return samples_.size(); }
  const ConversationEncoder& encoder() const { return encoder_; }

  // Loads one sample as the workers do (throws DataError for a bad one); for tests and tools.
  Example load_example(int64_t index, int64_t epoch) const;

 private:
  struct Stream;
  void start_stream();
  void stop_stream();
  void compute_lengths();
  Example build(int64_t index, int64_t epoch, bool* truncated, int* adjusted) const;
  // Loads a sample for the stream; nullopt when it is bad (recorded once). Throws iris::Error in strict mode.
  std::optional<Example> load_entry(int64_t index, int64_t epoch);
  void record_bad(int64_t index, const DataError& e);  // counts and warns once; throws in strict mode
  void record_stats(int64_t index, bool truncated, int adjusted);

  std::vector<Sample> samples_;
  ConversationEncoder encoder_;
  LoaderConfig cfg_;
  std::vector<int64_t> lengths_;
  int64_t epoch_ = 0, position_ = 0;
  std::unique_ptr<Stream> stream_;
  struct Shared;  // report and per-sample flags, shared with the workers
  std::unique_ptr<Shared> shared_;
};

}  // namespace iris::data
