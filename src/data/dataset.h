// Training data sets: LLaVA conversation JSON (or JSONL with the same objects) and image-caption JSONL (LLaVA
// stage-1 style: each caption becomes the answer to a short instruction picked by a seeded RNG), read into
// Samples. Bad entries are skipped and counted in a LoadReport with a warning, or, in strict mode, throw
// iris::Error naming the file, the line or entry and the id.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace iris::data {

struct Turn {
  std::string role;  // "system", "user" or "assistant" (LLaVA's human/gpt are mapped)
  std::string text;  // without "<image>" markers
  int n_images = 0;  // images shown with this turn, before its text
};

struct Sample {
  std::string id;
  std::vector<std::string> image_paths;  // relative to the loader's image folder (or absolute), in turn order
  std::vector<Turn> turns;
};

// Why an item was skipped (the keys of LoadReport::skipped).
namespace skip_reason {
inline constexpr const char* kMalformed = "malformed";          // not valid JSON, wrong field types, bad role
inline constexpr const char* kNoAssistant = "no_assistant";     // nothing to supervise
inline constexpr const char* kImageMismatch = "image_mismatch";  // <image> markers vs listed images / image tokens
inline constexpr const char* kMissingImage = "missing_image";   // the file does not exist
inline constexpr const char* kBadImage = "bad_image";           // unreadable or undecodable image
inline constexpr const char* kTooLong = "too_long";             // over max_tokens (skip mode, or nothing left)
inline constexpr const char* kTemplate = "template_error";      // the chat template refused the conversation
}  // namespace skip_reason

// Thrown for a bad item; reason is one of skip_reason. Loaders catch it to count and skip (or rethrow as
// iris::Error in strict mode).
class DataError : public iris::Error {
 public:
  DataError(std::string reason, const std::string& message) : iris::Error(message), reason_(std::move(reason)) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

struct LoadReport {
  int64_t loaded = 0;                       // items accepted
  std::map<std::string, int64_t> skipped;   // reason -> count (each item counted once)
  int64_t truncated = 0;                    // examples cut to max_tokens
  int64_t boundary_adjusted = 0;            // answer boundaries moved to the nearest consistent token boundary
  std::vector<std::string> warnings;        // the first kMaxWarnings messages
  static constexpr size_t kMaxWarnings = 20;

  int64_t total_skipped() const;
  int64_t skipped_for(const std::string& reason) const;
  void merge(const LoadReport& other);
  std::string summary() const;  // "loaded 10, skipped 3 (malformed 2, missing_image 1), truncated 1"
};

// Warning output for skipped items: called with each message while LoadReport keeps fewer than kMaxWarnings.
// The default prints "iris: warning: <message>" to stderr; pass an empty function to silence it.
using WarningSink = std::function<void(const std::string&)>;
void set_warning_sink(WarningSink sink);
// Records a skipped item in report (may be null) and, when `emit`, passes the warning to the sink.
void report_skip(LoadReport* report, const std::string& reason, const std::string& message, bool emit = true);
void report_warning(LoadReport* report, const std::string& message, bool emit = true);

// LLaVA conversation data: a JSON array of {"id", "image" (absent, a path or a list of paths),
// "conversations": [{"from": "human"|"gpt"|"system"|"user"|"assistant", "value": "..."}]}, or JSONL with one such
// object per line. "<image>" markers are removed from a turn's text and counted as its images (the text is then
// stripped, as LLaVA's preprocess_multimodal does); with images listed but no marker anywhere, all images go to
// the first user turn. Assistant turns before the first user turn are dropped (as LLaVA's preprocessing does).
// Unreadable files and a JSON array that does not parse throw iris::Error.
std::vector<Sample> load_llava_json(const std::string& path, LoadReport* report = nullptr, bool strict = false);

// Image-caption JSONL: {"image": "...", "caption": "..."} per line (optional "id"; blank lines ignored). Each
// caption answers one of caption_prompts(), chosen from (seed, line number).
std::vector<Sample> load_caption_jsonl(const std::string& path, uint64_t seed, LoadReport* report = nullptr,
                                       bool strict = false);
const std::vector<std::string>& caption_prompts();

// An image path as a dataset file gives it, resolved: absolute paths and an empty image_dir leave it as it is,
// otherwise it is taken relative to image_dir.
std::string resolve_image_path(const std::string& image_dir, const std::string& path);

}  // namespace iris::data
