#include <gtest/gtest.h>

#include <cmath>

#include "tensor/tensor.h"

using namespace iris;

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  Tensor c = tt.contiguous();
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  const float* d = c.data<float>();
  EXPECT_EQ(d[0], 0);
  EXPECT_EQ(d[1], 3);
  EXPECT_EQ(d[2], 1);
  EXPECT_EQ(d[5], 5);
  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.clone().data<float>()[2], 4);
  Tensor row = t.select(0, 1);
  EXPECT_EQ(row.data<float>()[0], 3);
  t.data<float>()[3] = 42;
  EXPECT_EQ(row.data<float>()[0], 42);
  EXPECT_EQ(t.view({3, -1}).dim(1), 2);
  EXPECT_THROW(t.view({4, -1}), Error);
  EXPECT_THROW(tt.view({6}), Error);
  EXPECT_THROW(t.data<double>(), Error);
}

TEST(Tensor, Bf16AndF16RoundTrip) {
  for (float v : {0.0f, 1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f, 6.0e-8f, -1e-5f}) {
    EXPECT_NEAR(bf16_to_f32(f32_to_bf16(v)), v, std::fabs(v) / 128 + 1e-38) << v;
    EXPECT_NEAR(f16_to_f32(f32_to_f16(v)), v, std::fabs(v) / 1024 + 6e-8) << v;
  }
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // Round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  Tensor t = Tensor::from_vector<float>({1.5f, -2.25f, 100.0f}, {3});
  Tensor b = t.to(DType::BF16).to(DType::F32);
  EXPECT_EQ(b.data<float>()[1], -2.25f);
  Tensor h = t.to(DType::F16).to(DType::F32);
  EXPECT_EQ(h.data<float>()[2], 100.0f);
}
