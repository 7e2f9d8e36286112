// Key/value cache of a decoder: per layer, keys and values of every past position, (max_tokens, n_kv_head*head_dim)
// row-major f32, so attention reads keys 0..pos directly. 64-byte aligned: rows then start on cache lines.
#pragma once
#include "tensor/tensor.h"

namespace iris::nn {

class KVCache {
 public:
  KVCache() = default;
  KVCache(int n_layer, int64_t max_tokens, int64_t kv_dim)
      : n_layer_(n_layer), max_tokens_(max_tokens), kv_dim_(kv_dim),
        k_(Tensor::empty({n_layer, max_tokens, kv_dim})), v_(Tensor::empty({n_layer, max_tokens, kv_dim})) {}

  int n_layer() const { return n_layer_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t kv_dim() const { return kv_dim_; }
  // Number of positions filled so far; the next token goes at position size().
  int64_t size() const { return size_; }
  void set_size(int64_t n) {
    IRIS_CHECK(n >= 0 && n <= max_tokens_, "KV cache: size ", n, " outside [0, ", max_tokens_, "]");
    size_ = n;
  }
  void clear() { size_ = 0; }
  float* k(int il) { return k_.data<float>() + int64_t(il) * max_tokens_ * kv_dim_; }
  float* v(int il) { return v_.data<float>() + int64_t(il) * max_tokens_ * kv_dim_; }
  size_t bytes() const { return k_.nbytes() + v_.nbytes(); }

 private:
  int n_layer_ = 0;
  int64_t max_tokens_ = 0, kv_dim_ = 0, size_ = 0;
  Tensor k_, v_;  // (n_layer, max_tokens, kv_dim), 64-byte aligned
};

}  // namespace iris::nn
