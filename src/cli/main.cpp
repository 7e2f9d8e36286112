// The iris command: dispatches to subcommands. Errors are caught here once and become one line and an exit code.
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  CLI::App app{"iris: run, train and serve vision-language models"};
  app.set_version_flag("--version", std::string("iris ") + IRIS_VERSION);
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, iris::cli::Runner>> cmds;
  auto add = [&](const char* name, const char* help, iris::cli::Runner (*fn)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    cmds.emplace_back(sub, fn(*sub));
  };
  add("run", "answer a prompt about an image, streaming the answer", iris::cli::add_run);
  add("forward", "one forward pass for parity work: save logits, pixel values, vision features as .npy", iris::cli::add_forward);
  add("tokenize", "tokenize text with a tokenizer.json", iris::cli::add_tokenize);
  add("serve", "an OpenAI-compatible HTTP server (chat completions with images, streaming) and a chat page", iris::cli::add_serve);
  add("train", "train on one pre-tokenised batch (parity entry point): stages, LoRA, SGD/AdamW", iris::cli::add_train);
  add("merge-lora", "merge a LoRA adapter into its base model and write the merged folder", iris::cli::add_merge_lora);
  add("init-model", "write a model folder with random weights (demo, tests, benchmarks)", iris::cli::add_init);
  add("data", "dataset tools: the shapes world (data shapes), a BPE tokenizer (data tokenizer)", iris::cli::add_data);
  add("eval", "evaluate a model: VQA accuracy by question type, caption BLEU-4 and CIDEr, POPE", iris::cli::add_eval);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : cmds)
      if (sub->parsed()) return run();
  } catch (const iris::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "\niris: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "\niris: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\niris: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
