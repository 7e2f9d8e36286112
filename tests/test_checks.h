// Header-only helpers for tests that link iris's libraries (test_util.h holds those that need none of them).
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/vlm.h"
#include "tensor/error.h"
#include "tensor/tensor.h"

namespace iris::test {

// Runs fn, expecting an iris::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected iris::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n  missing: " << p;
  }
}

// A tensor's elements as bytes, in row-major order.
inline std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw()), c.nbytes());
}

// Same dtype, shape and bytes (both contiguous).
inline bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Two safetensors files or folders hold the same tensor names with the same bytes.
inline void expect_same_checkpoint(const std::string& a, const std::string& b) {
  io::Checkpoint ca = io::Checkpoint::open(a), cb = io::Checkpoint::open(b);
  ASSERT_EQ(ca.names(), cb.names());
  for (const std::string& name : ca.names()) EXPECT_TRUE(same_bytes(ca.get(name), cb.get(name))) << a << ": " << name;
}

// A tensor of the given dtype filled with distinct values, exactly representable in every dtype down to u8.
inline Tensor pattern(const Shape& shape, DType dt, int seed = 0) {
  Tensor f = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = float((i * 7 + seed * 13) % 97) * 0.25f;
  return f.to(dt);
}

// Every tensor of a model's state as bytes, by name: for checking which tensors a step changed.
inline std::map<std::string, std::vector<uint8_t>> weights_snapshot(models::Vlm& m) {
  std::map<std::string, std::vector<uint8_t>> r;
  for (const auto& [name, t] : m.state()) {
    const auto* b = static_cast<const uint8_t*>(t.raw());
    r[name].assign(b, b + t.nbytes());
  }
  return r;
}

}  // namespace iris::test
