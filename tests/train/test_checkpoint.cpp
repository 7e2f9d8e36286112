// Training checkpoints: bit-exact round trips, `latest` and pruning, incomplete and half-written folders,
// failing saves (unwritable folder, full disk) that keep the last good checkpoint, and kill-and-resume: a toy
// training loop killed with SIGKILL at random moments and resumed ends with the same bits as one never
// interrupted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "cpu/threads.h"
#include "io/file.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/schedule.h"

using namespace iris;
using namespace iris::train;
namespace fs = std::filesystem;

using iris::test::fresh_dir;

namespace {

Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::F32) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  Tensor t = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = nd(rng);
  return dtype == DType::F32 ? t : t.to(dtype);
}

// Same names, dtypes, shapes and bytes (order-insensitive).
::testing::AssertionResult same_tensors(io::NamedTensors a, io::NamedTensors b) {
  auto by_name = [](const auto& x, const auto& y) { return x.first < y.first; };
  std::sort(a.begin(), a.end(), by_name);
  std::sort(b.begin(), b.end(), by_name);
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " vs " << b.size() << " tensors";
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& [na, ta] = a[i];
    const auto& [nb, tb] = b[i];
    if (na != nb) return ::testing::AssertionFailure() << "name " << na << " vs " << nb;
    if (ta.dtype() != tb.dtype() || ta.shape() != tb.shape())
      return ::testing::AssertionFailure() << na << ": " << dtype_name(ta.dtype()) << shape_str(ta.shape())
                                           << " vs " << dtype_name(tb.dtype()) << shape_str(tb.shape());
    Tensor ca = ta.contiguous(), cb = tb.contiguous();
    if (std::memcmp(ca.raw(), cb.raw(), ca.nbytes()) != 0)
      return ::testing::AssertionFailure() << na << " differs";
  }
  return ::testing::AssertionSuccess();
}

struct Fixture {
  io::NamedTensors weights;
  std::unique_ptr<Optimizer> opt;
  std::vector<std::vector<float>> grads;

  Fixture() {
    weights = {{"proj.weight", random_tensor({16, 8}, 1)}, {"proj.bias", random_tensor({8}, 2)}};
    opt = Optimizer::create({});
    for (auto& [n, t] : weights) grads.emplace_back(size_t(t.numel()), 0.01f);
    step();
  }
  std::vector<ParamRef> params() {
    std::vector<ParamRef> p;
    for (size_t i = 0; i < weights.size(); ++i)
      p.push_back({weights[i].first, weights[i].second.data<float>(), grads[i].data(),
                   weights[i].second.numel(), true});
    return p;
  }
  void step() { opt->step(params(), 1e-3); }
};

TrainState state_at(int64_t step) {
  TrainState s;
  s.step = step;
  s.epoch = step / 10;
  s.data_position = step % 10;
  s.rng_seed = 0xfedcba9876543210ull;
  std::mt19937_64 rng(s.rng_seed);
  rng.discard(uint64_t(step));
  s.rng_state = rng_to_string(rng);
  s.extra = {{"config", {{"lr", 1e-3}, {"stage", "pretrain"}}}, {"losses", {2.5, 2.25}}};
  return s;
}

}  // namespace

TEST(Checkpoint, RoundTripIsBitExact) {
  const std::string run = fresh_dir("roundtrip");
  Fixture f;
  f.weights.emplace_back("bf16.weight", random_tensor({3, 5}, 3, DType::BF16));
  // special values survive as bits
  f.weights[0].second.data<float>()[0] = -0.0f;
  f.weights[0].second.data<float>()[1] = std::numeric_limits<float>::denorm_min();
  f.weights[0].second.data<float>()[2] = INFINITY;
  TrainState s = state_at(7);
  save_checkpoint(run, s, f.weights, *f.opt, 3);
  auto dir = latest_checkpoint(run);
  ASSERT_TRUE(dir.has_value());
  EXPECT_EQ(fs::path(*dir).filename(), "step-00000007");
  LoadedCheckpoint ck = load_checkpoint(*dir);
  EXPECT_EQ(ck.state.step, 7);
  EXPECT_EQ(ck.state.epoch, 0);
  EXPECT_EQ(ck.state.data_position, 7);
  EXPECT_EQ(ck.state.rng_seed, s.rng_seed);
  EXPECT_EQ(ck.state.rng_state, s.rng_state);
  EXPECT_EQ(ck.state.extra, s.extra);
  EXPECT_EQ(ck.optimizer_kind, "adamw");
  EXPECT_TRUE(same_tensors(ck.weights, f.weights));
  EXPECT_TRUE(same_tensors(ck.optimizer, f.opt->state()));
  // The loaded state drives an optimizer to the same next step.
  auto opt2 = Optimizer::create({});
  opt2->load_state(ck.optimizer);
  EXPECT_EQ(opt2->steps(), 1);
  EXPECT_TRUE(same_tensors(opt2->state(), f.opt->state()));
}

TEST(Checkpoint, RngStateRoundTrip) {
  std::mt19937_64 a(123);
  a.discard(1000);
  std::mt19937_64 b;
  rng_from_string(b, rng_to_string(a));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a(), b());
  EXPECT_THROW(rng_from_string(b, "1 2 3 not a state"), Error);
}

TEST(Checkpoint, LatestPointsToNewestAndKeepLastPrunes) {
  const std::string run = fresh_dir("prune");
  Fixture f;
  for (int64_t step : {100, 200, 300, 400, 500}) {
    save_checkpoint(run, state_at(step), f.weights, *f.opt, 2);
    EXPECT_EQ(test::read_file(run + "/latest"), checkpoint_name(step) + "\n");
    EXPECT_EQ(*latest_checkpoint(run), run + "/" + checkpoint_name(step));
  }
  auto all = list_checkpoints(run);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 400);
  EXPECT_EQ(all[1].first, 500);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(run)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names,
            (std::vector<std::string>{"latest", "step-00000400", "step-00000500"}));  // no temp leftovers
  // keep_last <= 0 keeps everything
  const std::string run2 = fresh_dir("keep_all");
  for (int64_t step : {1, 2, 3}) save_checkpoint(run2, state_at(step), f.weights, *f.opt, 0);
  EXPECT_EQ(list_checkpoints(run2).size(), 3u);
  // Saving the same step again (a resumed run passing a step the killed one had saved) replaces it whole.
  f.step();
  save_checkpoint(run2, state_at(3), f.weights, *f.opt, 0);
  auto ck = load_checkpoint(run2 + "/step-00000003");
  EXPECT_EQ(ck.state.step, 3);
  EXPECT_TRUE(same_tensors(ck.optimizer, f.opt->state()));
  EXPECT_EQ(list_checkpoints(run2).size(), 3u);
}

TEST(Checkpoint, IncompleteFoldersAreSkipped) {
  const std::string run = fresh_dir("incomplete");
  Fixture f;
  for (int64_t step : {10, 20}) save_checkpoint(run, state_at(step), f.weights, *f.opt, 0);
  const std::string newest = run + "/step-00000020", older = run + "/step-00000010";
  ASSERT_EQ(*latest_checkpoint(run), newest);

  // Truncated weights: detected by size, skipped in favour of the previous one.
  const std::string w = newest + "/weights.safetensors";
  std::string bytes = test::read_file(w);
  test::write_file(w, bytes.substr(0, bytes.size() - 100));
  auto problem = checkpoint_problem(newest);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("weights.safetensors"), std::string::npos) << *problem;
  EXPECT_EQ(*latest_checkpoint(run), older);
  try {
    load_checkpoint(newest);
    ADD_FAILURE() << "loaded a truncated checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weights.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(newest), std::string::npos) << e.what();
  }
  // Same size but a damaged header is caught too.
  std::string damaged = bytes;
  damaged[9] = '#';
  test::write_file(w, damaged);
  EXPECT_TRUE(checkpoint_problem(newest).has_value());
  test::write_file(w, bytes);
  EXPECT_FALSE(checkpoint_problem(newest).has_value());

  // A missing file.
  fs::rename(newest + "/optimizer.safetensors", run + "/moved");
  EXPECT_NE(checkpoint_problem(newest)->find("optimizer.safetensors"), std::string::npos);
  EXPECT_EQ(*latest_checkpoint(run), older);
  fs::rename(run + "/moved", newest + "/optimizer.safetensors");

  // A truncated state.json.
  std::string st = test::read_file(newest + "/state.json");
  test::write_file(newest + "/state.json", st.substr(0, st.size() / 2));
  EXPECT_NE(checkpoint_problem(newest)->find("state.json"), std::string::npos);
  EXPECT_EQ(*latest_checkpoint(run), older);
  test::write_file(newest + "/state.json", st);
  EXPECT_EQ(*latest_checkpoint(run), newest);

  // A damaged `latest` falls back to the newest complete folder.
  test::write_file(run + "/latest", "step-000\x01garbage");
  EXPECT_EQ(*latest_checkpoint(run), newest);
  fs::remove(run + "/latest");
  EXPECT_EQ(*latest_checkpoint(run), newest);
  // `latest` naming an older complete folder is honoured (the pointer is the source of truth).
  test::write_file(run + "/latest", "step-00000010\n");
  EXPECT_EQ(*latest_checkpoint(run), older);

  // Nothing there.
  EXPECT_FALSE(latest_checkpoint(fresh_dir("empty_run")).has_value());
  EXPECT_FALSE(latest_checkpoint(test::temp_dir() + "/does/not/exist").has_value());
  EXPECT_THROW(load_checkpoint(test::temp_dir() + "/does/not/exist"), Error);
}

TEST(Checkpoint, CrashMidSaveIsIgnoredAndCleanedUp) {
  const std::string run = fresh_dir("crash");
  Fixture f;
  save_checkpoint(run, state_at(5), f.weights, *f.opt, 3);
  // A save killed before its rename: a complete-looking temp folder of a dead process (pid above pid_max).
  const std::string tmp = run + "/step-00000006.tmp-99999999-0";
  fs::create_directories(tmp);
  for (const char* file : {"weights.safetensors", "optimizer.safetensors", "state.json"})
    fs::copy_file(run + "/step-00000005/" + file, tmp + "/" + file);
  // ... and one killed while writing a file, and a half-written `latest` temp file.
  const std::string tmp2 = run + "/step-00000007.tmp-99999999-1";
  fs::create_directories(tmp2);
  test::write_file(tmp2 + "/.weights.safetensors.tmp-99999999-0-1", "partial");
  test::write_file(run + "/.latest.tmp-99999999-3-17", "step-0000");
  EXPECT_EQ(*latest_checkpoint(run), run + "/step-00000005");
  EXPECT_EQ(list_checkpoints(run).size(), 1u);
  // The next save removes the leftovers of dead processes.
  save_checkpoint(run, state_at(8), f.weights, *f.opt, 3);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_FALSE(fs::exists(tmp2));
  EXPECT_FALSE(fs::exists(run + "/.latest.tmp-99999999-3-17"));
  EXPECT_EQ(*latest_checkpoint(run), run + "/step-00000008");
  EXPECT_EQ(list_checkpoints(run).size(), 2u);
}

TEST(Checkpoint, UnwritableRunFolderThrows) {
  Fixture f;
  try {
    save_checkpoint("/sys/iris-test-run", state_at(1), f.weights, *f.opt, 3);
    ADD_FAILURE() << "saved under /sys";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/sys/iris-test-run"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot save checkpoint"), std::string::npos) << e.what();
  }
  // A run folder that is a file.
  const std::string file = fresh_dir("notafolder") + "/run";
  test::write_file(file, "x");
  EXPECT_THROW(save_checkpoint(file, state_at(1), f.weights, *f.opt, 3), Error);
}

TEST(Checkpoint, FailedSaveKeepsThePreviousCheckpoint) {
  const std::string run = fresh_dir("failed_save");
  Fixture f;
  save_checkpoint(run, state_at(10), f.weights, *f.opt, 2);
  const std::string good = test::read_file(run + "/step-00000010/weights.safetensors");
  // An error in the middle of writing (a duplicate tensor name is refused by the safetensors writer).
  io::NamedTensors dup = f.weights;
  dup.push_back(dup[0]);
  EXPECT_THROW(save_checkpoint(run, state_at(20), dup, *f.opt, 2), Error);
  EXPECT_EQ(*latest_checkpoint(run), run + "/step-00000010");
  EXPECT_EQ(test::read_file(run + "/latest"), "step-00000010\n");
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(run)) entries += e.path().filename() != "latest";
  EXPECT_EQ(entries, 1u);  // the temp folder is gone

  // A full disk: in a child process, writes beyond 64 KiB fail with EFBIG (RLIMIT_FSIZE), as ENOSPC would.
  io::NamedTensors big = {{"big.weight", random_tensor({256, 256}, 9)}};
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    std::string msg = "(no error)";
    try {
      save_checkpoint(run, state_at(30), big, *f.opt, 2);
    } catch (const Error& e) {
      msg = e.what();
    }
    (void)!write(fds[1], msg.data(), msg.size());
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(msg.find("cannot save checkpoint step-00000030"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(EFBIG)), std::string::npos) << msg;
  EXPECT_EQ(*latest_checkpoint(run), run + "/step-00000010");
  EXPECT_EQ(test::read_file(run + "/step-00000010/weights.safetensors"), good);
  EXPECT_FALSE(fs::exists(run + "/step-00000030"));
  entries = 0;
  for (auto& e : fs::directory_iterator(run)) entries += e.path().filename() != "latest";
  EXPECT_EQ(entries, 1u);
}

// ---- kill and resume ----

namespace {

// A toy training run with everything a real one persists: AdamW with weight decay on a noisy quadratic
// (0.5 * |w - target|^2 plus seeded noise plus a per-sample offset), cosine warmup schedule, clipping, an
// epoch-shuffled 13-sample "dataset" (data position, epoch, a per-epoch shuffle seed in `extra`), and a
// metrics log. Resumes from the latest checkpoint when there is one; saves every `every` steps and at the
// end. When event_fd
// >= 0, writes "s<step>\n" after each step and "c<step>\n" before each save, and waits for one byte on ack_fd
// after each (so the parent can stop it at a chosen moment however fast it runs).
constexpr int64_t kToySamples = 13;

std::vector<int64_t> epoch_order(uint64_t seed) {
  std::vector<int64_t> order(kToySamples);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 r(seed);
  for (int64_t i = kToySamples - 1; i > 0; --i)
    std::swap(order[size_t(i)], order[size_t(r() % uint64_t(i + 1))]);
  return order;
}

void toy_train(const std::string& run, int64_t total, int64_t every, int event_fd = -1, int ack_fd = -1) {
  const std::vector<std::pair<std::string, Shape>> shapes = {
      {"layer.weight", {61, 67}}, {"layer.bias", {67}}, {"norm.weight", {5}}};
  io::NamedTensors weights, targets;
  std::vector<std::vector<float>> grads;
  for (size_t i = 0; i < shapes.size(); ++i) {
    weights.emplace_back(shapes[i].first, random_tensor(shapes[i].second, 100 + i));
    targets.emplace_back(shapes[i].first, random_tensor(shapes[i].second, 200 + i));
    grads.emplace_back(size_t(shape_numel(shapes[i].second)));
  }
  OptimizerConfig oc;
  oc.lr = 0.05;
  oc.weight_decay = 0.01;
  auto opt = Optimizer::create(oc);
  ScheduleConfig sc{"cosine", 5, total, 0.1};
  TrainState st;
  st.rng_seed = 42;
  std::mt19937_64 rng(st.rng_seed);
  st.extra["epoch_seed"] = uint64_t(rng());
  std::vector<ParamRef> params;
  for (size_t i = 0; i < weights.size(); ++i)
    params.push_back({weights[i].first, weights[i].second.data<float>(), grads[i].data(),
                      weights[i].second.numel(),
                      default_weight_decay(weights[i].first, weights[i].second.shape())});

  std::optional<int64_t> resume_step;
  if (auto dir = latest_checkpoint(run)) {
    LoadedCheckpoint ck = load_checkpoint(*dir);
    for (auto& [name, t] : weights) {
      auto it = std::find_if(ck.weights.begin(), ck.weights.end(),
                             [&](const auto& kv) { return kv.first == name; });
      IRIS_CHECK(it != ck.weights.end() && it->second.numel() == t.numel(), "checkpoint lacks ", name);
      std::memcpy(t.raw(), it->second.contiguous().raw(), t.nbytes());
    }
    opt->load_state(ck.optimizer);
    opt->check_state(params);
    st = ck.state;
    rng_from_string(rng, st.rng_state);
    resume_step = st.step;
  }
  MetricsLog log(run + "/metrics.jsonl", resume_step);
  auto report = [&](char kind, int64_t step) {
    if (event_fd < 0) return;
    std::string line = kind + std::to_string(step) + "\n";
    (void)!write(event_fd, line.data(), line.size());
    char ack;
    if (read(ack_fd, &ack, 1) != 1) event_fd = -1;  // the parent stopped listening
  };
  std::vector<int64_t> order = epoch_order(st.extra["epoch_seed"].get<uint64_t>());
  while (st.step < total) {
    const double offset = 0.01 * double(order[size_t(st.data_position)]);
    double loss = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      const float* w = weights[i].second.data<float>();
      const float* t = targets[i].second.data<float>();
      for (size_t k = 0; k < grads[i].size(); ++k) {
        double d = double(w[k]) - double(t[k]);
        loss += 0.5 * d * d;
        double noise = double(rng() >> 11) * 0x1p-53 - 0.5;
        grads[i][k] = float(d + 0.2 * noise + offset);
      }
    }
    double norm = clip_grad_norm(params, 5.0);
    double lr = schedule_lr(sc, oc.lr, st.step);
    opt->step(params, lr);
    ++st.step;
    if (++st.data_position == kToySamples) {
      st.data_position = 0;
      ++st.epoch;
      st.extra["epoch_seed"] = uint64_t(rng());
      order = epoch_order(st.extra["epoch_seed"].get<uint64_t>());
    }
    StepMetrics m;
    m.step = st.step;
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = norm;
    log.log(m);
    report('s', st.step);
    if (st.step % every == 0 || st.step == total) {
      report('c', st.step);
      st.rng_state = rng_to_string(rng);
      save_checkpoint(run, st, weights, *opt, 3);
    }
  }
}

}  // namespace

TEST(Checkpoint, KillAndResumeIsBitIdentical) {
  constexpr int64_t kTotal = 60, kEvery = 4;
  const std::string ref = fresh_dir("uninterrupted"), run = fresh_dir("killed");
  toy_train(ref, kTotal, kEvery);

  std::random_device rd;
  const uint64_t seed = (uint64_t(rd()) << 32) | rd();
  std::mt19937_64 pick(seed);
  std::string story;
  int kills = 0;
  for (int round = 0; round < 8; ++round) {
    // Alternate: kill during the steps after a random one, or during a save (a random delay after it begins).
    const char kind = round % 2 == 0 ? 's' : 'c';
    // A step after the one the child resumes from.
    const auto resume_dir = latest_checkpoint(run);
    const int64_t from = resume_dir ? load_checkpoint(*resume_dir).state.step : 0;
    if (from >= kTotal) break;
    const int64_t target = from + 1 + int64_t(pick() % uint64_t(kTotal - from));
    const int64_t ckpt_target = std::min((target + kEvery - 1) / kEvery * kEvery, kTotal);
    const unsigned delay_us = unsigned(pick() % 3000);
    int ev[2], ack[2];
    ASSERT_EQ(pipe(ev), 0);
    ASSERT_EQ(pipe(ack), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(ev[0]);
      close(ack[1]);
      int code = 0;
      try {
        cpu::set_num_threads(1);
        toy_train(run, kTotal, kEvery, ev[1], ack[0]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        code = 2;
      }
      _exit(code);
    }
    close(ev[1]);
    close(ack[0]);
    std::string pending;
    char buf[256];
    bool killed = false;
    int64_t last_step = -1;
    for (ssize_t n; !killed && (n = read(ev[0], buf, sizeof buf)) > 0;) {
      pending.append(buf, size_t(n));
      for (size_t nl; !killed && (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1)) {
        const char what = pending[0];
        const int64_t step = std::stoll(pending.substr(1, nl - 1));
        if (what == 's') last_step = step;
        (void)!write(ack[1], "k", 1);
        if (what == kind && step >= (kind == 'c' ? ckpt_target : target)) {
          usleep(delay_us);  // the child is somewhere in the next steps or in the save
          kill(pid, SIGKILL);
          killed = true;
        }
      }
    }
    close(ev[0]);
    close(ack[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (killed && WIFSIGNALED(status)) {
      ++kills;
      auto dir = latest_checkpoint(run);
      story += str_cat("\n[ resume ]   from ", from, ": SIGKILL ", delay_us, " us ",
                       kind == 's' ? "after step " : "into the save of step ",
                       kind == 's' ? last_step : ckpt_target,
                       "; latest complete checkpoint: ", dir ? fs::path(*dir).filename().string() : "none");
      continue;
    }
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child failed";
    story += str_cat("\n[ resume ]   from ", from, ": ran to the end");
    break;
  }
  if (latest_checkpoint(run) == std::nullopt || load_checkpoint(*latest_checkpoint(run)).state.step != kTotal)
    toy_train(run, kTotal, kEvery);  // finish in this process
  std::printf("[ resume ] seed %llu, %d kills:%s\n", static_cast<unsigned long long>(seed), kills,
              story.c_str());
  EXPECT_GE(kills, 1);

  LoadedCheckpoint a = load_checkpoint(*latest_checkpoint(ref)), b = load_checkpoint(*latest_checkpoint(run));
  EXPECT_EQ(a.state.step, kTotal);
  EXPECT_EQ(b.state.step, kTotal);
  EXPECT_TRUE(same_tensors(a.weights, b.weights));
  EXPECT_TRUE(same_tensors(a.optimizer, b.optimizer));
  EXPECT_EQ(a.state.rng_state, b.state.rng_state);
  EXPECT_EQ(a.state.epoch, b.state.epoch);
  EXPECT_EQ(a.state.data_position, b.state.data_position);
  EXPECT_EQ(a.state.extra, b.state.extra);
  // keep_last is 3; a SIGKILL after a save's rename but before its pruning leaves one more, which the next save
  // prunes (when that kill hits the final save there is no next save).
  EXPECT_LE(list_checkpoints(run).size(), 4u);
  // The metrics log has every step once, with the same losses.
  auto ma = MetricsLog::read(ref + "/metrics.jsonl"), mb = MetricsLog::read(run + "/metrics.jsonl");
  ASSERT_EQ(ma.size(), size_t(kTotal));
  ASSERT_EQ(mb.size(), size_t(kTotal));
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(mb[i].step, int64_t(i) + 1);
    EXPECT_EQ(ma[i].loss, mb[i].loss) << "step " << i + 1;
  }
}
