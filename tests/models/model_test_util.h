// Helpers shared by the model parity tests (shared refcases and the other-shaped golden cases).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "models/llama.h"
#include "models/vlm.h"
#include "test_util.h"

namespace iris::test {

inline std::vector<int32_t> ids_of(const Tensor& t) {
  Tensor i = t.to(DType::I64);
  std::vector<int32_t> r(static_cast<size_t>(i.numel()));
  for (size_t k = 0; k < r.size(); ++k) r[k] = int32_t(i.data<int64_t>()[k]);
  return r;
}

// Max |ref - mine| over n values (ref converted to f32).
inline double max_diff(const Tensor& ref, const float* mine, int64_t n) {
  EXPECT_EQ(ref.numel(), n);
  Tensor r = ref.to(DType::F32);
  return max_abs_diff(r.data<float>(), mine, static_cast<size_t>(std::min(r.numel(), n)));
}

// Greedy continuation with the KV cache from the logits of the last prompt position; the first new token sits at
// rotary position pos (-1: the cache's length, as for plain RoPE).
inline std::vector<int32_t> greedy(const models::Llama& lm, nn::KVCache& cache, std::vector<float> last, int n,
                                   int64_t pos = -1) {
  std::vector<int32_t> out;
  std::vector<float> x(static_cast<size_t>(lm.hidden_size())), logits(static_cast<size_t>(lm.vocab_size()));
  if (pos < 0) pos = cache.size();
  for (int i = 0; i < n; ++i) {
    int32_t tok = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    out.push_back(tok);
    lm.embed(&tok, 1, x.data());
    lm.forward(x.data(), 1, models::Positions::range(pos++, 1, lm.position_streams()), cache, logits.data(), false);
    last = logits;
  }
  return out;
}

// Collects named intermediates by (name, layer).
struct Capture {
  std::map<std::pair<std::string, int>, std::vector<float>> m;
  nn::Tap tap() {
    return [this](std::string_view name, int il, const float* d, int64_t rows, int64_t cols) {
      m[{std::string(name), il}].assign(d, d + rows * cols);
    };
  }
};

// A LLaVA model's image path on (1, C, H, W) pixel values: the selected vision layer (class token first), the
// features after the select strategy, and the projector output.
struct LlavaEncoding {
  Tensor selected_layer, features, embeddings;
};
inline LlavaEncoding encode_llava(const models::Vlm& m, const Tensor& px) {
  models::ImagePixels p;
  p.values = px.select(0, 0).contiguous();
  LlavaEncoding r;
  Capture cap;
  r.features = m.vision().forward(p, cap.tap());
  const std::vector<float>& sel = cap.m[{"vision_hidden", -1}];
  const int64_t D = r.features.dim(1);
  r.selected_layer = Tensor::from_vector(sel, {int64_t(sel.size()) / D, D});
  r.embeddings = m.connector().forward(r.features, p).embeddings;
  return r;
}

inline models::ImageFeatures features_of(const Tensor& embeddings) {
  models::ImageFeatures f;
  f.embeddings = embeddings;
  f.grid_w = embeddings.dim(0);
  return f;
}

}  // namespace iris::test
