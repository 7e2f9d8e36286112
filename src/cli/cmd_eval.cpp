// iris eval: score a model on a LLaVA-JSON question set (VQA accuracy by type), captions (BLEU-4, CIDEr-D)
// and POPE probes; a table on stdout, progress on stderr, the full report as JSON with --out.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/common.h"
#include "eval/evaluator.h"
#include "tensor/error.h"

namespace iris::cli {

Runner add_eval(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    eval::EvalOptions e;
    std::string out;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  o->model.add(app);
  app.add_option("--data", o->e.data,
                 "LLaVA conversation JSON; every gpt turn is a question (its \"type\" groups the scores)");
  app.add_option("--images", o->e.images,
                 "folder the records' image paths are relative to (default: the data file's folder)");
  app.add_option("--pope", o->e.pope,
                 "POPE probes, JSONL: {\"image\", \"question\", \"answer\": yes|no, \"split\"}");
  app.add_option("--captions", o->e.captions,
                 "reference captions, JSONL: {\"image\", \"caption\"} (several lines per image)");
  app.add_flag("--blind", o->e.blind, "replace every image by a uniform grey one of the same size");
  app.add_option("--limit", o->e.limit,
                 "at most this many questions, caption images and POPE probes (0: all)");
  app.add_option("--out", o->out, "write the report as JSON here");
  app.add_option("--predictions", o->e.predictions, "write every prediction as JSONL here");
  app.add_option("--vqa-tokens", o->e.vqa_tokens, "tokens generated at most per question (default 16)");
  app.add_option("--caption-tokens", o->e.caption_tokens,
                 "tokens generated at most per caption (default 64)");
  app.add_option("--caption-prompt", o->e.caption_prompt,
                 "the caption request (default \"Describe the image briefly.\")");
  app.add_option("--pope-suffix", o->e.pope_suffix,
                 "text appended to POPE questions (default: newline + LLaVA-1.5's short-answer instruction)");
  app.add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  return [o] {
    IRIS_CHECK(o->e.limit >= 0, "eval: --limit ", o->e.limit, " is negative");
    o->model.apply_threads();
    o->model.resolve();
    o->e.model = o->model.model;
    o->e.decode = o->model.engine_options().decode;
    o->e.progress = !o->quiet;
    // Fail on a report path in a missing folder before the (long) evaluation, not after.
    if (!o->out.empty()) {
      const std::filesystem::path parent = std::filesystem::path(o->out).parent_path();
      IRIS_CHECK(parent.empty() || std::filesystem::is_directory(parent), "eval: cannot write the report to ",
                 o->out, ": no folder ", parent.string());
    }
    auto engine = runtime::Engine::load(o->model.model, o->model.engine_options());
    nlohmann::json report = eval::evaluate(*engine, o->e);
    std::fputs(eval::format_report(report).c_str(), stdout);
    if (!o->out.empty()) {
      std::ofstream f(o->out, std::ios::binary | std::ios::trunc);
      f << report.dump(2) << "\n";
      f.flush();
      IRIS_CHECK(f.good(), "eval: writing the report to ", o->out, " failed");
      std::fprintf(stderr, "report: %s\n", o->out.c_str());
    }
    return 0;
  };
}

}  // namespace iris::cli
