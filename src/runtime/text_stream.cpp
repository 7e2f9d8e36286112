// Streamed detokenization with stop strings.
#include "runtime/text_stream.h"

#include <algorithm>

namespace iris::runtime {

TextStream::TextStream(const text::Tokenizer& tok, std::vector<int32_t> eos_ids, std::vector<std::string> stop,
                       bool stop_at_eos)
    : detok_(tok, /*skip_special_tokens=*/true), eos_(std::move(eos_ids)), stop_(std::move(stop)),
      stop_at_eos_(stop_at_eos) {
  stop_.erase(std::remove(stop_.begin(), stop_.end(), std::string()), stop_.end());
}

void TextStream::release(std::string& out, bool all) {
  size_t keep = 0;
  if (!all) {  // hold back the longest tail that is a proper prefix of a stop string
    for (const std::string& s : stop_)
      for (size_t k = std::min(s.size() - 1, pending_.size()); k > keep; --k)
        if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
  }
  std::string piece = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  text_ += piece;
  out += piece;
}

bool TextStream::push(int32_t id, std::string& out) {
  if (stopped_) return false;
  if (stop_at_eos_ && std::find(eos_.begin(), eos_.end(), id) != eos_.end()) {
    stopped_ = true;
    finish(out);
    return false;
  }
  tokens_.push_back(id);
  pending_ += detok_.push(id);
  for (const std::string& s : stop_) {
    size_t at = pending_.find(s);
    if (at != std::string::npos) {
      pending_.resize(at);
      release(out, true);
      stopped_ = true;
      return false;
    }
  }
  release(out, false);
  return true;
}

void TextStream::finish(std::string& out) {
  pending_ += detok_.flush();
  if (!stopped_) {
    for (const std::string& s : stop_) {
      size_t at = pending_.find(s);
      if (at != std::string::npos) pending_.resize(at);
    }
  }
  release(out, true);
}

}  // namespace iris::runtime
