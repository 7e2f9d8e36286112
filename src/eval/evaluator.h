// The evaluator behind `iris eval`: runs a model (runtime::Engine, greedy) over a LLaVA-JSON question set, a
// caption JSONL file and a POPE probe file, and scores the answers: VQA accuracy overall and per question
// type, caption BLEU-4 and CIDEr-D, POPE accuracy / precision / recall / F1 / yes-ratio per split. With
// `blind`, every image is replaced by a uniform mid-grey image of the same size, to show how much the answers
// depend on it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/engine.h"

namespace iris::eval {

struct EvalOptions {
  std::string model;     // for the report only (the engine is passed in)
  std::string data;      // LLaVA conversation JSON ("" = no VQA)
  std::string images;    // image folder; "" = the folder of the first data file given
  std::string pope;      // POPE JSONL: {"image", "question", "answer": "yes"|"no", "split"?}
  std::string captions;  // caption JSONL: {"image", "caption"}, several lines per image = several references
  std::string predictions;  // JSONL of every prediction ("" = not written)
  bool blind = false;
  int64_t limit = 0;  // > 0: at most this many questions, caption images and POPE probes
  int vqa_tokens = 16, caption_tokens = 64, pope_tokens = 16;
  std::string caption_prompt = "Describe the image briefly.";
  // Appended to POPE questions (the short-answer instruction of LLaVA-1.5, which llava.json of the shapes
  // world carries too); "" for none.
  std::string pope_suffix = "\nAnswer the question using a single word or phrase.";
  bool progress = true;          // progress lines on stderr
  vision::DecodeOptions decode;  // pixel limit, EXIF orientation (as for iris run)
};

// One question of a LLaVA record: the conversation before it (ground-truth answers), its text and answers.
struct VqaItem {
  std::string id, image, type;  // image "" for a text-only record; type "" when the record has none
  struct Turn {
    std::string role, text;  // "user" / "assistant"; "<image>" markers removed
    int n_images = 0;
  };
  std::vector<Turn> history;  // earlier turns, ending with an assistant turn
  Turn question;
  std::vector<std::string> answers;  // the gpt turn's value, or its "answers" list when given
};

// Every gpt turn of a LLaVA JSON file (with its preceding turns as history). Turns typed "caption" are left
// out and counted in *skipped_captions. Throws iris::Error naming the file and record on malformed input.
std::vector<VqaItem> load_llava_questions(const std::string& path, int64_t* skipped_captions = nullptr);

// Runs the evaluation and returns the report (also written to the predictions file when asked).
nlohmann::json evaluate(const runtime::Engine& engine, const EvalOptions& opt);

// A short terminal table of a report.
std::string format_report(const nlohmann::json& report);

}  // namespace iris::eval
