// iris tokenize: text -> ids with a tokenizer.json, one prompt or JSON lines from stdin.
#include <iostream>

#include "cli/common.h"

namespace iris::cli {

Runner add_tokenize(CLI::App& app) {
  struct Opts {
    std::string tokenizer, prompt;
    bool no_special = false, jsonl = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--tokenizer", o->tokenizer, "tokenizer.json, or a model folder holding one")->required();
  app.add_option("-p,--prompt", o->prompt, "text to tokenize");
  app.add_flag("--no-special", o->no_special, "do not add the post-processor's special tokens (BOS)");
  app.add_flag("--jsonl", o->jsonl, "read JSON lines with a \"text\" field from stdin, write {\"ids\": [...]} lines");
  return [o] {
    text::Tokenizer tok = std::filesystem::is_directory(o->tokenizer)
                              ? text::Tokenizer::from_dir(o->tokenizer)
                              : text::Tokenizer::from_files(o->tokenizer, [&] {
                                  auto cfg = std::filesystem::path(o->tokenizer).parent_path() / "tokenizer_config.json";
                                  return std::filesystem::exists(cfg) ? cfg.string() : std::string();
                                }());
    if (o->jsonl) {
      text::tokenize_jsonl(std::cin, std::cout, tok, !o->no_special);
      return 0;
    }
    std::vector<int32_t> ids = tok.encode(o->prompt, !o->no_special);
    nlohmann::json j = ids;
    std::cout << j.dump() << "\n";
    return 0;
  };
}

}  // namespace iris::cli
