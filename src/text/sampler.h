// Token sampler: picks the next token id from one row of logits the way Hugging Face's generate() does with
// do_sample (repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw from the renormalised
// distribution), or greedily when temperature is 0. Draws come from a seeded xoshiro256** generator with the
// uniform number derived by hand, so a seed gives the same tokens on every platform (given the same logits).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace iris::text {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, ties -> lowest id); > 0: sample; < 0 or NaN: error
  int top_k = 0;             // 0: off; keeps every token whose logit is >= the k-th largest (HF: ties kept)
  float top_p = 1.0f;        // in (0, 1]; 1: off; keeps the smallest top set whose mass reaches top_p
  float min_p = 0.0f;        // in [0, 1]; 0: off; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // > 0; 1: off. HF's rule: logit > 0 ? logit / p : logit * p, once per
                                    // distinct token of the history window
  int repeat_last_n = 64;  // history window for the penalty: -1 all, 0 off
  uint64_t seed = 0;
};

// Throws iris::Error naming the first invalid field.
void validate(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);  // validates p

  // logits: n_vocab values (not modified). -inf marks a banned token; NaN or +inf throws iris::Error, as do
  // all -inf and history ids outside [0, n_vocab). history: the prompt and generated ids so far, oldest
  // first.
  int32_t sample(const float* logits, int64_t n_vocab, std::span<const int32_t> history);

  void reseed(uint64_t seed);
  const SamplingParams& params() const { return p_; }

 private:
  struct Cand {
    float logit;
    int32_t id;
    double w;  // exp(logit - max logit)
  };
  double uniform();  // [0, 1) with 53 random bits

  SamplingParams p_;
  uint64_t s_[4];
  std::vector<float> work_;    // (n_vocab) penalised, temperature-scaled logits
  std::vector<uint8_t> seen_;  // (n_vocab) marks for the penalty, cleared after use
  std::vector<Cand> cands_;    // surviving tokens
  std::vector<float> heap_;    // top-k selection scratch
};

}  // namespace iris::text
