// `iris data shapes` and `iris eval` end to end through the binary: a small generated dataset, a tiny random
// model from `iris init-model`, the report file and table, and bad arguments (one clear error line, exit code
// 1).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

using CmdResult = test::CliResult;
CmdResult iris_run(const std::string& args) { return test::iris_cli(args); }

const std::string& shapes_dir() {
  static std::string dir = [] {
    const std::string d = test::temp_dir() + "/cli-shapes";
    const CmdResult r =
        iris_run("data shapes --out " + d + " --n 4 --seed 2 --text --min-size 64 --max-size 96");
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("4 images"), std::string::npos) << r.out;
    return d;
  }();
  return dir;
}

}  // namespace

TEST(CliDataShapes, WritesTheDatasetDeterministically) {
  const std::string a = shapes_dir(), b = test::temp_dir() + "/cli-shapes-again";
  ASSERT_EQ(iris_run("data shapes --out " + b + " --n 4 --seed 2 --text --min-size 64 --max-size 96").code,
            0);
  for (const char* f : {"llava.json", "llava_text.json", "captions.jsonl", "pope.jsonl", "scenes.jsonl", "meta.json",
                        "images/000003.png"})
    EXPECT_EQ(test::read_file(a + "/" + f), test::read_file(b + "/" + f)) << f;
}

TEST(CliDataShapes, BadArgumentsAreClearErrors) {
  const std::string out = test::temp_dir() + "/cli-shapes-bad";
  test::expect_cli_error(iris_run("data shapes --out " + out + " --n 0"), "--n 0 is out of range");
  test::expect_cli_error(iris_run("data shapes --out " + out + " --n 3 --max-size 9000"),
               "--max-size 9000 is out of range");
  test::expect_cli_error(iris_run("data shapes --out " + out + " --n 3 --min-size 200 --max-size 100"),
               "--min-size 200 is larger than --max-size 100");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_NE(iris_run("data shapes --n 3").code, 0);  // --out is required (CLI11's message)
}

TEST(CliEval, TinyModelReport) {
  const std::string d = shapes_dir(), model = test::temp_dir() + "/cli-eval-model",
                    report = test::temp_dir() + "/cli-eval-report.json";
  CmdResult r = iris_run("init-model --preset tiny-llava --seed 1 --tokenizer " + test::shared_dir() +
                         "/tokenizers/mistral --out " + model);
  ASSERT_EQ(r.code, 0) << r.out;
  r = iris_run("eval -m " + model + " -t 1 -q --data " + d + "/llava.json --images " + d + " --pope " + d +
               "/pope.jsonl --captions " + d +
               "/captions.jsonl --limit 3 --vqa-tokens 4 --caption-tokens 8 --out " + report);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* s : {"VQA", "overall", "BLEU-4", "CIDEr", "POPE"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  const nlohmann::json j = nlohmann::json::parse(test::read_file(report));
  EXPECT_EQ(j["model"], model);
  EXPECT_EQ(j["blind"], false);
  EXPECT_EQ(j["vqa"]["count"], 3);
  EXPECT_EQ(j["captions"]["images"], 3);
  EXPECT_EQ(j["pope"]["all"]["count"], 3);

  r = iris_run("eval -m " + model + " -t 1 -q --blind --pope " + d + "/pope.jsonl --limit 2 --out " + report);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(test::read_file(report))["blind"], true);

  test::expect_cli_error(iris_run("eval -m " + model + " -q"), "nothing to evaluate");
  test::expect_cli_error(iris_run("eval -m " + model + " -q --limit -1 --pope " + d + "/pope.jsonl"),
               "--limit -1 is negative");
  test::expect_cli_error(iris_run("eval -m " + model + " -q --data " + d + "/missing.json"),
               "cannot read the data file");
}
