// oneDNN implementation of the matrix-multiply backend.
//
// Linear layers use oneDNN's matmul primitive. f32 weights are read in place from the checkpoint mapping (the
// (N, K) row-major weight is the (K, N) operand with strides (1, K)); with BF16 precision the weight is converted
// once into the blocked layout oneDNN prefers ("packed"), activations are converted to bf16 per call, and the
// products accumulate in f32. Primitives are cached per (M, strides, bias, accumulate), since creating one costs
// far more than a decode step.
#include "cpu/gemm.h"

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <string>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "cpu/gemv.h"
#include "cpu/threads.h"

namespace iris::cpu {

using dnnl::memory;
using dt = memory::data_type;
using tag = memory::format_tag;

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  IRIS_ASSERT(st == dnnl_success);
}

bool cpu_has_bf16_instructions() {
#if defined(__x86_64__)
  unsigned a, b, c, d;
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
  const bool avx512_bf16 = a & (1u << 5);
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  const bool amx_bf16 = d & (1u << 22);
  return avx512_bf16 || amx_bf16;
#else
  return false;
#endif
}

namespace {

std::atomic<int> g_bf16_path{-1};

}  // namespace

Bf16Path bf16_path() {
  int v = g_bf16_path.load();
  if (v < 0) {
    const char* e = std::getenv("IRIS_BF16_MATMUL");
    std::string s = e ? e : "";
    IRIS_CHECK(s.empty() || s == "native" || s == "widen", "IRIS_BF16_MATMUL must be native or widen, got '", s, "'");
    v = s == "native" ? 0 : s == "widen" ? 1 : cpu_has_bf16_instructions() ? 0 : 1;
    g_bf16_path.store(v);
  }
  return v == 0 ? Bf16Path::Native : Bf16Path::Widen;
}

void set_bf16_path(Bf16Path p) { g_bf16_path.store(p == Bf16Path::Native ? 0 : 1); }

namespace {

// Rows of a bf16 weight widened to f32 per panel. Few activation rows: about 1 MB of f32, so the panel is still
// in L2 when the GEMM reads it. Many rows (image encoding, long prefill): the activations are re-read once per
// panel, so panels are large (32 MB of f32, the whole weight for most layers) and the GEMM gets wide products.
int64_t widen_panel_rows(int64_t M, int64_t K) {
  const int64_t floats = M <= 64 ? (int64_t(1) << 18) : (int64_t(1) << 23);
  return std::max<int64_t>(16, floats / std::max<int64_t>(K, 1));
}

void widen_rows(const uint16_t* w, int64_t rows, int64_t K, float* out) {
  parallel_for(rows, 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b * K; i < e * K; ++i) out[i] = bf16_to_f32(w[i]);
  });
}

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

}  // namespace

struct LinearWeight::Impl {
  int64_t N = 0, K = 0;
  bool bf16 = false;
  bool widen = false;           // bf16 computed by widening panels to f32 (Bf16Path::Widen): no packed copy
  std::vector<float> f32_copy;  // the weight in f32 when stored as bf16/f16 and computed in f32
  const float* f32_w = nullptr;
  memory::desc packed_md;       // bf16: layout of the packed weight
  memory packed;                // bf16: packed weight
  // bf16: the weight in its plain (N, K) layout, for decode products (gemv.h): the given tensor when it is bf16
  // (read in place), else a converted copy (kept up to date by repack()).
  std::vector<uint16_t> plain_copy;
  const uint16_t* plain = nullptr;
  // A primitive is bound to the thread count it was made with, so that is part of the key.
  struct Key {
    int64_t M, ldx, ldy;
    bool bias, acc;
    int threads;
    bool operator<(const Key& o) const {
      return std::tie(M, ldx, ldy, bias, acc, threads) < std::tie(o.M, o.ldx, o.ldy, o.bias, o.acc, o.threads);
    }
  };
  std::mutex mu;
  std::map<Key, dnnl::matmul> prims;
  std::map<Key, dnnl::matmul> backward_prims;  // bf16 dx = dy W, keyed by (M, accumulate, threads)

  dnnl::matmul& get(const Key& k) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = prims.find(k);
    if (it != prims.end()) return it->second;
    memory::desc src_md({k.M, K}, bf16 ? dt::bf16 : dt::f32, bf16 ? memory::dims{K, 1} : memory::dims{k.ldx, 1});
    memory::desc wei_md = bf16 ? packed_md : memory::desc({K, N}, dt::f32, memory::dims{1, K});
    memory::desc dst_md({k.M, N}, dt::f32, memory::dims{k.ldy, 1});
    dnnl::primitive_attr attr;
    if (k.acc) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    dnnl::matmul::desc d = k.bias ? dnnl::matmul::desc(src_md, wei_md, memory::desc({1, N}, dt::f32, tag::ab), dst_md)
                                  : dnnl::matmul::desc(src_md, wei_md, dst_md);
    dnnl::matmul::primitive_desc pd(d, attr, cpu_engine());
    return prims.emplace(k, dnnl::matmul(pd)).first->second;
  }
};

LinearWeight::LinearWeight(Tensor w, MatmulPrecision precision) : w_(std::move(w)), precision_(precision) {
  IRIS_CHECK(w_.ndim() == 2, "linear weight must be 2-d, got ", shape_str(w_.shape()));
  w_ = w_.contiguous();
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  m.N = w_.dim(0);
  m.K = w_.dim(1);
  m.bf16 = precision == MatmulPrecision::BF16;
  if (!m.bf16) {
    if (w_.dtype() == DType::F32) {
      m.f32_w = w_.data<float>();
    } else {
      Tensor f = w_.to(DType::F32);
      m.f32_copy.assign(f.data<float>(), f.data<float>() + f.numel());
      m.f32_w = m.f32_copy.data();
    }
    return;
  }
  // Pack: let oneDNN choose the weight layout for a prefill-sized product, then reorder the (K, N) bf16 view
  // (strides (1, K)) into it. The same layout serves every M.
  Tensor wb = w_.dtype() == DType::BF16 ? w_ : w_.to(DType::BF16);
  if (w_.dtype() == DType::BF16) {
    m.plain = static_cast<const uint16_t*>(w_.raw());
  } else {
    const auto* src = static_cast<const uint16_t*>(wb.raw());
    m.plain_copy.assign(src, src + wb.numel());
    m.plain = m.plain_copy.data();
  }
  m.widen = bf16_path() == Bf16Path::Widen;
  if (m.widen) return;
  memory::desc any_md({m.K, m.N}, dt::bf16, tag::any);
  memory::desc src_md({128, m.K}, dt::bf16, tag::ab), dst_md({128, m.N}, dt::f32, tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, any_md, dst_md), cpu_engine());
  m.packed_md = pd.weights_desc();
  memory user(memory::desc({m.K, m.N}, dt::bf16, memory::dims{1, m.K}), cpu_engine(), const_cast<void*>(wb.raw()));
  m.packed = memory(m.packed_md, cpu_engine());
  dnnl::stream s(cpu_engine());
  dnnl::reorder(user, m.packed).execute(s, user, m.packed);
  s.wait();
}

void LinearWeight::backward_input(const float* dy, int64_t M, float* dx, bool accumulate) const {
  if (M == 0) return;
  Impl& m = *impl_;
  const float* wf = m.f32_w ? m.f32_w : w_.dtype() == DType::F32 ? w_.data<float>() : nullptr;
  if (wf) {
    gemm_f32(false, false, M, m.K, m.N, 1.0f, dy, m.N, wf, m.K, accumulate ? 1.0f : 0.0f, dx, m.K);
    return;
  }
  if (m.widen) {
    // dx = sum over row panels of W: bf16(dy)[:, panel] W[panel, :], each panel widened to f32.
    std::vector<float> dyr(size_t(M * m.N));
    parallel_for(M * m.N, 4096, [&](int64_t b, int64_t en) {
      for (int64_t i = b; i < en; ++i) dyr[size_t(i)] = bf16_to_f32(f32_to_bf16(dy[i]));
    });
    const int64_t P = widen_panel_rows(M, m.K);
    std::vector<float> panel(size_t(std::min(P, m.N) * m.K));
    for (int64_t n0 = 0; n0 < m.N; n0 += P) {
      const int64_t rows = std::min(P, m.N - n0);
      widen_rows(m.plain + n0 * m.K, rows, m.K, panel.data());
      gemm_f32(false, false, M, m.K, rows, 1.0f, dyr.data() + n0, m.N, panel.data(), m.K,
               (accumulate || n0 > 0) ? 1.0f : 0.0f, dx, m.K);
    }
    return;
  }
  // bf16: dy (M, N) bf16 times W (N, K) bf16 in its plain row-major layout (the packed copy is laid out for the
  // transposed product), accumulated in f32. An f16 weight is converted per call (rare: f16 checkpoints in bf16).
  Tensor wb = w_.dtype() == DType::BF16 ? w_ : w_.to(DType::BF16);
  const dnnl::engine& e = cpu_engine();
  Impl::Key k{M, m.N, m.K, false, accumulate, num_threads()};
  dnnl::matmul* prim;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    auto it = m.backward_prims.find(k);
    if (it == m.backward_prims.end()) {
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops po;
        po.append_sum(1.0f);
        attr.set_post_ops(po);
      }
      dnnl::matmul::desc d(memory::desc({M, m.N}, dt::bf16, tag::ab), memory::desc({m.N, m.K}, dt::bf16, tag::ab),
                           memory::desc({M, m.K}, dt::f32, tag::ab));
      it = m.backward_prims.emplace(k, dnnl::matmul(dnnl::matmul::primitive_desc(d, attr, e))).first;
    }
    prim = &it->second;
  }
  std::vector<uint16_t> db(size_t(M * m.N));
  parallel_for(M * m.N, 4096, [&](int64_t b, int64_t en) {
    for (int64_t i = b; i < en; ++i) db[size_t(i)] = f32_to_bf16(dy[i]);
  });
  std::unordered_map<int, memory> args;
  args[DNNL_ARG_SRC] = memory(memory::desc({M, m.N}, dt::bf16, tag::ab), e, db.data());
  args[DNNL_ARG_WEIGHTS] = memory(memory::desc({m.N, m.K}, dt::bf16, tag::ab), e, const_cast<void*>(wb.raw()));
  args[DNNL_ARG_DST] = memory(memory::desc({M, m.K}, dt::f32, tag::ab), e, dx);
  dnnl::stream s(e);
  prim->execute(s, args);
  s.wait();
}

void LinearWeight::repack() {
  Impl& m = *impl_;
  if (!m.bf16) {
    IRIS_CHECK(m.f32_copy.empty(), "LinearWeight::repack: an f32 copy of a 16-bit weight cannot be refreshed");
    return;
  }
  Tensor wb = w_.dtype() == DType::BF16 ? w_ : w_.to(DType::BF16);
  if (!m.plain_copy.empty()) {
    const auto* src = static_cast<const uint16_t*>(wb.raw());
    std::copy(src, src + wb.numel(), m.plain_copy.begin());
  }
  if (m.widen) return;
  memory user(memory::desc({m.K, m.N}, dt::bf16, memory::dims{1, m.K}), cpu_engine(), const_cast<void*>(wb.raw()));
  dnnl::stream s(cpu_engine());
  dnnl::reorder(user, m.packed).execute(s, user, m.packed);
  s.wait();
}

LinearWeight::LinearWeight() = default;
LinearWeight::~LinearWeight() = default;
LinearWeight::LinearWeight(LinearWeight&&) noexcept = default;
LinearWeight& LinearWeight::operator=(LinearWeight&&) noexcept = default;

void LinearWeight::forward(const float* x, int64_t M, int64_t ldx, float* y, int64_t ldy, const float* bias,
                           bool accumulate) const {
  if (M == 0) return;
  Impl& m = *impl_;
  if (M <= kGemvMaxRows) {  // decode: stream the plain weight once (gemv.h)
    if (m.bf16)
      gemv_bf16(x, M, ldx, m.plain, m.N, m.K, y, ldy, bias, accumulate);
    else
      gemv_f32(x, M, ldx, m.f32_w, m.N, m.K, y, ldy, bias, accumulate);
    return;
  }
  if (m.bf16 && m.widen) {
    // Activations rounded to bf16, then per panel of weight rows: widen to f32, y[:, panel] = x W[panel]^T.
    std::vector<float> xr(size_t(M * m.K));
    parallel_for(M, 1, [&](int64_t b, int64_t en) {
      for (int64_t i = b; i < en; ++i)
        for (int64_t j = 0; j < m.K; ++j) xr[size_t(i * m.K + j)] = bf16_to_f32(f32_to_bf16(x[i * ldx + j]));
    });
    const int64_t P = widen_panel_rows(M, m.K);
    std::vector<float> panel(size_t(std::min(P, m.N) * m.K));
    for (int64_t n0 = 0; n0 < m.N; n0 += P) {
      const int64_t rows = std::min(P, m.N - n0);
      widen_rows(m.plain + n0 * m.K, rows, m.K, panel.data());
      gemm_f32(false, true, M, rows, m.K, 1.0f, xr.data(), m.K, panel.data(), m.K, accumulate ? 1.0f : 0.0f,
               y + n0, ldy);
    }
    if (bias)
      parallel_for(M, 1, [&](int64_t b, int64_t en) {
        for (int64_t i = b; i < en; ++i)
          for (int64_t j = 0; j < m.N; ++j) y[i * ldy + j] += bias[j];
      });
    return;
  }
  dnnl::matmul& prim = m.get({M, ldx, ldy, bias != nullptr, accumulate, num_threads()});
  dnnl::stream s(cpu_engine());
  std::vector<uint16_t> xb;
  std::unordered_map<int, memory> args;
  const dnnl::engine& e = cpu_engine();
  if (m.bf16) {
    xb.resize(size_t(M * m.K));
    parallel_for(M, 1, [&](int64_t b, int64_t en) {
      for (int64_t i = b; i < en; ++i)
        for (int64_t j = 0; j < m.K; ++j) xb[size_t(i * m.K + j)] = f32_to_bf16(x[i * ldx + j]);
    });
    args[DNNL_ARG_SRC] = memory(memory::desc({M, m.K}, dt::bf16, tag::ab), e, xb.data());
    args[DNNL_ARG_WEIGHTS] = m.packed;
  } else {
    args[DNNL_ARG_SRC] = memory(memory::desc({M, m.K}, dt::f32, memory::dims{ldx, 1}), e, const_cast<float*>(x));
    args[DNNL_ARG_WEIGHTS] =
        memory(memory::desc({m.K, m.N}, dt::f32, memory::dims{1, m.K}), e, const_cast<float*>(m.f32_w));
  }
  args[DNNL_ARG_DST] = memory(memory::desc({M, m.N}, dt::f32, memory::dims{ldy, 1}), e, y);
  if (bias) args[DNNL_ARG_BIAS] = memory(memory::desc({1, m.N}, dt::f32, tag::ab), e, const_cast<float*>(bias));
  prim.execute(s, args);
  s.wait();
}

}  // namespace iris::cpu
