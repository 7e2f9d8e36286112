// Token sampler (see sampler.h). Cost per call is O(n_vocab) for the copy and a few scans; top-k finds its
// threshold with a k-element heap, and top-p selects (nth_element) a prefix that grows only as far as the
// nucleus needs and sorts just that prefix, so a 128k vocabulary is never fully sorted unless the nucleus is
// the whole of it.
#include "text/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "tensor/error.h"

namespace iris::text {

void validate(const SamplingParams& p) {
  IRIS_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f,
             "sampling: temperature must be a finite number >= 0 (0 = greedy), got ", p.temperature);
  IRIS_CHECK(p.top_k >= 0, "sampling: top_k must be >= 0 (0 = off), got ", p.top_k);
  IRIS_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "sampling: top_p must be in (0, 1] (1 = off), got ", p.top_p);
  IRIS_CHECK(p.min_p >= 0.0f && p.min_p <= 1.0f, "sampling: min_p must be in [0, 1] (0 = off), got ",
             p.min_p);
  IRIS_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f,
             "sampling: repetition_penalty must be a finite number > 0 (1 = off), got ",
             p.repetition_penalty);
  IRIS_CHECK(p.repeat_last_n >= -1,
             "sampling: repeat_last_n must be >= -1 (-1 = whole history, 0 = off), got ", p.repeat_last_n);
}

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

}  // namespace

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  validate(p);
  reseed(p.seed);
}

void Sampler::reseed(uint64_t seed) {
  p_.seed = seed;
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);  // never all zero: splitmix64 is a bijection of distinct inputs
}

double Sampler::uniform() {
  // xoshiro256**
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return double(result >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, std::span<const int32_t> history) {
  IRIS_CHECK(logits != nullptr, "sampling: logits pointer is null");
  IRIS_CHECK(n_vocab > 0 && n_vocab <= int64_t(std::numeric_limits<int32_t>::max()),
             "sampling: n_vocab must be in [1, 2^31), got ", n_vocab);
  const size_t n = size_t(n_vocab);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  // Copy and validate. -inf is a banned token; NaN and +inf mean the model (or a caller) produced garbage.
  work_.assign(logits, logits + n);
  bool bad = false, any_finite = false;
  for (size_t i = 0; i < n; ++i) {
    float v = work_[i];
    bad |= !(v < std::numeric_limits<float>::infinity());  // NaN or +inf (branch-free so the loop vectorises)
    any_finite |= v != kNegInf;
  }
  if (bad) {
    for (size_t i = 0; i < n; ++i)
      if (!(work_[i] < std::numeric_limits<float>::infinity()))
        throw Error(str_cat("sampling: logit of token ", i, " is ", work_[i],
                            " (NaN or +inf): the model output is invalid"));
  }
  IRIS_CHECK(any_finite, "sampling: every logit is -inf, no token can be chosen");

  // Repetition penalty (HF RepetitionPenaltyLogitsProcessor), once per distinct token of the window.
  if (p_.repetition_penalty != 1.0f && p_.repeat_last_n != 0 && !history.empty()) {
    size_t window =
        p_.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(p_.repeat_last_n));
    auto recent = history.subspan(history.size() - window);
    for (int32_t id : recent)
      IRIS_CHECK(id >= 0 && int64_t(id) < n_vocab, "sampling: history token id ", id,
                 " is outside the vocabulary [0, ", n_vocab, ")");
    seen_.resize(n, 0);
    const float pen = p_.repetition_penalty;
    for (int32_t id : recent) {
      if (seen_[size_t(id)]) continue;
      seen_[size_t(id)] = 1;
      float& v = work_[size_t(id)];
      v = v < 0.0f ? v * pen : v / pen;
    }
    for (int32_t id : recent) seen_[size_t(id)] = 0;
  }

  auto argmax = [this, n]() {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i)
      if (work_[i] > work_[best]) best = i;  // strict: ties keep the lowest id
    return int32_t(best);
  };
  if (p_.temperature == 0.0f) return argmax();

  if (p_.temperature != 1.0f) {
    const float temp = p_.temperature;
    const int32_t greedy = argmax();
    bool overflow = false;
    for (float& v : work_) {
      v /= temp;  // divide like HF (not multiply by 1/T) so the rounding matches
      overflow |= v == std::numeric_limits<float>::infinity();
    }
    // A temperature so small that a logit / T overflows is the T -> 0 limit: greedy.
    if (overflow) return greedy;
  }

  // Top-k: HF keeps every token whose logit is >= the k-th largest, so ties at the boundary all survive. Find
  // that threshold with a small min-heap (one comparison per token for small k) or nth_element for large k.
  float threshold = kNegInf;
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    const size_t k = size_t(p_.top_k);
    if (k <= 1024) {
      heap_.clear();
      for (float v : work_) {
        if (v == kNegInf) continue;
        if (heap_.size() < k) {
          heap_.push_back(v);
          std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
        } else if (v > heap_.front()) {
          std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
          heap_.back() = v;
          std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
        }
      }
      if (heap_.size() == k) threshold = heap_.front();
    } else {
      heap_.clear();
      for (float v : work_)
        if (v != kNegInf) heap_.push_back(v);
      if (heap_.size() > k) {
        std::nth_element(heap_.begin(), heap_.begin() + long(k - 1), heap_.end(), std::greater<float>());
        threshold = heap_[k - 1];
      }
    }
  }

  // Survivors in id order (the canonical order the draw walks in unless top-p sorts them).
  cands_.clear();
  float max_logit = kNegInf;
  for (size_t i = 0; i < n; ++i) {
    float v = work_[i];
    if (v == kNegInf || v < threshold) continue;
    cands_.push_back({v, int32_t(i), 0.0});
    max_logit = std::max(max_logit, v);
  }
  for (Cand& c : cands_) c.w = std::exp(double(c.logit - max_logit));  // unnormalised probability

  // Top-p: keep a token while the probability mass ranked strictly above it is < top_p (HF's cumsum rule).
  // The kept set is a prefix of the descending order: grow a selected (unsorted) prefix with nth_element
  // until its mass reaches top_p, then sort only that prefix. A total order (logit descending, then id) keeps
  // every step independent of the standard library's algorithms.
  auto before = [](const Cand& a, const Cand& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  if (p_.top_p < 1.0f && cands_.size() > 1) {
    double z = 0.0;
    for (const Cand& c : cands_) z += c.w;
    const double target = double(p_.top_p) * z;
    size_t lo = 0, m = std::min<size_t>(cands_.size(), 256);
    double mass = 0.0;
    while (true) {
      if (m < cands_.size())
        std::nth_element(cands_.begin() + long(lo), cands_.begin() + long(m), cands_.end(), before);
      for (size_t i = lo; i < m; ++i) mass += cands_[i].w;
      if (mass >= target || m == cands_.size()) break;
      lo = m;
      m = std::min(cands_.size(), m * 4);
    }
    std::sort(cands_.begin(), cands_.begin() + long(m), before);
    double above = 0.0;
    size_t keep = 0;
    while (keep < m && (keep == 0 || above < target)) above += cands_[keep++].w;
    cands_.resize(keep);
  }

  // Min-p: p >= min_p * p_max, i.e. exp(logit - max) >= min_p; the top token (ratio 1) always stays.
  if (p_.min_p > 0.0f) {
    const double min_p = double(p_.min_p);
    cands_.erase(std::remove_if(cands_.begin(), cands_.end(), [min_p](const Cand& c) { return c.w < min_p; }),
                 cands_.end());
  }

  // Draw from the renormalised distribution over the survivors.
  double z = 0.0;
  for (const Cand& c : cands_) z += c.w;
  const double r = uniform() * z;
  double acc = 0.0;
  for (const Cand& c : cands_) {
    acc += c.w;
    if (r < acc) return c.id;
  }
  return cands_.back().id;  // rounding left r at the very top
}

}  // namespace iris::text
