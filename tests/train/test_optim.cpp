// Optimizers, schedules and gradient clipping: replays of torch.optim / LambdaLR / clip_grad_norm_
// trajectories (tests/data/optim, written by scripts/ref_optim.py), Hugging Face schedule values,
// thread-count independence against a naive loop, state save/load, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>

#include "cpu/threads.h"
#include "io/file.h"
#include "io/npy.h"
#include "test_util.h"
#include "train/optim.h"
#include "train/schedule.h"

// The naive loops below spell out every rounding; no implicit fma (GCC's C++ default -ffp-contract=fast).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

using namespace iris;
using namespace iris::train;

namespace {

std::string optim_dir() {
  return test::source_dir() + "/tests/data/optim";
}

std::vector<float> to_floats(const Tensor& t) {
  Tensor c = t.to(DType::F32).contiguous();
  return std::vector<float>(c.data<float>(), c.data<float>() + c.numel());
}

std::vector<double> to_doubles(const Tensor& t) {
  Tensor c = t.to(DType::F64).contiguous();
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}

// max |a - b| / max |b|: the error relative to the tensor's scale. (Per element it would be ill-posed where
// the torch value is near zero: an exp_avg that sums gradients of both signs keeps the absolute rounding
// error of its terms, not of its result.)
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double scale = 0, m = 0;
  for (float x : b) scale = std::max(scale, double(std::fabs(x)));
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return scale > 0 ? m / scale : m;
}

size_t count_bit_differences(const std::vector<float>& a, const std::vector<float>& b) {
  size_t n = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) n += std::memcmp(&a[i], &b[i], 4) != 0;
  return n + (a.size() > b.size() ? a.size() - b.size() : b.size() - a.size());
}

std::vector<ParamRef> refs(std::vector<std::vector<float>>& values, std::vector<std::vector<float>>& grads,
                           const std::vector<std::string>& names, const std::vector<bool>& decay) {
  std::vector<ParamRef> out;
  for (size_t i = 0; i < values.size(); ++i)
    out.push_back(ParamRef{names[i], values[i].data(), grads[i].data(), int64_t(values[i].size()), decay[i]});
  return out;
}

}  // namespace

// ---- torch reference trajectories ----

namespace {

// Replays one case of cases.json. torch_norm: clip with the coefficient torch computed from its own norm
// (which it accumulates in float, 1-2 ulp off the exact norm iris computes in double) instead of
// clip_grad_norm's.
struct RefResult {
  double param_rel = 0, state_rel = 0, norm_rel = 0;
  size_t param_bits = 0, state_bits = 0, elements = 0;
};

RefResult replay_case(const nlohmann::json& meta, const nlohmann::json& c, bool torch_norm) {
  RefResult r;
  const int steps = meta["steps"].get<int>();
  std::vector<std::string> names;
  std::vector<bool> decay;
  for (const auto& p : meta["params"]) {
    names.push_back(p["name"].get<std::string>());
    decay.push_back(p["decay"].get<bool>());
  }
  const std::string cname = c["name"].get<std::string>();
  std::vector<std::vector<float>> values, grads(names.size()), grad_seq;
  for (const auto& n : names) {
    values.push_back(to_floats(io::load_npy(optim_dir() + "/init." + n + ".npy")));
    grad_seq.push_back(to_floats(io::load_npy(optim_dir() + "/grads." + n + ".npy")));
  }
  OptimizerConfig oc;
  oc.kind = c["optimizer"].get<std::string>();
  oc.lr = c["lr"].get<double>();
  oc.weight_decay = c["weight_decay"].get<double>();
  oc.decay_all = c["decay_all"].get<bool>();
  if (oc.kind == "sgd") {
    oc.momentum = c["momentum"].get<double>();
  } else {
    oc.beta1 = c["beta1"].get<double>();
    oc.beta2 = c["beta2"].get<double>();
    oc.eps = c["eps"].get<double>();
  }
  ScheduleConfig sc;
  sc.kind = c["schedule"].get<std::string>();
  sc.warmup_steps = c["warmup"].get<int64_t>();
  sc.total_steps = c["total"].get<int64_t>();
  const double max_norm = c["max_norm"].get<double>();
  auto opt = Optimizer::create(oc);
  std::vector<double> ref_lr = to_doubles(io::load_npy(optim_dir() + "/" + cname + ".lr.npy"));
  std::vector<double> ref_norm;
  if (max_norm > 0) ref_norm = to_doubles(io::load_npy(optim_dir() + "/" + cname + ".grad_norm.npy"));
  for (int t = 0; t < steps; ++t) {
    for (size_t i = 0; i < names.size(); ++i) {
      size_t n = values[i].size();
      grads[i].assign(grad_seq[i].begin() + std::ptrdiff_t(t * n),
                      grad_seq[i].begin() + std::ptrdiff_t((t + 1) * n));
    }
    auto params = refs(values, grads, names, decay);
    if (max_norm > 0) {
      const double ref = ref_norm[size_t(t)];
      if (torch_norm) {
        float coef = (1.0f / (float(ref) + float(1e-6))) * float(max_norm);
        if (coef < 1.0f) scale_grads(params, coef);
      } else {
        double norm = clip_grad_norm(params, max_norm);
        r.norm_rel = std::max(r.norm_rel, std::fabs(norm - ref) / ref);
        EXPECT_LT(std::fabs(norm - ref) / ref, 1e-6)
            << "step " << t << ": norm " << norm << " vs torch " << ref;
      }
    }
    double lr = schedule_lr(sc, oc.lr, t);
    EXPECT_EQ(lr, ref_lr[size_t(t)]) << "step " << t;  // LambdaLR's double arithmetic, to the last bit
    opt->step(params, lr);
  }
  EXPECT_EQ(opt->steps(), steps);
  io::NamedTensors state = opt->state();
  for (size_t i = 0; i < names.size(); ++i) {
    auto ref = to_floats(io::load_npy(optim_dir() + "/" + cname + ".param." + names[i] + ".npy"));
    r.param_rel = std::max(r.param_rel, max_rel_diff(values[i], ref));
    r.param_bits += count_bit_differences(values[i], ref);
    r.elements += ref.size();
    for (const char* key : {"exp_avg", "exp_avg_sq", "momentum_buffer"}) {
      std::string file = optim_dir() + "/" + cname + "." + key + "." + names[i] + ".npy";
      std::string sname = std::string(key) + "." + names[i];
      auto it = std::find_if(state.begin(), state.end(), [&](const auto& kv) { return kv.first == sname; });
      if (!std::ifstream(file).good()) {
        EXPECT_TRUE(it == state.end()) << sname << " is not in torch's state";
        continue;
      }
      EXPECT_TRUE(it != state.end()) << "missing " << sname;
      if (it == state.end()) continue;
      auto st = to_floats(it->second);
      auto sref = to_floats(io::load_npy(file));
      r.state_rel = std::max(r.state_rel, max_rel_diff(st, sref));
      r.state_bits += count_bit_differences(st, sref);
      r.elements += sref.size();
    }
  }
  return r;
}

}  // namespace

TEST(OptimRef, ReproducesTorch) {
  nlohmann::json meta = io::read_json_file(optim_dir() + "/cases.json");
  ASSERT_GE(meta["cases"].size(), 5u);
  RefResult worst;
  for (const auto& c : meta["cases"]) {
    const std::string cname = c["name"].get<std::string>();
    SCOPED_TRACE(cname);
    const bool clips = c["max_norm"].get<double>() > 0;
    RefResult r = replay_case(meta, c, false);
    std::printf("[ torch ] %-15s max rel diff params %.3g, state %.3g%s; not bit-identical: %zu of %zu\n",
                cname.c_str(), r.param_rel, r.state_rel,
                clips ? str_cat(", grad norm ", r.norm_rel).c_str() : "", r.param_bits + r.state_bits,
                r.elements);
    EXPECT_LT(r.param_rel, 1e-6);
    EXPECT_LT(r.state_rel, 1e-6);
    worst.param_rel = std::max(worst.param_rel, r.param_rel);
    worst.state_rel = std::max(worst.state_rel, r.state_rel);
    if (!clips) {
      // Every rounding is PyTorch's.
      EXPECT_EQ(r.param_bits + r.state_bits, 0u);
    } else {
      // Clipping with torch's own (float-accumulated) norm: then the trajectory is bit-identical too.
      RefResult t = replay_case(meta, c, true);
      std::printf("[ torch ] %-15s with torch's clip coefficient: not bit-identical: %zu of %zu\n",
                  cname.c_str(), t.param_bits + t.state_bits, t.elements);
      EXPECT_EQ(t.param_bits + t.state_bits, 0u);
    }
  }
  std::printf("[ torch ] worst max rel diff: params %.3g, state %.3g\n", worst.param_rel, worst.state_rel);
}

// ---- schedules against the Hugging Face formulas ----

TEST(Schedule, CosineWithWarmup) {
  ScheduleConfig c{"cosine", 10, 110, 0};
  EXPECT_EQ(schedule_lr(c, 2.0, 0), 0.0);            // warmup start
  EXPECT_DOUBLE_EQ(schedule_lr(c, 2.0, 5), 1.0);     // half way through warmup
  EXPECT_DOUBLE_EQ(schedule_lr(c, 2.0, 10), 2.0);    // warmup end = peak
  EXPECT_NEAR(schedule_lr(c, 2.0, 60), 1.0, 1e-15);  // midpoint of the decay
  EXPECT_NEAR(schedule_lr(c, 2.0, 35), 2.0 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(schedule_lr(c, 2.0, 110), 0.0, 1e-15);  // end
  EXPECT_NEAR(schedule_lr(c, 2.0, 500), 0.0, 1e-15);  // stays at the end value
  c.min_lr_ratio = 0.1;
  EXPECT_NEAR(schedule_lr(c, 2.0, 60), 2.0 * (0.5 * 0.9 + 0.1), 1e-15);
  EXPECT_NEAR(schedule_lr(c, 2.0, 110), 0.2, 1e-15);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 2.0, 5), 1.0);  // the floor does not touch the warmup
}

TEST(Schedule, LinearWithWarmup) {
  ScheduleConfig c{"linear", 4, 104, 0};
  EXPECT_EQ(schedule_lr(c, 1.0, 0), 0.0);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 1), 0.25);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 4), 1.0);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 54), 0.5);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 79), 0.25);
  EXPECT_EQ(schedule_lr(c, 1.0, 104), 0.0);
  EXPECT_EQ(schedule_lr(c, 1.0, 1000), 0.0);
  c.min_lr_ratio = 0.2;
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 104), 0.2);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 1.0, 54), 0.6);
}

TEST(Schedule, ConstantAndNoWarmup) {
  ScheduleConfig c{"constant", 3, 0, 0};
  EXPECT_EQ(schedule_lr(c, 0.5, 0), 0.0);
  EXPECT_DOUBLE_EQ(schedule_lr(c, 0.5, 2), 0.5 * 2.0 / 3.0);
  EXPECT_EQ(schedule_lr(c, 0.5, 3), 0.5);
  EXPECT_EQ(schedule_lr(c, 0.5, 1000000), 0.5);
  ScheduleConfig nw{"cosine", 0, 10, 0};
  EXPECT_EQ(schedule_lr(nw, 1.0, 0), 1.0);  // no warmup: full lr at step 0
  EXPECT_NEAR(schedule_lr(nw, 1.0, 5), 0.5, 1e-15);
}

TEST(Schedule, RejectsBadConfig) {
  EXPECT_THROW(schedule_lr({"exponential", 0, 10, 0}, 1.0, 0), Error);
  EXPECT_THROW(schedule_lr({"cosine", 0, 0, 0}, 1.0, 0), Error);  // needs total_steps
  EXPECT_THROW(schedule_lr({"linear", -1, 10, 0}, 1.0, 0), Error);
  EXPECT_THROW(schedule_lr({"cosine", 0, 10, 1.5}, 1.0, 0), Error);
  try {
    schedule_lr({"cosin", 0, 10, 0}, 1.0, 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cosin"), std::string::npos) << e.what();
  }
}

// ---- vectorised, threaded kernels against a naive loop ----

namespace {

// PyTorch's AdamW element by element (the comment at the top of optim.cpp), written plainly.
void naive_adamw(std::vector<float>& w, const std::vector<float>& g, std::vector<float>& m,
                 std::vector<float>& v, int64_t t, double lr, double wd, double b1, double b2, double eps) {
  double bc1 = 1 - std::pow(b1, double(t)), bc2 = 1 - std::pow(b2, double(t));
  float wdm = float(1 - lr * wd), fb1 = float(b1), c1 = float(1 - b1), fb2 = float(b2), c2 = float(1 - b2);
  float bc2s = float(std::sqrt(bc2)), feps = float(eps), ns = float(-(lr / bc1));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = w[i] * wdm;
    m[i] = std::fma(g[i], c1, m[i] * fb1);
    v[i] = std::fma(c2 * g[i], g[i], v[i] * fb2);
    float denom = std::sqrt(v[i]) / bc2s + feps;
    w[i] = w[i] + (ns * m[i]) / denom;
  }
}

struct BigCase {
  std::vector<std::vector<float>> values, grads;
  std::vector<std::string> names{"big", "odd", "tiny"};
  std::vector<bool> decay{true, false, true};
  BigCase() {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    for (int64_t n : {int64_t(300001), int64_t(70001), int64_t(3)}) {
      std::vector<float> v(static_cast<size_t>(n)), g(static_cast<size_t>(n));
      for (auto& x : v) x = nd(rng);
      for (auto& x : g) x = nd(rng) * 0.01f;
      values.push_back(v);
      grads.push_back(g);
    }
  }
};

}  // namespace

TEST(Optim, AdamWMatchesNaiveLoopForAnyThreadCount) {
  const int saved = cpu::num_threads();
  std::vector<std::vector<std::vector<float>>> results;
  for (int threads : {1, 2, 3}) {
    cpu::set_num_threads(threads);
    BigCase c;
    OptimizerConfig oc;
    oc.weight_decay = 0.1;
    auto opt = Optimizer::create(oc);
    for (int t = 0; t < 3; ++t) opt->step(refs(c.values, c.grads, c.names, c.decay), 1e-3 * (t + 1));
    results.push_back(c.values);
  }
  cpu::set_num_threads(saved);
  BigCase n;
  std::vector<std::vector<float>> m, v;
  for (auto& x : n.values) m.emplace_back(x.size(), 0.0f), v.emplace_back(x.size(), 0.0f);
  for (int t = 0; t < 3; ++t)
    for (size_t i = 0; i < n.values.size(); ++i)
      naive_adamw(n.values[i], n.grads[i], m[i], v[i], t + 1, 1e-3 * (t + 1), n.decay[i] ? 0.1 : 0.0, 0.9,
                  0.999, 1e-8);
  for (const auto& r : results)
    for (size_t i = 0; i < r.size(); ++i)
      EXPECT_EQ(count_bit_differences(r[i], n.values[i]), 0u) << n.names[i];
}

TEST(Optim, SgdMomentumMatchesNaiveLoopForAnyThreadCount) {
  const int saved = cpu::num_threads();
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    BigCase c, n;
    OptimizerConfig oc{"sgd", 0.1, 0.9, 0.01};
    auto opt = Optimizer::create(oc);
    for (int t = 0; t < 3; ++t) opt->step(refs(c.values, c.grads, c.names, c.decay), 0.1);
    for (size_t i = 0; i < n.values.size(); ++i) {
      std::vector<float>& w = n.values[i];
      std::vector<float> buf(w.size());
      float wd = n.decay[i] ? 0.01f : 0.0f;
      for (int t = 0; t < 3; ++t)
        for (size_t k = 0; k < w.size(); ++k) {
          float d = wd != 0 ? std::fma(w[k], wd, n.grads[i][k]) : n.grads[i][k];
          buf[k] = t == 0 ? d : buf[k] * 0.9f + d;
          w[k] = std::fma(buf[k], -0.1f, w[k]);
        }
      EXPECT_EQ(count_bit_differences(c.values[i], w), 0u) << n.names[i] << " threads " << threads;
    }
  }
  cpu::set_num_threads(saved);
}

// ---- clipping, accumulation, decay flags ----

TEST(Optim, ClipGradNorm) {
  std::vector<float> a{3, 0}, b{0, 4, 0}, w1(2), w2(3);
  std::vector<ParamRef> p{{"a", w1.data(), a.data(), 2, true}, {"b", w2.data(), b.data(), 3, true}};
  EXPECT_DOUBLE_EQ(clip_grad_norm(p, 10.0), 5.0);  // coef > 1: untouched
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(p, 1.0), 5.0);  // returns the norm before clipping
  float coef = (1.0f / (5.0f + 1e-6f)) * 1.0f;
  EXPECT_EQ(a[0], 3.0f * coef);
  EXPECT_EQ(b[1], 4.0f * coef);
  EXPECT_NEAR(grad_norm(p), 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(clip_grad_norm(p, 0.0), grad_norm(p));  // max_norm 0: measure only
  a[0] = INFINITY;
  EXPECT_TRUE(std::isinf(clip_grad_norm(p, 1.0)));
  EXPECT_EQ(b[1], 0.0f);  // torch multiplies by max_norm / inf = 0
  p[0].grad = nullptr;    // no gradient: ignored
  b = {0, 2, 0};
  EXPECT_DOUBLE_EQ(grad_norm(p), 2.0);
}

TEST(Optim, AccumulationHelpers) {
  std::vector<float> g{2, 4, 6}, w(3);
  std::vector<ParamRef> p{{"x", w.data(), g.data(), 3, true}};
  scale_grads(p, 0.5f);
  EXPECT_EQ(g, (std::vector<float>{1, 2, 3}));
  zero_grads(p);
  EXPECT_EQ(g, (std::vector<float>{0, 0, 0}));
}

TEST(Optim, DecayFlagsAndDecayAll) {
  // Zero gradients: AdamW moves only through weight decay (m = v = 0 gives a zero update).
  for (bool all : {false, true}) {
    std::vector<float> w1{1, 2}, w2{1, 2}, g1(2), g2(2);
    OptimizerConfig oc;
    oc.weight_decay = 0.5;
    oc.decay_all = all;
    auto opt = Optimizer::create(oc);
    opt->step({{"weight", w1.data(), g1.data(), 2, true}, {"bias", w2.data(), g2.data(), 2, false}}, 0.1);
    float f = float(1 - 0.1 * 0.5);
    EXPECT_EQ(w1[0], 1.0f * f);
    EXPECT_EQ(w2[0], all ? 1.0f * f : 1.0f);
  }
  EXPECT_TRUE(default_weight_decay("model.layers.0.mlp.up_proj.weight", {64, 32}));
  EXPECT_FALSE(default_weight_decay("model.layers.0.mlp.up_proj.bias", {64}));
  EXPECT_FALSE(default_weight_decay("model.layers.0.input_layernorm.weight", {32}));
  EXPECT_FALSE(default_weight_decay("vision_tower.post_layernorm.weight", {32}));
  EXPECT_FALSE(default_weight_decay("model.norm.weight", {32}));
  EXPECT_TRUE(default_weight_decay("model.embed_tokens.weight", {100, 32}));
}

// A tensor with its own rate (ParamRef::lr, a parameter group) steps exactly as it would alone with step()'s
// rate set to that value, for every kind, with weight decay; the others keep step()'s rate. Bad rates throw.
TEST(Optim, ParamLearningRateOverridesTheStepRate) {
  for (const char* kind : {"adamw", "sgd"}) {
    SCOPED_TRACE(kind);
    OptimizerConfig oc;
    oc.kind = kind;
    oc.momentum = oc.kind == "sgd" ? 0.9 : 0.0;
    oc.weight_decay = 0.1;
    std::vector<float> a{1, -2, 3}, b{0.5f, 0.25f, -1}, ga{0.3f, -0.1f, 0.7f}, gb{-0.2f, 0.4f, 0.05f};
    std::vector<float> a_alone = a, b_alone = b;
    auto both = Optimizer::create(oc), only_a = Optimizer::create(oc), only_b = Optimizer::create(oc);
    for (int step = 0; step < 3; ++step) {
      const double lr = 0.01 * (step + 1), lr_b = 0.37 * lr;
      ParamRef ra{"a", a.data(), ga.data(), 3, true}, rb{"b", b.data(), gb.data(), 3, true};
      rb.lr = lr_b;
      both->step({ra, rb}, lr);
      only_a->step({{"a", a_alone.data(), ga.data(), 3, true}}, lr);
      only_b->step({{"b", b_alone.data(), gb.data(), 3, true}}, lr_b);
    }
    EXPECT_EQ(a, a_alone);
    EXPECT_EQ(b, b_alone);
    EXPECT_NE(b, std::vector<float>({0.5f, 0.25f, -1}));
    ParamRef bad{"a", a.data(), ga.data(), 3, true};
    bad.lr = NAN;
    EXPECT_THROW(both->step({bad}, 0.1), Error);
  }
}

TEST(Optim, ParamsWithoutGradAreSkipped) {
  std::vector<float> w{1, 2}, g{0.5f, -0.5f}, w_skip{3, 4};
  auto opt = Optimizer::create({});
  opt->step({{"a", w.data(), g.data(), 2, true}, {"b", w_skip.data(), nullptr, 2, true}}, 0.1);
  EXPECT_EQ(w_skip, (std::vector<float>{3, 4}));
  opt->step({{"a", w.data(), g.data(), 2, true}, {"b", w_skip.data(), g.data(), 2, true}}, 0.1);
  // "b" has had one step of its own: torch's per-parameter step count, saved as step.b.
  auto st = opt->state();
  auto find = [&](const std::string& n) {
    for (auto& [k, t] : st)
      if (k == n) return t;
    return Tensor();
  };
  ASSERT_TRUE(find("step").defined());
  EXPECT_EQ(find("step").data<int64_t>()[0], 2);
  ASSERT_TRUE(find("step.b").defined());
  EXPECT_EQ(find("step.b").data<int64_t>()[0], 1);
  EXPECT_FALSE(find("step.a").defined());
  // Its first AdamW step moves by lr * sign(g) (bias correction makes m/sqrt(v) = g/|g|).
  EXPECT_NEAR(w_skip[0], 3.0f - 0.1f, 1e-6);
}

// ---- state round trip and errors ----

TEST(Optim, SkippedParamsRoundTripForEveryKind) {
  for (double momentum : {0.0, 0.9}) {
    OptimizerConfig oc{"sgd", 0.1, momentum};
    std::vector<float> w{1, 2}, g{0.5f, -0.5f}, u{3, 4};
    auto a = Optimizer::create(oc);
    a->step({{"a", w.data(), g.data(), 2, true}, {"b", u.data(), nullptr, 2, true}}, 0.1);
    a->step({{"a", w.data(), g.data(), 2, true}, {"b", u.data(), g.data(), 2, true}}, 0.1);
    auto b = Optimizer::create(oc);
    EXPECT_NO_THROW(b->load_state(a->state())) << "momentum " << momentum;
    EXPECT_EQ(b->steps(), 2);
  }
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  for (const char* kind : {"adamw", "sgd"}) {
    SCOPED_TRACE(kind);
    OptimizerConfig oc;
    oc.kind = kind;
    oc.momentum = std::string(kind) == "sgd" ? 0.9 : 0.0;
    oc.weight_decay = 0.01;
    std::vector<float> w{1, -2, 3, 0.5f}, g{0.1f, 0.2f, -0.3f, 0.05f};
    auto a = Optimizer::create(oc);
    for (int t = 0; t < 3; ++t) a->step({{"w", w.data(), g.data(), 4, true}}, 0.01);
    std::vector<float> w2 = w;
    // a snapshot (state() shares memory with the live state)
    io::NamedTensors snap;
    for (auto& [n, t] : a->state()) snap.emplace_back(n, t.clone());
    auto b = Optimizer::create(oc);
    b->load_state(snap);
    EXPECT_EQ(b->steps(), 3);
    b->check_state({{"w", w2.data(), g.data(), 4, true}});
    for (int t = 0; t < 2; ++t) {
      a->step({{"w", w.data(), g.data(), 4, true}}, 0.02);
      b->step({{"w", w2.data(), g.data(), 4, true}}, 0.02);
    }
    EXPECT_EQ(count_bit_differences(w, w2), 0u);
  }
}

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST(Optim, LoadStateErrorsNameTheTensor) {
  auto opt = Optimizer::create({});
  Tensor four = Tensor::zeros({4});
  Tensor step = Tensor::from_vector<int64_t>({3}, {1});
  EXPECT_NE(error_of([&] {
              opt->load_state({{"exp_avg.w", four}, {"exp_avg_sq.w", four}});
            }).find("'step'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              opt->load_state({{"step", step}, {"exp_avg.w", four}});
            }).find("exp_avg_sq.w"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              opt->load_state({{"step", step}, {"momentum_buffer.w", four}});
            }).find("momentum_buffer.w"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              opt->load_state({{"step", step}, {"exp_avg.w", four.to(DType::F16)}, {"exp_avg_sq.w", four}});
            }).find("exp_avg.w"),
            std::string::npos);
  opt->load_state({{"step", step}, {"exp_avg.w", four}, {"exp_avg_sq.w", four}});
  std::vector<float> w(5), g(5), v(4);
  // size mismatch at the step, and in check_state; a parameter without state
  std::string e1 = error_of([&] { opt->step({{"w", w.data(), g.data(), 5, true}}, 0.1); });
  EXPECT_NE(e1.find("exp_avg.w"), std::string::npos) << e1;
  EXPECT_NE(e1.find("5"), std::string::npos) << e1;
  std::string e2 = error_of([&] {
    opt->check_state({{"w", v.data(), g.data(), 4, true}, {"u", v.data(), g.data(), 4, true}});
  });
  EXPECT_NE(e2.find("exp_avg.u"), std::string::npos) << e2;
  // duplicate names
  std::string e3 = error_of([&] {
    opt->step({{"w", v.data(), g.data(), 4, true}, {"w", v.data(), g.data(), 4, true}}, 0.1);
  });
  EXPECT_NE(e3.find("twice"), std::string::npos) << e3;
}

TEST(Optim, CreateValidates) {
  EXPECT_NE(error_of([] { Optimizer::create({"adam"}); }).find("adam"), std::string::npos);
  OptimizerConfig c;
  c.beta2 = 1.0;
  EXPECT_NE(error_of([&] { Optimizer::create(c); }).find("beta2"), std::string::npos);
  c = {};
  c.lr = -1;
  EXPECT_THROW(Optimizer::create(c), Error);
  c = {};
  c.momentum = 0.9;  // AdamW has no momentum setting
  EXPECT_THROW(Optimizer::create(c), Error);
  auto opt = Optimizer::create({});
  std::vector<float> w(2), g(2);
  EXPECT_THROW(opt->step({{"w", w.data(), g.data(), 2, true}}, NAN), Error);
}
