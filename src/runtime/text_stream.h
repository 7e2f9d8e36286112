// Turns sampled token ids into streamed text: incremental detokenization, EOS ids, and stop strings (text from a
// stop string on is never emitted, and text that could still begin one is held back until it cannot).
#pragma once
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace iris::runtime {

class TextStream {
 public:
  TextStream(const text::Tokenizer& tok, std::vector<int32_t> eos_ids, std::vector<std::string> stop,
             bool stop_at_eos);

  // Takes the next token. Appends to `out` the text that can be shown now. Returns false when generation must
  // stop: the token is an EOS (not part of the output) or the text reached a stop string.
  bool push(int32_t id, std::string& out);
  // At the end of generation (length limit): appends the text still held back.
  void finish(std::string& out);

  const std::string& text() const { return text_; }          // everything emitted so far
  const std::vector<int32_t>& tokens() const { return tokens_; }  // generated tokens (EOS excluded)
  bool stopped() const { return stopped_; }

 private:
  void release(std::string& out, bool all);

  text::StreamDecoder detok_;
  std::vector<int32_t> eos_;
  std::vector<std::string> stop_;
  bool stop_at_eos_;
  std::string pending_, text_;
  std::vector<int32_t> tokens_;
  bool stopped_ = false;
};

}  // namespace iris::runtime
