// Evaluation metrics on hand-computed examples (VQAv2 normalisation and accuracy, BLEU, CIDEr-D, POPE), the
// LLaVA-JSON question reader, and a whole evaluation of a tiny random model over a generated shapes dataset.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cpu/threads.h"
#include "data/shapes.h"
#include "eval/evaluator.h"
#include "eval/metrics.h"
#include "models/presets.h"
#include "models/vlm.h"
#include "tensor/error.h"
#include "test_util.h"

using namespace iris;
using namespace iris::eval;
namespace fs = std::filesystem;
using nlohmann::json;

TEST(VqaNormalize, MatchesTheVqaEvaluation) {
  const std::pair<const char*, const char*> cases[] = {
      {"Two", "2"},                  // number words become digits
      {"the cat.", "cat"},           // articles dropped, final period removed
      {"yes!", "yes"},               // '!' not touching a space becomes a space, then split away
      {"Yes, it is.", "yes it is"},  // ',' removed first
      {"None", "0"},
      {"ten", "10"},
      {"dont", "don't"},  // contractions restored
      {"isnt", "isn't"},
      {"3.5", "3.5"},  // a period before a digit stays
      {"2,000", "2000"},
      {"red-blue", "red blue"},  // '-' inside a word: a space
      {"a - b", "b"},            // '-' touching a space: removed; 'a' is an article
      {"(left)", "left"},
      {"The dog's bone", "dog 's bone"},  // "'s" split off
      {"  A  Circle \n", "circle"},
      {"a.m.", "am"},
      {"Is it? yes", "is it yes"},
      {"hello/world", "hello world"},
      {"left / right", "left right"},
      {"", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(normalize_answer(in), want) << "'" << in << "'";
}

TEST(VqaAccuracy, SingleAnswerIsExactMatchAfterNormalisation) {
  EXPECT_EQ(vqa_accuracy("Red.", {"red"}), 1.0);
  EXPECT_EQ(vqa_accuracy("the red", {"Red"}), 1.0);
  EXPECT_EQ(vqa_accuracy("three", {"3"}), 1.0);
  EXPECT_EQ(vqa_accuracy("blue", {"red"}), 0.0);
  EXPECT_EQ(vqa_accuracy("red circle", {"red"}), 0.0);
  EXPECT_EQ(vqa_accuracy("red", {}), 0.0);
}

TEST(VqaAccuracy, TenAnswersAverageLeaveOneOut) {
  // Normalised: red x5 ("Red." is red), blue x2, "dark red", maroon, crimson.
  const std::vector<std::string> gt = {"red",  "red",      "red", "Red.",   "blue",
                                       "blue", "dark red", "red", "maroon", "crimson"};
  // "red" matches 5: leaving any one out leaves >= 4 matches -> min(1, 4/3) = 1 everywhere -> 1.
  EXPECT_DOUBLE_EQ(vqa_accuracy("red", gt), 1.0);
  // "blue" matches 2: the 2 blue subsets keep 1 match (1/3), the 8 others keep 2 (2/3): (2/3 + 16/3) / 10 =
  // 0.6.
  EXPECT_NEAR(vqa_accuracy("blue", gt), 0.6, 1e-12);
  EXPECT_NEAR(vqa_accuracy("The blue.", gt), 0.6, 1e-12);
  // "maroon" matches 1: its own subset 0, the 9 others 1/3: 3 / 10 = 0.3.
  EXPECT_NEAR(vqa_accuracy("maroon", gt), 0.3, 1e-12);
  EXPECT_EQ(vqa_accuracy("green", gt), 0.0);
  // Exactly 3 matches: 3 subsets keep 2 (2/3), 7 keep 3 (1): (2 + 7) / 10 = 0.9.
  const std::vector<std::string> gt3 = {"3", "three", "Three", "4", "4", "5", "6", "7", "8", "9"};
  EXPECT_NEAR(vqa_accuracy("3", gt3), 0.9, 1e-12);
}

TEST(CaptionTokenize, LikeThePtbTokenizer) {
  EXPECT_EQ(caption_tokenize("A dog's toy, on the mat."), "a dog 's toy on the mat");
  EXPECT_EQ(caption_tokenize("Don't stop!"), "do n't stop");
  EXPECT_EQ(caption_tokenize("3.5 apples; (well-known) -- 'fine'"), "3.5 apples well-known fine");
  EXPECT_EQ(caption_tokenize("  Two   RED circles\n"), "two red circles");
  EXPECT_EQ(caption_tokenize("..."), "");
}

TEST(Bleu, SmallCorpusByHand) {
  // Sentence A: hyp "a red circle and a blue square" (7 tokens);
  //   refs "a red circle and a green square" (7), "one red circle next to a blue square" (8).
  //   1-grams: a a red circle and blue square, all found (a twice in ref 1) -> 7 / 7
  //   2-grams: a-red red-circle circle-and and-a (ref 1), a-blue blue-square (ref 2) -> 6 / 6
  //   3-grams: a-red-circle red-circle-and circle-and-a (ref 1), a-blue-square (ref 2); and-a-blue no -> 4 /
  //   5 4-grams: a-red-circle-and red-circle-and-a (ref 1); circle-and-a-blue, and-a-blue-square no -> 2 / 4
  //   closest reference length to 7: 7.
  // Sentence B: hyp "two yellow stars" (3); refs "two yellow stars on a grey background" (7),
  //   "there are two yellow stars" (5): 3 / 3, 2 / 2, 1 / 1, 0 / 0; closest reference length 5.
  // Corpus: p1 = 10/10, p2 = 8/8, p3 = 5/6, p4 = 2/4; hypothesis length c = 10, reference length r = 12;
  //   BP = exp(1 - 12/10) = exp(-0.2) = 0.818730753;
  //   BLEU-1 = BLEU-2 = BP; BLEU-3 = (5/6)^(1/3) BP = 0.770455137; BLEU-4 = (5/12)^(1/4) BP = 0.657791554.
  const BleuResult b =
      corpus_bleu({"a red circle and a blue square", "two yellow stars"},
                  {{"a red circle and a green square", "one red circle next to a blue square"},
                   {"two yellow stars on a grey background", "there are two yellow stars"}});
  const double bp = std::exp(-0.2);
  EXPECT_NEAR(b.bleu[0], bp, 1e-8);
  EXPECT_NEAR(b.bleu[1], bp, 1e-8);
  EXPECT_NEAR(b.bleu[2], std::cbrt(5.0 / 6.0) * bp, 1e-8);
  EXPECT_NEAR(b.bleu[3], std::pow(5.0 / 12.0, 0.25) * bp, 1e-8);
  EXPECT_NEAR(b.bleu[3], 0.657791554316, 1e-9);  // scripts/ref_caption_metrics.py
  EXPECT_EQ(b.hyp_len, 10);
  EXPECT_EQ(b.ref_len, 12);
  // A perfect corpus scores 1; a hypothesis with no 4-gram match scores (almost) 0.
  EXPECT_NEAR(corpus_bleu({"a b c d e"}, {{"a b c d e"}}).bleu[3], 1.0, 1e-8);
  EXPECT_LT(corpus_bleu({"a b c x e"}, {{"a b c d e"}}).bleu[3], 1e-3);
  // coco-caption's smoothing when a hypothesis has no 4-grams at all: p4 = (0 + 1e-15) / (0 + 1e-9) = 1e-6,
  // so BLEU-4 = (1 * 1 * 1 * 1e-6)^(1/4) * exp(1 - 5/3) = 0.0316228 * 0.5134171 = 0.0162355, not 0.
  EXPECT_NEAR(corpus_bleu({"a b c"}, {{"a b c d e"}}).bleu[3], std::pow(1e-6, 0.25) * std::exp(1 - 5.0 / 3.0),
              1e-9);
}

TEST(CiderD, IdenticalCaptionsWithDisjointWordsScoreTen) {
  // Two images, one reference each, hypothesis = reference, no word shared between the images: every n-gram
  // has df 1, weight log(2); each order's clipped cosine is 1, lengths equal (penalty 1): mean 1, times 10.
  std::vector<double> per;
  const double c = cider_d({"a red circle on grey", "two blue stars here now"},
                           {{"a red circle on grey"}, {"two blue stars here now"}}, &per);
  EXPECT_NEAR(c, 10.0, 1e-12);
  ASSERT_EQ(per.size(), 2u);
  EXPECT_NEAR(per[0], 10.0, 1e-12);
}

TEST(CiderD, SharedWordsAndLengthPenaltyByHand) {
  // Image 1: hyp = ref = "the the the the"; image 2: hyp "x y z w", ref "the x y z w". "the" is in both
  // images' references: idf log(2) - log(2) = 0; every other n-gram has df 1, weight tf * log(2) (l below).
  // Image 1: order 1 has norm 0 -> 0 (not NaN); orders 2-4 cosine 1; equal lengths: (0 + 1 + 1 + 1) / 4 * 10
  // = 7.5. Image 2 (weights in units of l): order 1: hyp {x,y,z,w}, ref {the: 0, x,y,z,w}: 4 / (2 * 2) = 1;
  //   order 2: hyp {xy,yz,zw}, ref {"the x",xy,yz,zw}: 3 / (sqrt3 * 2); order 3: 2 / (sqrt2 * sqrt3);
  //   order 4: 1 / (1 * sqrt2); bigram counts 3 vs 4: penalty exp(-1 / 72); score = mean * penalty * 10.
  std::vector<double> per;
  const double c = cider_d({"the the the the", "x y z w"}, {{"the the the the"}, {"the x y z w"}}, &per);
  ASSERT_EQ(per.size(), 2u);
  EXPECT_NEAR(per[0], 7.5, 1e-12);
  const double img2 =
      (1.0 + 3.0 / (std::sqrt(3.0) * 2.0) + 2.0 / (std::sqrt(2.0) * std::sqrt(3.0)) + 1.0 / std::sqrt(2.0)) /
      4.0 * std::exp(-1.0 / 72.0) * 10.0;
  EXPECT_NEAR(per[1], img2, 1e-12);  // 8.357...
  EXPECT_NEAR(c, (7.5 + img2) / 2, 1e-12);
}

TEST(CiderD, MatchesIndependentPythonReference) {
  // scripts/ref_caption_metrics.py (an independent Python implementation of coco-caption's CIDEr-D).
  std::vector<double> per;
  const double c = cider_d(
      {"a red circle and a blue square", "two yellow stars", "a small green triangle on the left"},
      {{"a red circle and a green square", "one red circle next to a blue square",
        "a blue square and a red circle"},
       {"two yellow stars on a grey background", "there are two yellow stars"},
       {"a green triangle", "a small green triangle on the left of the image", "green triangle left"}},
      &per);
  EXPECT_NEAR(c, 4.346841583223, 1e-9);
  ASSERT_EQ(per.size(), 3u);
  EXPECT_NEAR(per[0], 5.197363716708, 1e-9);
  EXPECT_NEAR(per[1], 4.225195884775, 1e-9);
  EXPECT_NEAR(per[2], 3.617965148187, 1e-9);
}

TEST(Pope, ParsesTheFirstYesOrNo) {
  EXPECT_EQ(parse_yes_no("Yes"), YesNo::Yes);
  EXPECT_EQ(parse_yes_no("yes, there is a red circle."), YesNo::Yes);
  EXPECT_EQ(parse_yes_no("No."), YesNo::No);
  EXPECT_EQ(parse_yes_no("I see no, wait, yes"), YesNo::No);  // the first one counts
  EXPECT_EQ(parse_yes_no("There is NO circle"), YesNo::No);
  EXPECT_EQ(parse_yes_no("yesterday nothing"), YesNo::Unknown);  // whole words only
  EXPECT_EQ(parse_yes_no(""), YesNo::Unknown);
  EXPECT_EQ(parse_yes_no("red"), YesNo::Unknown);
}

TEST(Pope, MetricsOfAConfusionMatrix) {
  PopeCounts c;
  for (int i = 0; i < 40; ++i) c.add(true, YesNo::Yes);   // TP
  for (int i = 0; i < 15; ++i) c.add(true, YesNo::No);    // FN
  for (int i = 0; i < 10; ++i) c.add(false, YesNo::Yes);  // FP
  for (int i = 0; i < 35; ++i) c.add(false, YesNo::No);   // TN
  PopeMetrics m = pope_metrics(c);
  EXPECT_EQ(m.count, 100);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.75);                                       // (40 + 35) / 100
  EXPECT_DOUBLE_EQ(m.precision, 0.8);                                       // 40 / (40 + 10)
  EXPECT_NEAR(m.recall, 40.0 / 55.0, 1e-15);                                // 40 / (40 + 15)
  EXPECT_NEAR(m.f1, 2 * 0.8 * (40.0 / 55.0) / (0.8 + 40.0 / 55.0), 1e-15);  // 0.761904...
  EXPECT_NEAR(m.f1, 16.0 / 21.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.yes_ratio, 0.5);  // 50 yes answers
  EXPECT_EQ(m.unknown, 0);

  // Unparsable answers are wrong and negative: on a yes probe an FN, on a no probe neither TN nor FP.
  PopeCounts u;
  u.add(true, YesNo::Unknown);
  u.add(false, YesNo::Unknown);
  u.add(true, YesNo::Yes);
  u.add(false, YesNo::No);
  m = pope_metrics(u);
  EXPECT_EQ(m.unknown, 2);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(m.precision, 1.0);
  EXPECT_DOUBLE_EQ(m.recall, 0.5);
  EXPECT_DOUBLE_EQ(m.yes_ratio, 0.25);
  EXPECT_EQ(pope_metrics(PopeCounts{}).accuracy, 0.0);  // empty: zeros, no NaN
}

TEST(LlavaQuestions, EveryGptTurnWithItsHistory) {
  const std::string path = test::temp_dir() + "/questions.json";
  test::write_file(path, R"([
    {"id": "r1", "image": "a.png", "conversations": [
      {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red", "type": "colour"},
      {"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2", "type": "count"}]},
    {"id": "r2", "image": "b.png", "conversations": [
      {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a caption", "type": "caption"}]},
    {"id": 7, "conversations": [
      {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4", "answers": ["4", "four", "4"]}]},
    {"image": "c.png", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]}
  ])");
  int64_t skipped = -1;
  const std::vector<VqaItem> items = load_llava_questions(path, &skipped);
  EXPECT_EQ(skipped, 1);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[0].id, "r1");
  EXPECT_EQ(items[0].image, "a.png");
  EXPECT_EQ(items[0].type, "colour");
  EXPECT_TRUE(items[0].history.empty());
  EXPECT_EQ(items[0].question.text, "What colour?");
  EXPECT_EQ(items[0].question.n_images, 1);
  EXPECT_EQ(items[0].answers, std::vector<std::string>{"red"});
  ASSERT_EQ(items[1].history.size(), 2u);  // the first question and its ground-truth answer
  EXPECT_EQ(items[1].history[0].role, "user");
  EXPECT_EQ(items[1].history[0].n_images, 1);
  EXPECT_EQ(items[1].history[1].role, "assistant");
  EXPECT_EQ(items[1].history[1].text, "red");
  EXPECT_EQ(items[1].question.text, "How many?");
  EXPECT_EQ(items[1].question.n_images, 0);
  EXPECT_EQ(items[2].id, "7");
  EXPECT_EQ(items[2].image, "");
  EXPECT_EQ(items[2].type, "");
  EXPECT_EQ(items[2].question.n_images, 0);
  EXPECT_EQ(items[2].answers.size(), 3u);
  EXPECT_EQ(items[3].id, "3");               // the record index when there is no id
  EXPECT_EQ(items[3].question.n_images, 1);  // an image without a marker goes with the first question
}

TEST(LlavaQuestions, MalformedInputIsAClearError) {
  auto expect_error = [](const std::string& text, const std::string& hint) {
    const std::string path = test::temp_dir() + "/bad.json";
    test::write_file(path, text);
    try {
      load_llava_questions(path);
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
    }
  };
  expect_error("[{\"id\": 1,", "is not valid JSON");
  expect_error("{\"id\": 1}", "must hold a JSON array");
  expect_error("[{\"id\": 1}]", "has no \"conversations\" array");
  expect_error(R"([{"conversations": [{"from": "gpt", "value": "x"}]}])",
               "a gpt turn must follow a human turn");
  expect_error(R"([{"conversations": [{"from": "robot", "value": "x"}]}])", "\"from\" is \"robot\"");
  expect_error(R"([{"conversations": [{"from": "human"}]}])", "has no string \"value\"");
  EXPECT_THROW(load_llava_questions(test::temp_dir() + "/missing.json"), Error);
}

namespace {

// A tiny random LLaVA (as `iris init-model --preset tiny-llava --seed 1` makes it) and a small shapes
// dataset.
struct Fixture {
  std::string model, data;
};

const Fixture& fixture() {
  static Fixture f = [] {
    cpu::set_num_threads(1);  // tiny matrices: one thread is fastest, and tests run side by side
    Fixture x;
    x.model = test::temp_dir() + "/tiny-llava";
    const models::ModelConfig cfg = models::preset("tiny-llava");
    auto m = models::Vlm::create(cfg, 1);
    models::Vlm::save_folder(x.model, cfg, m->created_weights(), DType::F32,
                             test::shared_dir() + "/tokenizers/mistral");
    x.data = test::temp_dir() + "/shapes";
    data::ShapesOptions o;
    o.n = 3;
    o.seed = 11;
    o.min_size = 64;
    o.max_size = 96;
    o.text = true;
    data::write_shapes_dataset(x.data, o);
    return x;
  }();
  return f;
}

size_t count_lines(const std::string& path) {
  std::istringstream in(test::read_file(path));
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

}  // namespace

TEST(Evaluate, TinyModelOnShapesGivesACompleteReport) {
  const Fixture& f = fixture();
  auto engine = runtime::Engine::load(f.model);
  EvalOptions o;
  o.model = f.model;
  o.data = f.data + "/llava.json";
  o.pope = f.data + "/pope.jsonl";
  o.captions = f.data + "/captions.jsonl";
  o.limit = 5;
  o.vqa_tokens = 4;
  o.caption_tokens = 8;
  o.pope_tokens = 4;
  o.progress = false;
  o.predictions = test::temp_dir() + "/predictions.jsonl";
  const json r = evaluate(*engine, o);

  EXPECT_EQ(r["model"], f.model);
  EXPECT_EQ(r["data"], o.data);
  EXPECT_EQ(r["images"], f.data);  // defaults to the data file's folder
  EXPECT_EQ(r["blind"], false);
  EXPECT_EQ(r["limit"], 5);
  EXPECT_EQ(r["model_has_vision"], true);

  const json& v = r["vqa"];
  EXPECT_EQ(v["count"], 5);
  EXPECT_EQ(v["skipped_too_long"], 0);
  EXPECT_EQ(v["skipped_caption_turns"], 3);  // one caption conversation per image
  int64_t per_type = 0;
  for (const auto& [t, m] : v["by_type"].items()) {
    per_type += m["count"].get<int64_t>();
    EXPECT_GE(m["accuracy"].get<double>(), 0.0);
    EXPECT_LE(m["accuracy"].get<double>(), 1.0);
    EXPECT_NE(t, "caption");
  }
  EXPECT_EQ(per_type, 5);
  EXPECT_GE(v["accuracy"].get<double>(), 0.0);
  EXPECT_LE(v["accuracy"].get<double>(), 1.0);

  const json& c = r["captions"];
  EXPECT_EQ(c["images"], 3);  // 3 images (limit 5)
  EXPECT_EQ(c["bleu"].size(), 4u);
  EXPECT_EQ(c["bleu4"], c["bleu"][3]);
  EXPECT_GE(c["cider"].get<double>(), 0.0);
  EXPECT_FALSE(std::isnan(c["cider"].get<double>()));

  const json& p = r["pope"];
  int64_t probes = 0;
  for (const auto& [split, m] : p["splits"].items()) {
    probes += m["count"].get<int64_t>();
    for (const char* k : {"accuracy", "precision", "recall", "f1", "yes_ratio"}) {
      EXPECT_GE(m[k].get<double>(), 0.0) << split << " " << k;
      EXPECT_LE(m[k].get<double>(), 1.0) << split << " " << k;
    }
  }
  EXPECT_EQ(probes, 5);
  EXPECT_EQ(p["all"]["count"], 5);
  EXPECT_EQ(count_lines(o.predictions), 5u + 3u + 5u);

  const std::string table = format_report(r);
  for (const char* s : {"VQA", "overall", "Captions", "BLEU-4", "CIDEr", "POPE", "precision"})
    EXPECT_NE(table.find(s), std::string::npos) << s << " in\n" << table;

  // Blind: the same questions, grey images; the same counts.
  o.blind = true;
  o.captions.clear();
  o.predictions.clear();
  const json b = evaluate(*engine, o);
  EXPECT_EQ(b["blind"], true);
  EXPECT_EQ(b["vqa"]["count"], 5);
  EXPECT_EQ(b["pope"]["all"]["count"], 5);
  EXPECT_FALSE(b.contains("captions"));
  EXPECT_NE(format_report(b).find("blind"), std::string::npos);
}

TEST(Evaluate, BadInputIsAClearError) {
  const Fixture& f = fixture();
  auto engine = runtime::Engine::load(f.model);
  EvalOptions o;
  o.progress = false;
  EXPECT_THROW(evaluate(*engine, o), Error);  // nothing to evaluate
  o.pope = test::temp_dir() + "/bad_pope.jsonl";
  test::write_file(
      o.pope, "{\"image\": \"images/000000.png\", \"question\": \"Is there?\", \"answer\": \"maybe\"}\n");
  o.images = f.data;
  try {
    evaluate(*engine, o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("neither yes nor no"), std::string::npos) << e.what();
  }
  test::write_file(o.pope, "{\"image\": \"nope.png\", \"question\": \"Is there?\", \"answer\": \"yes\"}\n");
  try {
    evaluate(*engine, o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nope.png"), std::string::npos) << e.what();
  }
  test::write_file(o.pope, "not json\n");
  EXPECT_THROW(evaluate(*engine, o), Error);
}
