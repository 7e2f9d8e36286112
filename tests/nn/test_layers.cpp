// Linear layer training pieces: the input gradient through frozen bf16 weights, repacking after an in-place
// update, LoRA adapters (B = 0 leaves the output unchanged; the adapter's forward against a double reference).
#include <gtest/gtest.h>

#include <random>

#include "nn/block_ref.h"
#include "nn/layers.h"
#include "test_util.h"

using namespace iris;

namespace {

Tensor random_tensor(const Shape& s, std::mt19937_64& g, float scale = 1.0f) {
  Tensor t = Tensor::empty(s);
  std::normal_distribution<float> n(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = n(g);
  return t;
}

}  // namespace

// dx = dy W through a frozen bf16 weight: oneDNN's bf16 product with f32 accumulation. Against a double product of
// the same bf16-rounded operands, only the f32 accumulation differs.
TEST(LinearTrain, FrozenBf16BackwardInput) {
  std::mt19937_64 g(1);
  const int64_t M = 37, K = 70, N = 53;
  Tensor W = random_tensor({N, K}, g).to(DType::BF16);
  Tensor dy = random_tensor({M, N}, g);
  nn::Linear l;
  l.w = cpu::LinearWeight(W, cpu::MatmulPrecision::BF16);
  std::vector<float> dx(size_t(M * K), 7.0f);
  l.backward(nullptr, dy.data<float>(), M, dx.data());
  double max_err = 0, max_ref = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n)
        s += double(bf16_to_f32(f32_to_bf16(dy.data<float>()[m * N + n]))) * double(bf16_to_f32(W.data_u16()[n * K + k]));
      max_err = std::max(max_err, std::fabs(s - double(dx[size_t(m * K + k)])));
      max_ref = std::max(max_ref, std::fabs(s));
    }
  EXPECT_LE(max_err, 1e-5 * max_ref);
  // Accumulating adds to what is there.
  std::vector<float> dx2 = dx;
  l.backward(nullptr, dy.data<float>(), M, dx2.data(), /*accumulate_dx=*/true);
  for (size_t i = 0; i < dx.size(); ++i) ASSERT_FLOAT_EQ(dx2[i], 2 * dx[i]);
}

// A trained weight in bf16 precision computes with a packed copy of its f32 master; repack() after an in-place
// update gives exactly what packing the updated master afresh gives.
TEST(LinearTrain, RepackAfterInPlaceUpdate) {
  std::mt19937_64 g(2);
  const int64_t M = 5, K = 48, N = 40;
  Tensor master = random_tensor({N, K}, g);
  Tensor x = random_tensor({M, K}, g);
  cpu::LinearWeight lw(master, cpu::MatmulPrecision::BF16);
  for (int64_t i = 0; i < master.numel(); ++i) master.data<float>()[i] *= -0.5f;
  lw.repack();
  cpu::LinearWeight fresh(master.clone(), cpu::MatmulPrecision::BF16);
  std::vector<float> y1(size_t(M * N)), y2(size_t(M * N));
  lw.forward(x.data<float>(), M, K, y1.data(), N);
  fresh.forward(x.data<float>(), M, K, y2.data(), N);
  EXPECT_EQ(test::max_abs_diff(y1, y2), 0.0);
}

TEST(LinearTrain, LoraWithZeroBLeavesOutputUnchanged) {
  std::mt19937_64 g(3);
  const int64_t M = 6, K = 24, N = 20;
  nn::Linear l;
  l.w = cpu::LinearWeight(random_tensor({N, K}, g), cpu::MatmulPrecision::F32);
  l.b = random_tensor({N}, g);
  Tensor x = random_tensor({M, K}, g);
  std::vector<float> base(size_t(M * N)), with(size_t(M * N));
  l.forward(x.data<float>(), M, base.data());
  l.lora = std::make_unique<nn::LoraAdapter>();
  l.lora->A = random_tensor({4, K}, g);
  l.lora->B = Tensor::zeros({N, 4});
  l.lora->scale = 2.0f;
  l.forward(x.data<float>(), M, with.data());
  EXPECT_EQ(test::max_abs_diff(base, with), 0.0);
}

// y = x W^T + b + scale * dropout(x) A^T B^T against the double reference, with and without dropout (the
// training forward), and the inference forward ignoring dropout.
TEST(LinearTrain, LoraForwardMatchesReference) {
  std::mt19937_64 g(4);
  const int64_t M = 9, K = 30, N = 22, r = 5;
  test::Weights w;
  auto put = [&](const std::string& name, const Tensor& t) {
    w[name].assign(t.data<float>(), t.data<float>() + t.numel());
  };
  nn::Linear l;
  Tensor W = random_tensor({N, K}, g), b = random_tensor({N}, g), A = random_tensor({r, K}, g),
         B = random_tensor({N, r}, g), x = random_tensor({M, K}, g);
  put("m.weight", W);
  put("m.bias", b);
  put("base_model.model.m.lora_A.weight", A);
  put("base_model.model.m.lora_B.weight", B);
  l.w = cpu::LinearWeight(W, cpu::MatmulPrecision::F32);
  l.b = b;
  l.lora = std::make_unique<nn::LoraAdapter>();
  l.lora->A = A;
  l.lora->B = B;
  l.lora->scale = 0.75f;
  l.lora->dropout = 0.4f;
  l.lora->dropout_seed = 99;
  std::vector<double> xd(x.data<float>(), x.data<float>() + x.numel());
  for (float p : {0.0f, 0.4f}) {
    test::RefLoraOpts lo;
    lo.scale = 0.75;
    lo.dropout = p;
    lo.seeds["m"] = 99;
    std::vector<double> ref(size_t(M * N));
    test::ref_linear(w, "m", xd.data(), M, K, N, ref.data(), &lo);
    std::vector<float> y(size_t(M * N));
    if (p == 0.0f)
      l.forward(x.data<float>(), M, y.data());  // inference: no dropout whatever the adapter's setting
    else
      l.forward_train(x.data<float>(), M, y.data());
    double err = 0, mx = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      err = std::max(err, std::fabs(double(y[i]) - ref[i]));
      mx = std::max(mx, std::fabs(ref[i]));
    }
    EXPECT_LE(err, 1e-6 * mx) << "dropout " << p;
  }
  // About the chosen fraction of inputs survives dropout.
  int64_t kept = 0;
  for (int64_t i = 0; i < 100000; ++i) kept += nn::lora_dropout_keep(5, i, 0.4f);
  EXPECT_NEAR(double(kept) / 100000.0, 0.6, 0.01);
}
