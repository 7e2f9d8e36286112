// Reads the corpus, trains the BPE tokenizer and writes its Hugging Face files (see tokenizer_train.h).
#include "data/tokenizer_train.h"

#include <chrono>
#include <filesystem>

#include "data/text_corpus.h"
#include "io/file.h"
#include "tensor/error.h"
#include "text/bpe_train.h"

namespace iris::data {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TokenizerTrainSummary train_tokenizer(const TokenizerTrainOptions& options, const std::string& out_dir) {
  IRIS_CHECK(!options.inputs.empty(), "tokenizer training: no input files");
  IRIS_CHECK(!out_dir.empty(), "tokenizer training: no output folder");
  IRIS_CHECK(options.model_max_length >= 1, "tokenizer training: model_max_length must be >= 1, got ",
             options.model_max_length);
  text::BpeTrainer trainer({options.vocab_size, options.min_frequency});  // checks the sizes first
  std::error_code ec;
  IRIS_CHECK(!std::filesystem::exists(out_dir, ec) || std::filesystem::is_directory(out_dir, ec),
             "tokenizer training: output '", out_dir, "' exists and is not a folder");

  TokenizerTrainSummary s;
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string& path : options.inputs) {
    const std::vector<std::string> docs = read_text_documents(path);
    for (size_t i = 0; i < docs.size(); ++i) {
      try {
        trainer.add_document(docs[i]);
      } catch (const Error& e) {
        throw Error(str_cat(path, ": document ", i + 1, ": ", e.what()));
      }
    }
    ++s.files;
  }
  s.read_seconds = seconds_since(t0);
  s.documents = trainer.documents();
  s.bytes = trainer.bytes();
  s.pre_tokens = trainer.pre_tokens();
  s.unique_pre_tokens = trainer.unique_pre_tokens();

  t0 = std::chrono::steady_clock::now();
  const text::BpeTrainResult r = trainer.train();
  s.train_seconds = seconds_since(t0);
  s.merges = int64_t(r.merges.size());
  s.vocab_size = r.vocab_size();
  s.stop_reason = r.stop_reason;

  const std::string tokenizer_json = text::bpe_tokenizer_json(r);
  const std::string config_json = text::bpe_tokenizer_config_json(options.model_max_length);
  const std::string map_json = text::bpe_special_tokens_map_json();
  std::filesystem::create_directories(out_dir, ec);
  IRIS_CHECK(!ec, "tokenizer training: cannot create folder '", out_dir, "': ", ec.message());
  const std::filesystem::path dir(out_dir);
  io::write_file_atomic((dir / "tokenizer.json").string(), tokenizer_json);
  io::write_file_atomic((dir / "tokenizer_config.json").string(), config_json);
  io::write_file_atomic((dir / "special_tokens_map.json").string(), map_json);
  return s;
}

}  // namespace iris::data
