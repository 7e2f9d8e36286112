// iris data: dataset tools. `iris data shapes` writes the generated shapes world (images, LLaVA JSON,
// captions, POPE probes, ground-truth scenes) for training and evaluating the built-in model; `iris data
// tokenizer` trains a byte-level BPE tokenizer on text, JSONL and LLaVA JSON files and writes its HF files.
#include <cstdio>

#include "cli/common.h"
#include "data/shapes.h"
#include "data/tokenizer_train.h"

namespace iris::cli {

Runner add_data(CLI::App& app) {
  app.require_subcommand(1);
  CLI::App* shapes = app.add_subcommand(
      "shapes",
      "generate images of coloured shapes with captions, typed questions and POPE probes (deterministic)");
  auto o = std::make_shared<data::ShapesOptions>();
  auto out = std::make_shared<std::string>();
  shapes
      ->add_option("--out", *out,
                   "output folder (images/, llava.json, llava_text.json, captions.jsonl, pope.jsonl, scenes.jsonl, "
                   "regions.jsonl, meta.json)")
      ->required();
  shapes->add_option("--n", o->n, "number of images")->required();
  shapes->add_option("--seed", o->seed, "random seed (same seed and split: byte-identical files)");
  shapes->add_option("--min-size", o->min_size, "smallest image side in pixels (default 64)");
  shapes->add_option("--max-size", o->max_size, "largest image side in pixels (default 224)");
  shapes->add_option("--max-turns", o->max_turns,
                     "questions per conversation: 1 to this many turns (default 3)");
  shapes->add_flag("--text", o->text,
                   "draw short words and numbers on some objects and ask about them (OCR)");
  shapes->add_option("--split", o->split, "split name, part of the random key (default train)");

  CLI::App* tok = app.add_subcommand(
      "tokenizer", "train a byte-level BPE tokenizer and write tokenizer.json, tokenizer_config.json and "
                   "special_tokens_map.json (deterministic)");
  auto t = std::make_shared<data::TokenizerTrainOptions>();
  auto tok_out = std::make_shared<std::string>();
  tok->add_option("--input", t->inputs,
                  "training text (repeatable): .txt or any other name: plain text, paragraphs as documents; "
                  ".jsonl: the string values of each line; .json: LLaVA conversations")
      ->required();
  tok->add_option("--vocab-size", t->vocab_size,
                  "vocabulary size: 4 special tokens + 256 bytes + merges (at least 260)")
      ->required();
  tok->add_option("--out", *tok_out, "output folder")->required();
  tok->add_option("--min-frequency", t->min_frequency, "fewest occurrences of a pair to merge it (default 2)");
  tok->add_option("--model-max-length", t->model_max_length,
                  "model_max_length written to tokenizer_config.json (default 2048)");

  return [shapes, o, out, tok, t, tok_out] {
    if (tok->parsed()) {
      const data::TokenizerTrainSummary s = data::train_tokenizer(*t, *tok_out);
      std::printf("%s: %lld files, %lld documents, %.1f MB, %lld pre-tokens (%lld distinct), read and counted in %.2f s\n",
                  tok_out->c_str(), static_cast<long long>(s.files), static_cast<long long>(s.documents),
                  double(s.bytes) / 1e6, static_cast<long long>(s.pre_tokens),
                  static_cast<long long>(s.unique_pre_tokens), s.read_seconds);
      std::printf("%lld merges, vocabulary %lld (%s), trained in %.2f s\n", static_cast<long long>(s.merges),
                  static_cast<long long>(s.vocab_size), s.stop_reason.c_str(), s.train_seconds);
      return 0;
    }
    if (!shapes->parsed()) return 1;
    data::validate(*o);
    std::fprintf(stderr, "writing %lld images to %s\n", static_cast<long long>(o->n), out->c_str());
    data::ShapesSummary s = data::write_shapes_dataset(*out, *o, [](int64_t done, int64_t total) {
      std::fprintf(stderr, "\r%lld / %lld images", static_cast<long long>(done),
                   static_cast<long long>(total));
      std::fflush(stderr);
    });
    std::fprintf(stderr, "\n");
    std::printf(
        "%s: %lld images, %lld objects, %lld conversations (%lld questions), %lld captions, %lld POPE "
        "probes\n",
        out->c_str(), static_cast<long long>(s.images), static_cast<long long>(s.objects),
        static_cast<long long>(s.conversations), static_cast<long long>(s.questions),
        static_cast<long long>(s.captions), static_cast<long long>(s.pope));
    std::string types;
    for (const auto& [t, n] : s.questions_by_type) types += " " + t + "=" + std::to_string(n);
    std::printf("questions by type:%s\n", types.c_str());
    return 0;
  };
}

}  // namespace iris::cli
