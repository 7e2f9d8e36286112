// The built-in model (models/iris-shapes, made by scripts/train-builtin.sh): `iris run` and `iris eval` without -m
// find it; it gives the answers recorded when it was shipped (examples/builtin_answers.jsonl) to the fixed example
// questions (examples/questions.json); IRIS_MODEL overrides the search and a bad value is a clear error.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "test_util.h"

using namespace iris;

namespace {

// iris with no IRIS_MODEL in its environment unless `env` sets one.
int run_builtin(const std::string& args, std::string* out, const std::string& env = "env -u IRIS_MODEL") {
  return test::run_iris(args, out, env);
}

std::string examples() { return test::source_dir() + "/examples"; }

std::map<std::string, nlohmann::json> read_predictions(const std::string& path) {
  std::map<std::string, nlohmann::json> r;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      nlohmann::json j = nlohmann::json::parse(line);
      r[j.at("id").get<std::string>()] = j;
    }
  return r;
}

}  // namespace

TEST(CliBuiltin, RunWithoutModelUsesTheBuiltinModel) {
  std::string out;
  ASSERT_EQ(run_builtin("run --image " + examples() + "/scene1.png -p \"How many red circles are there?\" -n 8 -t 1", &out),
            0)
      << out;
  EXPECT_EQ(out.find("error"), std::string::npos) << out;
}

TEST(CliBuiltin, AnswersTheExampleQuestionsAsShipped) {
  const std::string dir = test::temp_dir();
  std::string out;
  ASSERT_EQ(run_builtin("eval --data " + examples() + "/questions.json --predictions " + dir + "/pred.jsonl -q -t 1", &out), 0)
      << out;
  const auto got = read_predictions(dir + "/pred.jsonl");
  const auto shipped = read_predictions(examples() + "/builtin_answers.jsonl");
  ASSERT_GE(shipped.size(), 20u);
  ASSERT_EQ(got.size(), shipped.size());
  // Greedy answers of an f32 model: oneDNN's products may round differently on another CPU (AVX2 vs AVX-512),
  // which can flip a near-tie; on the machine the model was shipped from every answer is equal.
  size_t same = 0;
  std::string diff;
  for (const auto& [id, s] : shipped) {
    auto it = got.find(id);
    ASSERT_NE(it, got.end()) << id;
    EXPECT_EQ(it->second["question"], s["question"]);
    if (it->second["prediction"] == s["prediction"]) ++same;
    else diff += "\n  " + id + ": now " + it->second["prediction"].dump() + ", shipped " + s["prediction"].dump();
  }
  EXPECT_GE(same, shipped.size() - 1) << "answers differ from the shipped ones:" << diff;
}

TEST(CliBuiltin, IrisModelOverridesAndABadOneIsAnError) {
  std::string out;
  EXPECT_EQ(run_builtin("run --image " + examples() + "/scene1.png -p hi -t 1", &out, "IRIS_MODEL=/nonexistent/model"), 1);
  EXPECT_NE(out.find("IRIS_MODEL=/nonexistent/model is not a model folder"), std::string::npos) << out;
  EXPECT_EQ(run_builtin("run --image " + examples() + "/scene1.png -p hi -n 4 -t 1", &out,
                "IRIS_MODEL=" + test::source_dir() + "/models/iris-shapes"),
            0)
      << out;
}
