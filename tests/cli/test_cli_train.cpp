// `iris train --data`: the loss goes down on a generated dataset, stage 1 leaves the vision tower and the LLM
// byte-identical, a run killed with SIGKILL and resumed ends with the same weights as one never interrupted, and
// an unwritable output folder is a clear error.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/safetensors.h"
#include "cli/cli_util.h"
#include "test_checks.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

struct TrainFixture {
  std::string dir, model, data;
};

const TrainFixture& trainFixture() {
  static TrainFixture f = [] {
    TrainFixture x;
    x.dir = test::temp_dir() + "/train-cli";
    x.model = x.dir + "/model";
    x.data = x.dir + "/data";
    std::string out;
    EXPECT_EQ(test::run_iris("data shapes --out " + x.data + " --n 16 --seed 5", &out), 0) << out;
    EXPECT_EQ(test::run_iris("init-model --preset tiny-llava --seed 2 --tokenizer " + test::shared_dir() +
                      "/tokenizers/mistral --out " + x.model, &out), 0) << out;
    return x;
  }();
  return f;
}

std::string train_args(const TrainFixture& f, const std::string& out, const std::string& extra) {
  return "train -m " + f.model + " --data " + f.data + "/llava.json --images " + f.data + " -t 1 --workers 1 --out " +
         out + " " + extra;
}

}  // namespace

TEST(CliTrain, LossGoesDownAndStage1FreezesTheRest) {
  const TrainFixture& f = trainFixture();
  const std::string out2 = f.dir + "/run-stage2", out1 = f.dir + "/run-stage1";
  std::string log;
  ASSERT_EQ(test::run_iris(train_args(f, out2, "--stage 2 --lr 2e-3 --max-steps 24 --batch-size 4 --seed 1"), &log), 0) << log;
  std::vector<double> l = test::run_losses(out2);
  ASSERT_EQ(l.size(), 24u);
  double first = (l[0] + l[1] + l[2] + l[3]) / 4, last = (l[20] + l[21] + l[22] + l[23]) / 4;
  EXPECT_LT(last, 0.7 * first) << "loss did not go down: first " << first << ", last " << last;
  EXPECT_TRUE(fs::exists(out2 + "/loss.svg"));
  EXPECT_TRUE(fs::exists(out2 + "/final/config.json"));

  ASSERT_EQ(test::run_iris(train_args(f, out1, "--stage 1 --lr 1e-3 --max-steps 3 --batch-size 2"), &log), 0) << log;
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(out1 + "/final");
  int changed = 0;
  for (const std::string& name : base.names()) {
    bool projector = name.rfind("multi_modal_projector.", 0) == 0;
    bool same = test::same_bytes(base.get(name), trained.get(name));
    if (!projector) {
      EXPECT_TRUE(same) << name << " changed in stage 1";
    }
    changed += projector && !same;
  }
  EXPECT_GT(changed, 0) << "the projector did not train";
  // The trained folder runs.
  EXPECT_EQ(test::run_iris("run -m " + out1 + "/final --image " + f.data + "/images/000000.png -p hi -n 2 -t 1", &log), 0) << log;
}

TEST(CliTrain, KilledAndResumedEqualsUninterrupted) {
  const TrainFixture& f = trainFixture();
  const std::string a = f.dir + "/run-a", b = f.dir + "/run-b";
  const std::string extra = "--stage 2 --lora-rank 4 --lr 1e-3 --max-steps 12 --batch-size 2 --save-every 2 --seed 3";
  std::string log;
  ASSERT_EQ(test::run_iris(train_args(f, a, extra), &log), 0) << log;
  // Start run b, kill it with SIGKILL once its step-4 checkpoint exists, then resume it.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string cmd = std::string(IRIS_BINARY) + " " + train_args(f, b, extra) + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  bool killed = false;
  for (int i = 0; i < 6000 && !killed; ++i) {
    if (fs::exists(b + "/step-00000004")) {
      kill(pid, SIGKILL);
      killed = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(killed) << "run b never reached step 4";
  ASSERT_TRUE(WIFSIGNALED(st)) << "run b finished before it could be killed";
  EXPECT_FALSE(fs::exists(b + "/final/model.safetensors"));
  ASSERT_EQ(test::run_iris("train --resume " + b + " -t 1", &log), 0) << log;
  EXPECT_NE(log.find("resuming"), std::string::npos) << log;
  io::Checkpoint wa = io::Checkpoint::open(a + "/final"), wb = io::Checkpoint::open(b + "/final");
  ASSERT_EQ(wa.names(), wb.names());
  for (const std::string& name : wa.names()) EXPECT_TRUE(test::same_bytes(wa.get(name), wb.get(name))) << name;
  io::Checkpoint aa = io::Checkpoint::open(a + "/adapter/adapter_model.safetensors"),
                 ab = io::Checkpoint::open(b + "/adapter/adapter_model.safetensors");
  for (const std::string& name : aa.names()) EXPECT_TRUE(test::same_bytes(aa.get(name), ab.get(name))) << name;
  EXPECT_EQ(test::run_losses(a), test::run_losses(b));
}

TEST(CliTrain, BadOutputAndData) {
  const TrainFixture& f = trainFixture();
  std::string log;
  EXPECT_EQ(test::run_iris(train_args(f, "/sys/iris-cannot-write-here", "--max-steps 1"), &log), 1) << log;
  EXPECT_NE(log.find("iris: error:"), std::string::npos) << log;
  // A data file with a malformed line, a missing image and no assistant turn: skipped with counts.
  const std::string bad = f.dir + "/bad.json";
  std::ifstream in(f.data + "/llava.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j.push_back({{"id", "x1"}, {"image", "images/missing.png"}, {"conversations", {{{"from", "human"}, {"value", "<image>\nhi"}}, {{"from", "gpt"}, {"value", "a"}}}}});
  j.push_back({{"id", "x2"}, {"conversations", {{{"from", "human"}, {"value", "only a question"}}}}});
  test::write_file(bad, j.dump());
  const std::string out = f.dir + "/run-bad";
  ASSERT_EQ(test::run_iris("train -m " + f.model + " --data " + bad + " --images " + f.data +
                " -t 1 --workers 1 --max-steps 2 --batch-size 2 --out " + out, &log), 0) << log;
  EXPECT_NE(log.find("skipped"), std::string::npos) << log;
  EXPECT_EQ(test::run_iris("train -m " + f.model + " --data " + bad + " --images " + f.data + " -t 1 --max-steps 2 --strict --out " +
                f.dir + "/run-strict", &log), 1) << log;
  // A second run into the same folder must not overwrite it.
  EXPECT_EQ(test::run_iris(train_args(f, out, "--max-steps 1"), &log), 1) << log;
  EXPECT_NE(log.find("--resume"), std::string::npos) << log;
}

// A LoRA run's adapter applied with `iris run --lora` and merged with `iris merge-lora` give the same greedy text.
TEST(CliTrain, LoraAdapterRunAndMergeAgree) {
  const TrainFixture& f = trainFixture();
  const std::string out = f.dir + "/run-lora", merged = f.dir + "/merged";
  std::string log;
  ASSERT_EQ(test::run_iris(train_args(f, out, "--stage 2 --lora-rank 4 --lr 5e-3 --max-steps 6 --batch-size 2 --seed 9"), &log), 0)
      << log;
  ASSERT_TRUE(fs::exists(out + "/adapter/adapter_config.json"));
  ASSERT_EQ(test::run_iris("merge-lora -m " + f.model + " --lora " + out + "/adapter --out " + merged, &log), 0) << log;
  const std::string q = " --image " + f.data + "/images/000001.png -p 'What shape is it?' -n 12 -t 1";
  std::string with_adapter, with_merged, base;
  ASSERT_EQ(test::run_iris("run -m " + f.model + " --lora " + out + "/adapter" + q, &with_adapter), 0) << with_adapter;
  ASSERT_EQ(test::run_iris("run -m " + merged + q, &with_merged), 0) << with_merged;
  ASSERT_EQ(test::run_iris("run -m " + f.model + q, &base), 0) << base;
  EXPECT_EQ(with_adapter, with_merged);
  EXPECT_NE(with_adapter, base) << "the adapter changed nothing";
  EXPECT_EQ(test::run_iris("run -m " + f.model + " --lora " + f.dir + "/no-such-adapter" + q, &log), 1) << log;
}

// --train / --freeze override the stage per component.
TEST(CliTrain, TrainFreezeOverrideTheStage) {
  const TrainFixture& f = trainFixture();
  const std::string out = f.dir + "/run-freeze";
  std::string log;
  ASSERT_EQ(test::run_iris(train_args(f, out, "--stage 2 --freeze projector --train vision --lr 1e-3 --max-steps 2 --batch-size 2"),
                &log), 0) << log;
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(out + "/final");
  int llm_changed = 0, vision_changed = 0;
  for (const std::string& name : base.names()) {
    bool same = test::same_bytes(base.get(name), trained.get(name));
    if (name.rfind("multi_modal_projector.", 0) == 0) {
      EXPECT_TRUE(same) << name << " is frozen but changed";
    }
    llm_changed += name.rfind("language_model.", 0) == 0 && !same;
    vision_changed += name.rfind("vision_tower.", 0) == 0 && !same;
  }
  EXPECT_GT(llm_changed, 0);
  EXPECT_GT(vision_changed, 0);
  EXPECT_EQ(test::run_iris(train_args(f, f.dir + "/run-badcomp", "--train eyes --max-steps 1"), &log), 1) << log;
}

// --lr-vision/--lr-projector/--lr-llm: each component's parameter group steps at its own rate. AdamW's first step
// moves every element by lr * g / (|g| + eps), so the largest move in a group is its rate (no decay, no clipping).
TEST(CliTrain, LearningRatePerComponent) {
  const TrainFixture& f = trainFixture();
  const std::string out = f.dir + "/run-group-lr";
  std::string log;
  ASSERT_EQ(test::run_iris(train_args(f, out, "--stage 3 --lr 1e-3 --lr-vision 2e-5 --lr-projector 3e-4 --max-grad-norm 0 "
                                   "--max-steps 1 --batch-size 2"),
                &log), 0) << log;
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(out + "/final");
  std::map<std::string, double> largest;  // component prefix -> largest |change|
  for (const std::string& name : base.names()) {
    Tensor a = base.get(name).to(DType::F32).contiguous(), b = trained.get(name).to(DType::F32).contiguous();
    std::string prefix = name.substr(0, name.find('.'));
    for (int64_t i = 0; i < a.numel(); ++i)
      largest[prefix] = std::max(largest[prefix], double(std::fabs(b.data<float>()[i] - a.data<float>()[i])));
  }
  EXPECT_NEAR(largest["vision_tower"], 2e-5, 2e-7);
  EXPECT_NEAR(largest["multi_modal_projector"], 3e-4, 3e-6);
  EXPECT_NEAR(largest["language_model"], 1e-3, 1e-5);
  // A rate for a component that does not train, or a negative one, is an error.
  EXPECT_EQ(test::run_iris(train_args(f, f.dir + "/run-group-lr-bad", "--stage 2 --lr-vision 1e-5 --max-steps 1"), &log), 1)
      << log;
  EXPECT_NE(log.find("--lr-vision"), std::string::npos) << log;
  EXPECT_EQ(test::run_iris(train_args(f, f.dir + "/run-group-lr-neg", "--stage 3 --lr-llm -1 --max-steps 1"), &log), 1) << log;
}

// --objective lm: next-token training on plain text changes the language model only, lowers the loss, resumes
// exactly after a stop, and refuses data it cannot use.
TEST(CliTrain, LanguageModelObjectiveOnText) {
  const TrainFixture& f = trainFixture();
  const std::string text = f.dir + "/corpus.txt";
  std::string corpus;
  for (int i = 0; i < 40; ++i)
    corpus += "The red circle is left of the blue square. How many stars? " + std::to_string(i % 4) + "\n\n";
  test::write_file(text, corpus);
  const std::string out = f.dir + "/run-lm";
  const std::string args = "train --objective lm -m " + f.model + " --text " + text + " --text " + f.data +
                           "/captions.jsonl --max-tokens 32 --batch-size 4 --lr 3e-3 -t 1 --seed 3 --out ";
  std::string log;
  ASSERT_EQ(test::run_iris(args + out + " --max-steps 20", &log), 0) << log;
  std::vector<double> l = test::run_losses(out);
  ASSERT_EQ(l.size(), 20u);
  EXPECT_LT((l[16] + l[17] + l[18] + l[19]) / 4, 0.7 * (l[0] + l[1] + l[2] + l[3]) / 4);
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(out + "/final");
  int llm_changed = 0;
  for (const std::string& name : base.names()) {
    const bool llm = name.rfind("language_model.", 0) == 0;
    const bool same = test::same_bytes(base.get(name), trained.get(name));
    if (!llm) {
      EXPECT_TRUE(same) << name << " changed under --objective lm";
    }
    llm_changed += llm && !same;
  }
  EXPECT_GT(llm_changed, 0);

  // Stopped after 8 steps (checkpoint at 8), resumed: the same weights as the uninterrupted run of 12.
  const std::string full = f.dir + "/run-lm-full", part = f.dir + "/run-lm-part";
  ASSERT_EQ(test::run_iris(args + full + " --max-steps 12 --save-every 4", &log), 0) << log;
  ASSERT_EQ(test::run_iris(args + part + " --max-steps 12 --save-every 4", &log), 0) << log;
  fs::remove_all(part + "/final");
  for (const char* step : {"step-00000012"}) fs::remove_all(part + "/" + step);
  {
    std::ofstream latest(part + "/latest");
    latest << "step-00000008\n";
  }
  ASSERT_EQ(test::run_iris("train --resume " + part + " -t 1", &log), 0) << log;
  io::Checkpoint a = io::Checkpoint::open(full + "/final"), b = io::Checkpoint::open(part + "/final");
  for (const std::string& name : a.names()) EXPECT_TRUE(test::same_bytes(a.get(name), b.get(name))) << name;

  EXPECT_NE(test::run_iris("train --objective lm -m " + f.model + " --out " + f.dir + "/lm-bad1 -t 1", &log), 0);
  EXPECT_NE(log.find("--text"), std::string::npos) << log;
  EXPECT_NE(test::run_iris("train --objective lm -m " + f.model + " --text " + f.dir + "/missing.txt --out " + f.dir +
                    "/lm-bad2 -t 1", &log), 0);
  EXPECT_NE(log.find("missing.txt"), std::string::npos) << log;
}

// --replicas N: the step's examples spread over N model copies on N threads give the same training as one model
// (up to the order of float sums), and runs with N replicas repeat exactly.
TEST(CliTrain, ReplicasTrainLikeOneModel) {
  const TrainFixture& f = trainFixture();
  std::string log;
  const std::string base = "--stage 2 --lr 2e-3 --max-steps 6 --batch-size 3 --seed 4 --save-every 0";
  ASSERT_EQ(test::run_iris(train_args(f, f.dir + "/rep1", base), &log), 0) << log;
  ASSERT_EQ(test::run_iris(train_args(f, f.dir + "/rep2", base + " --replicas 2"), &log), 0) << log;
  ASSERT_EQ(test::run_iris(train_args(f, f.dir + "/rep2b", base + " --replicas 2"), &log), 0) << log;
  std::vector<double> l1 = test::run_losses(f.dir + "/rep1"), l2 = test::run_losses(f.dir + "/rep2"), l2b = test::run_losses(f.dir + "/rep2b");
  ASSERT_EQ(l1.size(), 6u);
  ASSERT_EQ(l2.size(), 6u);
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l1[i], l2[i], 1e-4 * std::max(1.0, l1[i])) << "step " << i;
  EXPECT_EQ(l2, l2b);
  io::Checkpoint a = io::Checkpoint::open(f.dir + "/rep1/final"), b = io::Checkpoint::open(f.dir + "/rep2/final"),
                 c = io::Checkpoint::open(f.dir + "/rep2b/final");
  for (const std::string& name : a.names()) {
    Tensor x = a.get(name).to(DType::F32), y = b.get(name).to(DType::F32);
    ASSERT_EQ(x.numel(), y.numel());
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      worst = std::max(worst, double(std::abs(x.data<float>()[i] - y.data<float>()[i])));
      scale = std::max(scale, double(std::abs(x.data<float>()[i])));
    }
    EXPECT_LE(worst, 1e-4 * std::max(scale, 1e-2)) << name;
    EXPECT_TRUE(test::same_bytes(b.get(name), c.get(name))) << name;
  }
  EXPECT_NE(test::run_iris(train_args(f, f.dir + "/rep0", base + " --replicas 0"), &log), 0);
  EXPECT_NE(log.find("--replicas"), std::string::npos) << log;
}
