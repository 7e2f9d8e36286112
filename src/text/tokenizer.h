// Hugging Face `tokenizer.json` tokenizer: BPE (SentencePiece-style with byte fallback, and GPT-2 byte-level),
// normalizers, pre-tokenizers, added/special tokens, post-processors and decoders, exact against the Rust
// `tokenizers` library; plus a streaming detokenizer and the JSONL batch encoder behind `iris tokenize --jsonl`.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iris::text {

namespace detail {
struct Pipeline;    // normalizer, pre-tokenizer, model, post-processor, decoder (immutable, shared by copies)
struct AddedVocab;  // added tokens and their matchers (copy-on-write, so add_special_token never touches copies)
}  // namespace detail

// Const methods may be called from several threads at once (encode shares a mutex-guarded pre-token cache).
// add_special_token is the one mutator: it must not run concurrently with other calls on the same object; copies
// are independent (copying is cheap: the vocabulary is shared, the added-token set is copy-on-write).
class Tokenizer {
 public:
  // tokenizer_json: path to tokenizer.json; tokenizer_config: path to tokenizer_config.json or "" (optional file:
  // bos/eos tokens, add_bos_token/add_eos_token, clean_up_tokenization_spaces, chat_template, added_tokens_decoder).
  static Tokenizer from_files(const std::string& tokenizer_json, const std::string& tokenizer_config = "");
  // Loads tokenizer.json (+ tokenizer_config.json, chat_template.jinja / chat_template.json and the eos ids of
  // generation_config.json, each if present) from a model folder.
  static Tokenizer from_dir(const std::string& dir);

  // Text must be valid UTF-8 (iris::Error naming the byte offset otherwise).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids without a token (out of range, gaps) are dropped, as the reference library does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false,
                     std::optional<bool> clean_up_spaces = std::nullopt /* default: from tokenizer_config */) const;

  int32_t vocab_size() const;  // including added tokens (max id + 1)
  std::optional<int32_t> token_to_id(std::string_view token) const;  // vocab or added token
  std::string id_to_token(int32_t id) const;  // raw vocab string ("▁Hello", "Ġworld"); iris::Error if no such id
  bool is_special(int32_t id) const;           // an added token marked special
  std::optional<int32_t> bos_id() const;       // from tokenizer_config bos_token, else the post-processor's
  std::vector<int32_t> eos_ids() const;        // eos_token of tokenizer_config (+ generation_config); may be empty
  std::string bos_token() const;               // "" if none
  std::string eos_token() const;               // "" if none
  const std::string& chat_template() const;    // "" when none
  bool clean_up_spaces_default() const { return clean_up_default_; }
  const std::string& source() const { return source_; }  // the tokenizer.json path, for messages

  // Adds a token (e.g. "<image>") that is then split out of text like other added tokens (special=true). A token
  // already in the vocabulary keeps its id; a new one gets `id` or vocab_size(). Returns the id.
  int32_t add_special_token(const std::string& content, std::optional<int32_t> id = std::nullopt);

  // The pre-tokens and their token strings, for debugging (`iris tokenize --verbose`).
  std::vector<std::string> tokens_of(std::string_view text, bool add_special_tokens = true) const;

  Tokenizer(const Tokenizer&) = default;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(const Tokenizer&) = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  ~Tokenizer();

 private:
  Tokenizer();
  void apply_config(const std::string& config_path, detail::Pipeline& pipe, detail::AddedVocab& added);

  std::shared_ptr<const detail::Pipeline> pipe_;
  std::shared_ptr<const detail::AddedVocab> added_;
  std::string source_;
  std::string bos_token_, eos_token_;
  std::vector<int32_t> extra_eos_ids_;  // generation_config.json eos_token_id(s)
  std::string chat_template_;
  bool clean_up_default_ = false;
};

// Incremental detokenizer for streaming: push ids one at a time, get the newly completed text (never emits an
// incomplete UTF-8 sequence; handles SentencePiece leading-space stripping of the first token and byte-fallback
// runs). The concatenation of everything returned equals decode(ids, skip_special_tokens, false): clean-up of
// tokenization spaces is not applied (it looks ahead, like the reference library's DecodeStream).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special_tokens = true);
  std::string push(int32_t id);
  // Returns what is still held back (an incomplete UTF-8 tail decodes as U+FFFD, as decode() gives it).
  std::string flush();

 private:
  std::string advance(bool force);

  const Tokenizer* tok_;
  bool skip_special_;
  // Window of ids that starts at the tokens of the previous emission, so that decoders which treat the first
  // token specially (Strip, Metaspace) see the same context as a full decode.
  std::vector<int32_t> ids_;
  std::string prefix_;       // decode of the window as it stood after the last emission
  size_t prefix_index_ = 0;  // where the last emission's new ids start within the window
};

// For `iris tokenize --jsonl`: reads one JSON object per line with a "text" field, writes one line per input
// {"ids":[...]}. Blank lines are skipped. Malformed lines throw iris::Error naming the line number.
void tokenize_jsonl(std::istream& in, std::ostream& out, const Tokenizer& tok, bool add_special_tokens);

// transformers' clean_up_tokenization: drops the space before . ? ! , and English contractions.
std::string clean_up_tokenization(std::string text);

}  // namespace iris::text
