// `iris train --objective clip`: a run on a generated shapes set writes final/ (the VLM, projector and LLM
// byte-identical to the input) and text_encoder/; a run killed with SIGKILL after a checkpoint and resumed with
// `--resume` ends byte-identical to an uninterrupted one; bad flags are clear errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/safetensors.h"
#include "cli/cli_util.h"
#include "test_checks.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

struct ClipFixture {
  std::string dir, model, data;
};

const ClipFixture& clipFixture() {
  static ClipFixture f = [] {
    ClipFixture x;
    x.dir = test::temp_dir() + "/clip-cli";
    x.model = x.dir + "/model";
    x.data = x.dir + "/data";
    std::string out;
    EXPECT_EQ(test::run_iris("data shapes --out " + x.data + " --n 16 --seed 5 --min-size 64 --max-size 96", &out), 0) << out;
    EXPECT_EQ(test::run_iris("init-model --preset tiny-llava --seed 2 --tokenizer " + test::shared_dir() +
                      "/tokenizers/mistral --out " + x.model, &out), 0) << out;
    return x;
  }();
  return f;
}

std::string clip_args(const ClipFixture& f, const std::string& out, const std::string& extra) {
  return "train --objective clip -m " + f.model + " --captions " + f.data + "/captions.jsonl --images " + f.data +
         " --text-hidden 32 --embed-dim 16 -t 1 --out " + out + " " + extra;
}

}  // namespace

TEST(CliClip, KilledAndResumedEqualsUninterrupted) {
  const ClipFixture& f = clipFixture();
  const std::string a = f.dir + "/run-a", b = f.dir + "/run-b";
  const std::string extra = "--batch-size 4 --max-steps 12 --save-every 2 --warmup 2 --seed 3";
  std::string log;
  ASSERT_EQ(test::run_iris(clip_args(f, a, extra), &log), 0) << log;
  EXPECT_NE(log.find("acc i2t"), std::string::npos) << log;
  // final/: projector and LLM exactly as given; the vision tower trained.
  io::Checkpoint base = io::Checkpoint::open(f.model), trained = io::Checkpoint::open(a + "/final");
  int vision_changed = 0;
  for (const std::string& name : base.names()) {
    const bool same = test::same_bytes(base.get(name), trained.get(name));
    if (name.rfind("vision_tower.", 0) == 0) {
      vision_changed += !same;
    } else {
      EXPECT_TRUE(same) << name << " changed";
    }
  }
  EXPECT_GT(vision_changed, 0);
  EXPECT_TRUE(fs::exists(a + "/text_encoder/config.json"));
  EXPECT_TRUE(fs::exists(a + "/text_encoder/clip_heads.safetensors"));

  // Run b: killed with SIGKILL once its step-4 checkpoint exists, then resumed.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string cmd = std::string(IRIS_BINARY) + " " + clip_args(f, b, extra) + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  bool killed = false;
  for (int i = 0; i < 6000 && !killed; ++i) {
    if (fs::exists(b + "/step-00000004")) {
      kill(pid, SIGKILL);
      killed = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(killed) << "run b never reached step 4";
  ASSERT_TRUE(WIFSIGNALED(st)) << "run b finished before it could be killed";
  EXPECT_FALSE(fs::exists(b + "/final/model.safetensors"));
  ASSERT_EQ(test::run_iris("train --resume " + b + " -t 1", &log), 0) << log;
  EXPECT_NE(log.find("resuming"), std::string::npos) << log;
  test::expect_same_checkpoint(a + "/final", b + "/final");
  test::expect_same_checkpoint(a + "/text_encoder", b + "/text_encoder");
  test::expect_same_checkpoint(a + "/text_encoder/clip_heads.safetensors", b + "/text_encoder/clip_heads.safetensors");
  EXPECT_EQ(test::run_losses(a), test::run_losses(b));
}

TEST(CliClip, BadInput) {
  const ClipFixture& f = clipFixture();
  std::string log;
  EXPECT_EQ(test::run_iris(clip_args(f, f.dir + "/bad1", "--batch-size 1 --max-steps 1"), &log), 1) << log;
  EXPECT_NE(log.find("at least 2 pairs"), std::string::npos) << log;
  EXPECT_EQ(test::run_iris("train --objective clip -m " + f.model + " --captions " + f.dir + "/none.jsonl --out " + f.dir + "/bad2",
                &log), 1) << log;
  EXPECT_NE(log.find("does not exist"), std::string::npos) << log;
  EXPECT_NE(test::run_iris("train --objective nope -m " + f.model + " --out " + f.dir + "/bad3", &log), 0) << log;
  EXPECT_NE(log.find("objective"), std::string::npos) << log;
  EXPECT_EQ(test::run_iris("train --objective clip --resume " + f.dir + "/no-such-run", &log), 1) << log;
  EXPECT_NE(log.find("not a contrastive run"), std::string::npos) << log;
}
