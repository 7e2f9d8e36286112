// Attention kernels, flash-attention style.
//
// Work is organised per KV head: the query rows that share a KV head (every query token of each of its
// `group` query heads) are its "lanes", so GQA heads reuse each loaded key and value.
//
// Tiled path (prefill, training; used when a KV head has >= 16 lanes): a task takes up to 64 lanes and walks
// the keys in tiles of 64. Scores are kept transposed, S^T (keys x lanes), so that
//   - S^T = K_tile Q^T is an outer-product micro-kernel: broadcast K[j][d] times a vector of Q^T[d][lanes]
//     (Q^T is packed once per task; K is read in place, no packing);
//   - the online softmax runs down the key axis with lanes in vector registers: no horizontal reductions;
//   - O += P V is again an outer product: broadcast P[lane][j] times a vector of V[j][cols].
// Scores are in base 2 (q is pre-scaled by scale * log2 e) so the softmax uses exp2 directly.
//
// Few-rows path (decode: one query token, or a few GQA heads): per KV head, scores are dot products of each
// lane with each key row (the head dimension in the vector), keys in tiles of 256; when there are fewer KV
// heads than threads the keys are also split across tasks and the partial softmax states are merged after
// (flash-decoding), so one long cache still uses every core.
//
// Backward (FlashAttention-2 recomputation): per KV head (split in query-block stripes when there are fewer
// KV heads than threads), for each 64-lane block and 64-key tile recompute P^T from lse, form dP^T = V dO^T
// and dS^T = P^T (dP^T - D), then dV += P^T dO, dK += dS^T Q, dQ += dS K: five products, all micro-kernels
// of the two shapes above. dQ is owned per lane block; dK/dV go straight into the output when one task owns
// the KV head, else into per-stripe buffers summed at the end (deterministic for a given thread count).
#include "ops/attention.h"

#include <limits>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

using namespace simd;

constexpr int kLaneBlock = 64;     // lanes per tiled task: 4 vectors
constexpr int kKeyTile = 64;       // keys per tile, tiled path
constexpr int kKeyTileRows = 256;  // keys per tile, few-rows path
constexpr int kMinTiledLanes = 16; // fewer lanes per KV head than this: few-rows path
constexpr int kPrefetchKeys = 16;  // few-rows path: how far ahead key rows are prefetched
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;
// Start of the running max: finite, so exp2(m_old - m_new) is exactly 0 and never NaN (-inf - -inf).
constexpr float kNegBig = -1e30f;
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- micro-kernels -------------------------------------------------------------------------------------

// C[r][0 .. NV*16) = sum_d A[r*lda + d] * Bt[d*ldb + 0 .. NV*16), for r < R. Bt is packed (lanes padded to
// whole vectors); A rows are read in place.
template <int R, int NV>
inline void abt_tile(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t depth, float* c,
                     int64_t ldc) {
  VecF acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = zero();
  for (int64_t d = 0; d < depth; ++d) {
    VecF b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = load(bt + d * ldb + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VecF ar = set1(a[r * lda + d]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(ar, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) store(c + r * ldc + v * kLanes, acc[r][v]);
}

template <int NV>
constexpr int abt_rows_per_tile() {
  return NV == 4 ? 6 : 8;  // accumulators + B vectors + a broadcast stay within the 32 vector registers
}

template <int NV, int R>
inline void abt_rest(int rest, const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t depth, float* c,
                     int64_t ldc) {
  if constexpr (R > 0) {
    if (rest == R) return abt_tile<R, NV>(a, lda, bt, ldb, depth, c, ldc);
    abt_rest<NV, R - 1>(rest, a, lda, bt, ldb, depth, c, ldc);
  }
}

template <int NV>
void abt_nv(const float* a, int64_t lda, int64_t nrows, const float* bt, int64_t ldb, int64_t depth, float* c,
            int64_t ldc) {
  constexpr int R = abt_rows_per_tile<NV>();
  int64_t r = 0;
  for (; r + R <= nrows; r += R) abt_tile<R, NV>(a + r * lda, lda, bt, ldb, depth, c + r * ldc, ldc);
  if (r < nrows) abt_rest<NV, R - 1>(int(nrows - r), a + r * lda, lda, bt, ldb, depth, c + r * ldc, ldc);
}

// C (nrows, nv*16) = A (nrows, depth; rows lda apart) x Bt (depth, nv*16; rows ldb apart).
void gemm_abt(const float* a, int64_t lda, int64_t nrows, const float* bt, int64_t ldb, int nv, int64_t depth,
              float* c, int64_t ldc) {
  switch (nv) {
    case 1: return abt_nv<1>(a, lda, nrows, bt, ldb, depth, c, ldc);
    case 2: return abt_nv<2>(a, lda, nrows, bt, ldb, depth, c, ldc);
    case 3: return abt_nv<3>(a, lda, nrows, bt, ldb, depth, c, ldc);
    case 4: return abt_nv<4>(a, lda, nrows, bt, ldb, depth, c, ldc);
  }
  IRIS_ASSERT(false);
}

// C[r][cols] = cscale[r] * C[r][cols] + sum_k A[r*ars + k*aks] * B_k[col0 + cols] for r < R, cols < NV*16
// (the last vector holds `last` columns). B rows come from a pointer table (keys, or lanes scattered over
// heads and tokens); A is addressed with two strides so the same kernel reads P or P^T.
template <int R, int NV>
inline void ab_tile(const float* a, int64_t ars, int64_t aks, const float* const* brows, int64_t col0,
                    int64_t inner, float* c, int64_t ldc, int last, const float* cscale) {
  VecF acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = v == NV - 1 ? load_n(c + r * ldc + v * kLanes, last) : load(c + r * ldc + v * kLanes);
    if (cscale) {
      const VecF s = set1(cscale[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = acc[r][v] * s;
    }
  }
  for (int64_t k = 0; k < inner; ++k) {
    const float* b = brows[k] + col0;
    VecF bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = v == NV - 1 ? load_n(b + v * kLanes, last) : load(b + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VecF ar = set1(a[r * ars + k * aks]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = fmadd(ar, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1)
        store_n(c + r * ldc + v * kLanes, acc[r][v], last);
      else
        store(c + r * ldc + v * kLanes, acc[r][v]);
    }
}

template <int NV>
constexpr int ab_rows_per_tile() {
  return NV == 4 ? 6 : 8;
}

template <int NV, int R>
inline void ab_rest(int rest, const float* a, int64_t ars, int64_t aks, const float* const* brows, int64_t col0,
                    int64_t inner, float* c, int64_t ldc, int last, const float* cscale) {
  if constexpr (R > 0) {
    if (rest == R) return ab_tile<R, NV>(a, ars, aks, brows, col0, inner, c, ldc, last, cscale);
    ab_rest<NV, R - 1>(rest, a, ars, aks, brows, col0, inner, c, ldc, last, cscale);
  }
}

template <int NV>
void ab_nv(const float* a, int64_t ars, int64_t aks, int64_t nrows, const float* const* brows, int64_t col0,
           int64_t inner, float* c, int64_t ldc, int last, const float* cscale) {
  constexpr int R = ab_rows_per_tile<NV>();
  int64_t r = 0;
  for (; r + R <= nrows; r += R)
    ab_tile<R, NV>(a + r * ars, ars, aks, brows, col0, inner, c + r * ldc + col0, ldc, last,
                   cscale ? cscale + r : nullptr);
  if (r < nrows)
    ab_rest<NV, R - 1>(int(nrows - r), a + r * ars, ars, aks, brows, col0, inner, c + r * ldc + col0, ldc, last,
                       cscale ? cscale + r : nullptr);
}

// C (nrows, ncols; rows ldc apart) = diag(cscale) C + A (nrows, inner) x B (inner, ncols), B's rows given by
// pointers. cscale may be nullptr (plain accumulate).
void gemm_ab(const float* a, int64_t ars, int64_t aks, int64_t nrows, const float* const* brows, int64_t inner,
             float* c, int64_t ldc, int64_t ncols, const float* cscale) {
  for (int64_t col0 = 0; col0 < ncols; col0 += 4 * kLanes) {
    const int64_t w = std::min<int64_t>(4 * kLanes, ncols - col0);
    const int nv = int((w + kLanes - 1) / kLanes);
    const int last = int(w - (nv - 1) * kLanes);
    switch (nv) {
      case 1: ab_nv<1>(a, ars, aks, nrows, brows, col0, inner, c, ldc, last, cscale); break;
      case 2: ab_nv<2>(a, ars, aks, nrows, brows, col0, inner, c, ldc, last, cscale); break;
      case 3: ab_nv<3>(a, ars, aks, nrows, brows, col0, inner, c, ldc, last, cscale); break;
      case 4: ab_nv<4>(a, ars, aks, nrows, brows, col0, inner, c, ldc, last, cscale); break;
    }
  }
}

// s0[r * sstride], s1[r * sstride] = dot products of R query rows (packed, rows ldq apart) with key rows k0, k1.
template <int R>
inline void dot_pair(const float* qs, int64_t ldq, const float* k0, const float* k1, int64_t hd, float* s0,
                     float* s1, int64_t sstride) {
  VecF a0[R], a1[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = zero();
  for_chunks(hd, [&](int64_t d, int c) {
    const VecF x0 = load_n(k0 + d, c), x1 = load_n(k1 + d, c);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const VecF qv = load_n(qs + r * ldq + d, c);
      a0[r] = fmadd(qv, x0, a0[r]);
      a1[r] = fmadd(qv, x1, a1[r]);
    }
  });
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    s0[r * sstride] = reduce_add(a0[r]);
    s1[r * sstride] = reduce_add(a1[r]);
  }
}

// ---- problem description -------------------------------------------------------------------------------

struct Problem {
  const float* q;
  int64_t ldq;
  const float* k;
  int64_t ldk;
  const float* v;
  int64_t ldv;
  int64_t Tq, Tk, n_head, n_kv, hd, group;
  float scale;
  bool causal;
  int64_t q_offset;
  int64_t window;  // sliding window (0: none)

  int64_t lanes() const { return group * Tq; }  // query rows per KV head
  int64_t head_of(int64_t kvh, int64_t lane) const { return kvh * group + lane / Tq; }
  int64_t token_of(int64_t lane) const { return lane % Tq; }
  int64_t last_key(int64_t i) const { return ref::attention_last_key(i, Tk, causal, q_offset); }
  int64_t first_key(int64_t i) const { return ref::attention_first_key(i, causal, q_offset, window); }
  const float* krow(int64_t kvh, int64_t j) const { return k + j * ldk + kvh * hd; }
  const float* vrow(int64_t kvh, int64_t j) const { return v + j * ldv + kvh * hd; }
};

void check_problem(const char* what, int64_t ldq, int64_t ldk, int64_t ldv, int64_t ldo, int64_t Tq, int64_t Tk,
                   int64_t n_head, int64_t n_kv, int64_t hd, int64_t q_offset, bool causal, int64_t window) {
  IRIS_CHECK(window >= 0 && (window == 0 || causal), what, ": a sliding window (", window,
             ") needs causal attention and must be >= 0");
  IRIS_CHECK(n_head > 0 && n_kv > 0 && n_head % n_kv == 0, what, ": n_head ", n_head,
             " must be a positive multiple of n_kv_head ", n_kv);
  IRIS_CHECK(hd > 0 && Tq >= 0 && Tk > 0, what, ": bad shape Tq=", Tq, " Tk=", Tk, " head_dim=", hd);
  IRIS_CHECK(q_offset >= 0, what, ": q_offset ", q_offset, " must be >= 0");
  IRIS_CHECK(ldq >= n_head * hd && ldo >= n_head * hd, what, ": query/output row stride (", ldq, ", ", ldo,
             ") < n_head * head_dim = ", n_head * hd);
  IRIS_CHECK(ldk >= n_kv * hd && ldv >= n_kv * hd, what, ": key/value row stride (", ldk, ", ", ldv,
             ") < n_kv_head * head_dim = ", n_kv * hd);
}

// ---- forward, tiled path -------------------------------------------------------------------------------

size_t tiled_forward_scratch(int64_t hd) {
  return size_t(hd * kLaneBlock + kKeyTile * kLaneBlock + kLaneBlock * hd + 5 * kLaneBlock);
}

// Lanes [lane0, lane0 + nl) of KV head kvh, nl <= kLaneBlock.
void forward_tiled_block(const Problem& p, int64_t kvh, int64_t lane0, int nl, float* out, int64_t ldo, float* lse,
                         float* scratch) {
  const int64_t hd = p.hd;
  const int nv = (nl + kLanes - 1) / kLanes;
  float* qt = scratch;                       // (hd, kLaneBlock): q^T scaled by scale * log2 e
  float* st = qt + hd * kLaneBlock;          // (kKeyTile, kLaneBlock): scores, then probabilities
  float* ob = st + kKeyTile * kLaneBlock;    // (kLaneBlock, hd): unnormalised output
  float* m = ob + kLaneBlock * hd;           // (kLaneBlock) running max (base 2)
  float* l = m + kLaneBlock;                 // running sum
  float* alpha = l + kLaneBlock;             // rescale of the previous output, this tile
  float* lim = alpha + kLaneBlock;           // last visible key, as float
  float* fst = lim + kLaneBlock;             // first visible key, as float
  const float* vrows[kKeyTile];

  const float qscale = p.scale * kLog2e;
  int64_t lim_min = p.Tk, lim_max = 0, fst_min = p.Tk, fst_max = 0;
  for (int x = 0; x < nv * kLanes; ++x) {
    m[x] = kNegBig;
    l[x] = 0.0f;
    if (x < nl) {
      const int64_t lane = lane0 + x, i = p.token_of(lane);
      const float* qr = p.q + i * p.ldq + p.head_of(kvh, lane) * hd;
      for (int64_t d = 0; d < hd; ++d) qt[d * kLaneBlock + x] = qr[d] * qscale;
      const int64_t last = p.last_key(i), first = p.first_key(i);
      lim[x] = float(last);
      fst[x] = float(first);
      lim_min = std::min(lim_min, last);
      lim_max = std::max(lim_max, last);
      fst_min = std::min(fst_min, first);
      fst_max = std::max(fst_max, first);
    } else {
      for (int64_t d = 0; d < hd; ++d) qt[d * kLaneBlock + x] = 0.0f;
      lim[x] = kInf;  // padding lanes: never masked, never written out
      fst[x] = -kInf;
    }
  }
  std::fill(ob, ob + nl * hd, 0.0f);

  // Keys before every lane's window are skipped (whole tiles from a tile boundary, so the tiling does not depend
  // on the window).
  const int64_t kend = lim_max + 1, kbeg = fst_min / kKeyTile * kKeyTile;
  for (int64_t j0 = kbeg; j0 < kend; j0 += kKeyTile) {
    const int nk = int(std::min<int64_t>(kKeyTile, kend - j0));
    gemm_abt(p.krow(kvh, j0), p.ldk, nk, qt, kLaneBlock, nv, hd, st, kLaneBlock);
    const bool masked = j0 + nk - 1 > lim_min || j0 < fst_max;
    for (int vi = 0; vi < nv; ++vi) {
      float* sv = st + vi * kLanes;
      const VecF vlim = load(lim + vi * kLanes), vfst = load(fst + vi * kLanes);
      VecF mx = set1(-kInf);
      for (int j = 0; j < nk; ++j) {
        VecF s = load(sv + j * kLaneBlock);
        if (masked) {
          const VecF vj = set1(float(j0 + j));
          s = select(cmp_lt(vlim, vj), set1(-kInf), s);
          s = select(cmp_lt(vj, vfst), set1(-kInf), s);
          store(sv + j * kLaneBlock, s);
        }
        mx = max(mx, s);
      }
      const VecF mold = load(m + vi * kLanes);
      const VecF mnew = max(mold, mx);
      VecF sum0 = zero(), sum1 = zero();
      int j = 0;
      for (; j + 2 <= nk; j += 2) {
        const VecF e0 = exp2(load(sv + j * kLaneBlock) - mnew);
        const VecF e1 = exp2(load(sv + (j + 1) * kLaneBlock) - mnew);
        store(sv + j * kLaneBlock, e0);
        store(sv + (j + 1) * kLaneBlock, e1);
        sum0 = sum0 + e0;
        sum1 = sum1 + e1;
      }
      if (j < nk) {
        const VecF e0 = exp2(load(sv + j * kLaneBlock) - mnew);
        store(sv + j * kLaneBlock, e0);
        sum0 = sum0 + e0;
      }
      const VecF a = exp2(mold - mnew);
      store(alpha + vi * kLanes, a);
      store(l + vi * kLanes, fmadd(load(l + vi * kLanes), a, sum0 + sum1));
      store(m + vi * kLanes, mnew);
    }
    for (int j = 0; j < nk; ++j) vrows[j] = p.vrow(kvh, j0 + j);
    // O = diag(alpha) O + P V, P[lane][j] = st[j * kLaneBlock + lane].
    gemm_ab(st, 1, kLaneBlock, nl, vrows, nk, ob, hd, hd, alpha);
  }

  for (int x = 0; x < nl; ++x) {
    const int64_t lane = lane0 + x, i = p.token_of(lane), h = p.head_of(kvh, lane);
    const VecF inv = set1(1.0f / l[x]);
    float* orow = out + i * ldo + h * hd;
    for_chunks(hd, [&](int64_t d, int c) { store_n(orow + d, load_n(ob + x * hd + d, c) * inv, c); });
    if (lse) lse[h * p.Tq + i] = (m[x] + std::log2(l[x])) * kLn2;
  }
}

// ---- forward, few-rows path ----------------------------------------------------------------------------

// Partial softmax state of nl lanes over keys [kb, ke): running max m (base 2), sum l, unnormalised output o.
void forward_rows_range(const Problem& p, int64_t kvh, int nl, int64_t kb, int64_t ke, float* m, float* l,
                        float* o, float* scratch) {
  const int64_t hd = p.hd;
  float* qs = scratch;                   // (nl, hd) scaled queries
  float* s = qs + nl * hd;               // (nl, kKeyTileRows) scores, then probabilities
  float* alpha = s + nl * kKeyTileRows;  // (nl)
  int64_t last[kMinTiledLanes], first[kMinTiledLanes];
  const float* vrows[kKeyTileRows];
  const float qscale = p.scale * kLog2e;
  for (int x = 0; x < nl; ++x) {
    const int64_t i = p.token_of(x);
    const float* qr = p.q + i * p.ldq + p.head_of(kvh, x) * hd;
    for (int64_t d = 0; d < hd; ++d) qs[x * hd + d] = qr[d] * qscale;
    last[x] = p.last_key(i);
    first[x] = p.first_key(i);
    m[x] = kNegBig;
    l[x] = 0.0f;
  }
  std::fill(o, o + nl * hd, 0.0f);

  for (int64_t j0 = kb; j0 < ke; j0 += kKeyTileRows) {
    const int nk = int(std::min<int64_t>(kKeyTileRows, ke - j0));
    // Scores, lanes in groups of up to 4 against keys in pairs (independent accumulator chains).
    for (int x0 = 0; x0 < nl; x0 += 4) {
      const int nr = std::min(4, nl - x0);
      const float* qx = qs + x0 * hd;
      float* sx = s + x0 * kKeyTileRows;
      for (int j = 0; j < nk; j += 2) {
        if (x0 == 0) {
          // Keys a few rows ahead, and this tile's value rows for the product after it (to L2).
          for (int64_t jj = j0 + j + kPrefetchKeys; jj < std::min(j0 + j + kPrefetchKeys + 2, ke); ++jj)
            prefetch_floats<true>(p.krow(kvh, jj), hd);
          for (int64_t jj = j0 + j; jj < std::min<int64_t>(j0 + j + 2, j0 + nk); ++jj)
            prefetch_floats<false>(p.vrow(kvh, jj), hd);
        }
        const float* k0 = p.krow(kvh, j0 + j);
        // An odd last key pairs with itself; its second score lands in column nk < kKeyTileRows, unused.
        const float* k1 = j + 1 < nk ? p.krow(kvh, j0 + j + 1) : k0;
        switch (nr) {
          case 1: dot_pair<1>(qx, hd, k0, k1, hd, sx + j, sx + j + 1, kKeyTileRows); break;
          case 2: dot_pair<2>(qx, hd, k0, k1, hd, sx + j, sx + j + 1, kKeyTileRows); break;
          case 3: dot_pair<3>(qx, hd, k0, k1, hd, sx + j, sx + j + 1, kKeyTileRows); break;
          default: dot_pair<4>(qx, hd, k0, k1, hd, sx + j, sx + j + 1, kKeyTileRows); break;
        }
      }
    }
    for (int x = 0; x < nl; ++x) {
      float* sr = s + x * kKeyTileRows;
      // Causal: keys past this lane's last visible key get -inf (their probability becomes 0).
      for (int64_t j = std::max<int64_t>(0, last[x] + 1 - j0); j < nk; ++j) sr[j] = -kInf;
      // Sliding window: so do keys before its first visible key.
      for (int64_t j = 0; j < std::min<int64_t>(nk, first[x] - j0); ++j) sr[j] = -kInf;
      VecF mx = set1(-kInf);
      for_chunks(nk, [&](int64_t j, int c) {
        mx = max(mx, c == kLanes ? load(sr + j) : select(tail_mask(c), load_n(sr + j, c), set1(-kInf)));
      });
      const float mnew = std::max(m[x], reduce_max(mx));
      const VecF vm = set1(mnew);
      VecF sum = zero();
      for_chunks(nk, [&](int64_t j, int c) {
        VecF e = exp2(load_n(sr + j, c) - vm);
        if (c < kLanes) e = select(tail_mask(c), e, zero());
        store_n(sr + j, e, c);
        sum = sum + e;
      });
      alpha[x] = std::exp2(m[x] - mnew);
      l[x] = l[x] * alpha[x] + reduce_add(sum);
      m[x] = mnew;
    }
    for (int j = 0; j < nk; ++j) vrows[j] = p.vrow(kvh, j0 + j);
    gemm_ab(s, kKeyTileRows, 1, nl, vrows, nk, o, hd, hd, alpha);
  }
}

}  // namespace

void attention_forward(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                       float* out, int64_t ldo, int64_t Tq, int64_t Tk, int64_t n_head, int64_t n_kv_head, int64_t hd,
                       float scale, bool causal, int64_t q_offset, float* lse, int64_t window) {
  check_problem("attention_forward", ldq, ldk, ldv, ldo, Tq, Tk, n_head, n_kv_head, hd, q_offset, causal, window);
  if (Tq == 0) return;
  const Problem p{q,     ldq,      k,      ldk, v, ldv, Tq, Tk, n_head, n_kv_head, hd, n_head / n_kv_head,
                  scale, causal, q_offset, window};
  const int64_t lanes = p.lanes();

  if (lanes >= kMinTiledLanes) {
    const int64_t blocks = (lanes + kLaneBlock - 1) / kLaneBlock;
    cpu::parallel_for(n_kv_head * blocks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> scratch(tiled_forward_scratch(hd));
      for (int64_t t = t0; t < t1; ++t) {
        // Within a head, blocks run in the order 0, last, 1, last-1, ...: with a causal mask later blocks see
        // more keys, and this pairing gives each thread's contiguous range of tasks a similar amount of work.
        const int64_t kvh = t / blocks, r = t % blocks;
        const int64_t b = r % 2 == 0 ? r / 2 : blocks - 1 - r / 2;
        const int nl = int(std::min<int64_t>(kLaneBlock, lanes - b * kLaneBlock));
        forward_tiled_block(p, kvh, b * kLaneBlock, nl, out, ldo, lse, scratch.data());
      }
    });
    return;
  }

  // Few rows: split the keys when there are fewer KV heads than threads (and enough keys to share).
  const int nl = int(lanes);
  int64_t kend = 0, kbeg = Tk;
  for (int64_t i = 0; i < Tq; ++i) {
    kend = std::max(kend, p.last_key(i) + 1);
    kbeg = std::min(kbeg, p.first_key(i));
  }
  kbeg = kbeg / kKeyTileRows * kKeyTileRows;  // from a tile boundary, as without a window
  const int64_t threads = cpu::num_threads();
  int64_t splits = 1;
  if (n_kv_head < threads) splits = std::min<int64_t>((threads + n_kv_head - 1) / n_kv_head, (kend - kbeg) / 512);
  splits = std::max<int64_t>(splits, 1);
  const size_t scratch_size = size_t(nl * hd + nl * kKeyTileRows + nl);
  // Partial states per (kv head, split): m, l (nl each) and o (nl, hd).
  const int64_t state = nl * (2 + hd);
  std::vector<float> states(size_t(splits > 1 ? n_kv_head * splits * state : n_kv_head * state));
  cpu::parallel_for(n_kv_head * splits, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scratch(scratch_size);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t kvh = t / splits, sp = t % splits;
      // Split boundaries on whole key tiles.
      const int64_t tiles = (kend - kbeg + kKeyTileRows - 1) / kKeyTileRows;
      const int64_t kb = std::min(kend, kbeg + tiles * sp / splits * kKeyTileRows);
      const int64_t ke = std::min(kend, kbeg + tiles * (sp + 1) / splits * kKeyTileRows);
      float* st = states.data() + t * state;
      forward_rows_range(p, kvh, nl, kb, ke, st, st + nl, st + 2 * nl, scratch.data());
    }
  });
  // Merge the splits and normalise: o = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).
  for (int64_t kvh = 0; kvh < n_kv_head; ++kvh)
    for (int x = 0; x < nl; ++x) {
      float M = kNegBig;
      for (int64_t sp = 0; sp < splits; ++sp) M = std::max(M, states[size_t((kvh * splits + sp) * state + x)]);
      const int64_t i = p.token_of(x), h = p.head_of(kvh, x);
      float* orow = out + i * ldo + h * hd;
      float L = 0.0f;
      for (int64_t sp = 0; sp < splits; ++sp) {
        const float* st = states.data() + (kvh * splits + sp) * state;
        const float w = std::exp2(st[x] - M);
        L += st[nl + x] * w;
        const float* o = st + 2 * nl + x * hd;
        if (sp == 0)
          for (int64_t d = 0; d < hd; ++d) orow[d] = o[d] * w;
        else
          for (int64_t d = 0; d < hd; ++d) orow[d] += o[d] * w;
      }
      const float inv = 1.0f / L;
      for (int64_t d = 0; d < hd; ++d) orow[d] *= inv;
      if (lse) lse[h * Tq + i] = (M + std::log2(L)) * kLn2;
    }
}

// ---- backward ------------------------------------------------------------------------------------------

namespace {

size_t backward_scratch(int64_t hd) {
  return size_t(2 * hd * kLaneBlock + 2 * kKeyTile * kLaneBlock + kLaneBlock * hd + 4 * kLaneBlock);
}

struct Grads {
  const float* out;
  int64_t ldo;
  const float* lse;
  const float* dout;
  int64_t lddo;
  float* dq;
  int64_t lddq;
};

// One lane block of KV head kvh: dq for its lanes (overwritten), dk/dv (rows lddk/lddv apart, accumulated).
void backward_block(const Problem& p, const Grads& g, int64_t kvh, int64_t lane0, int nl, float* dk, int64_t lddk,
                    float* dv, int64_t lddv, float* scratch) {
  const int64_t hd = p.hd;
  const int nv = (nl + kLanes - 1) / kLanes;
  float* qt = scratch;                     // (hd, kLaneBlock) q^T * scale * log2 e
  float* dot = qt + hd * kLaneBlock;       // (hd, kLaneBlock) dout^T
  float* pt = dot + hd * kLaneBlock;       // (kKeyTile, kLaneBlock) P^T
  float* dpt = pt + kKeyTile * kLaneBlock; // (kKeyTile, kLaneBlock) dP^T, then dS^T * scale
  float* dqb = dpt + kKeyTile * kLaneBlock;// (kLaneBlock, hd)
  float* lse2 = dqb + kLaneBlock * hd;     // (kLaneBlock) lse in base 2
  float* D = lse2 + kLaneBlock;            // (kLaneBlock) dout . out
  float* lim = D + kLaneBlock;             // last visible key
  float* fst = lim + kLaneBlock;           // first visible key
  const float* qrows[kLaneBlock];
  const float* dorows[kLaneBlock];
  const float* krows[kKeyTile];

  const float qscale = p.scale * kLog2e;
  int64_t lim_min = p.Tk, lim_max = 0, fst_min = p.Tk, fst_max = 0;
  for (int x = 0; x < nv * kLanes; ++x) {
    if (x < nl) {
      const int64_t lane = lane0 + x, i = p.token_of(lane), h = p.head_of(kvh, lane);
      const float* qr = p.q + i * p.ldq + h * hd;
      const float* dor = g.dout + i * g.lddo + h * hd;
      const float* orow = g.out + i * g.ldo + h * hd;
      qrows[x] = qr;
      dorows[x] = dor;
      float dsum = 0.0f;
      for (int64_t d = 0; d < hd; ++d) {
        qt[d * kLaneBlock + x] = qr[d] * qscale;
        dot[d * kLaneBlock + x] = dor[d];
        dsum += dor[d] * orow[d];
      }
      D[x] = dsum;
      lse2[x] = g.lse[h * p.Tq + i] * kLog2e;
      const int64_t last = p.last_key(i), first = p.first_key(i);
      lim[x] = float(last);
      fst[x] = float(first);
      lim_min = std::min(lim_min, last);
      lim_max = std::max(lim_max, last);
      fst_min = std::min(fst_min, first);
      fst_max = std::max(fst_max, first);
    } else {  // padding: P = 0 and dP = 0
      for (int64_t d = 0; d < hd; ++d) qt[d * kLaneBlock + x] = dot[d * kLaneBlock + x] = 0.0f;
      D[x] = 0.0f;
      lse2[x] = kInf;
      lim[x] = kInf;
      fst[x] = -kInf;
    }
  }
  std::fill(dqb, dqb + nl * hd, 0.0f);
  const VecF vscale = set1(p.scale);

  const int64_t kend = lim_max + 1, kbeg = fst_min / kKeyTile * kKeyTile;
  for (int64_t j0 = kbeg; j0 < kend; j0 += kKeyTile) {
    const int nk = int(std::min<int64_t>(kKeyTile, kend - j0));
    gemm_abt(p.krow(kvh, j0), p.ldk, nk, qt, kLaneBlock, nv, hd, pt, kLaneBlock);   // S^T (base 2)
    gemm_abt(p.vrow(kvh, j0), p.ldv, nk, dot, kLaneBlock, nv, hd, dpt, kLaneBlock); // dP^T
    const bool masked = j0 + nk - 1 > lim_min || j0 < fst_max;
    for (int vi = 0; vi < nv; ++vi) {
      const VecF vl = load(lse2 + vi * kLanes), vD = load(D + vi * kLanes), vlim = load(lim + vi * kLanes);
      const VecF vfst = load(fst + vi * kLanes);
      for (int j = 0; j < nk; ++j) {
        float* ps = pt + j * kLaneBlock + vi * kLanes;
        float* dps = dpt + j * kLaneBlock + vi * kLanes;
        VecF pr = exp2(load(ps) - vl);
        if (masked) {
          const VecF vj = set1(float(j0 + j));
          pr = select(cmp_lt(vlim, vj), zero(), pr);
          pr = select(cmp_lt(vj, vfst), zero(), pr);
        }
        store(ps, pr);
        store(dps, pr * (load(dps) - vD) * vscale);
      }
    }
    for (int j = 0; j < nk; ++j) krows[j] = p.krow(kvh, j0 + j);
    // dV[j] += sum_lanes P^T[j][lane] dO[lane]; dK[j] += sum_lanes dS^T[j][lane] Q[lane]; dQ += dS K.
    gemm_ab(pt, kLaneBlock, 1, nk, dorows, nl, dv + j0 * lddv, lddv, hd, nullptr);
    gemm_ab(dpt, kLaneBlock, 1, nk, qrows, nl, dk + j0 * lddk, lddk, hd, nullptr);
    gemm_ab(dpt, 1, kLaneBlock, nl, krows, nk, dqb, hd, hd, nullptr);
  }

  for (int x = 0; x < nl; ++x) {
    const int64_t lane = lane0 + x, i = p.token_of(lane), h = p.head_of(kvh, lane);
    std::copy(dqb + x * hd, dqb + (x + 1) * hd, g.dq + i * g.lddq + h * hd);
  }
}

}  // namespace

void attention_backward(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                        const float* out, int64_t ldo, const float* lse, const float* dout, int64_t lddo, float* dq,
                        int64_t lddq, float* dk, int64_t lddk, float* dv, int64_t lddv, int64_t Tq, int64_t Tk,
                        int64_t n_head, int64_t n_kv_head, int64_t hd, float scale, bool causal, int64_t q_offset,
                        int64_t window) {
  check_problem("attention_backward", ldq, ldk, ldv, ldo, Tq, Tk, n_head, n_kv_head, hd, q_offset, causal, window);
  IRIS_CHECK(lddo >= n_head * hd && lddq >= n_head * hd && lddk >= n_kv_head * hd && lddv >= n_kv_head * hd,
             "attention_backward: a gradient row stride is smaller than its row");
  if (Tq == 0) return;
  const Problem p{q,     ldq,      k,      ldk, v, ldv, Tq, Tk, n_head, n_kv_head, hd, n_head / n_kv_head,
                  scale, causal, q_offset, window};
  const Grads g{out, ldo, lse, dout, lddo, dq, lddq};
  const int64_t lanes = p.lanes();
  const int64_t blocks = (lanes + kLaneBlock - 1) / kLaneBlock;
  const int64_t threads = cpu::num_threads();
  // Stripes of lane blocks per KV head, so every thread has work even with few KV heads.
  int64_t stripes = 1;
  if (n_kv_head < threads) stripes = std::min<int64_t>((threads + n_kv_head - 1) / n_kv_head, blocks);
  // With several stripes, each accumulates dK/dV into its own (Tk, hd) pair, summed in stripe order after.
  std::vector<float> partial(size_t(stripes > 1 ? n_kv_head * stripes * 2 * Tk * hd : 0), 0.0f);
  cpu::parallel_for(n_kv_head * stripes, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> scratch(backward_scratch(hd));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t kvh = t / stripes, sp = t % stripes;
      float *tdk, *tdv;
      int64_t ldk_t, ldv_t;
      if (stripes == 1) {
        tdk = dk + kvh * hd;
        tdv = dv + kvh * hd;
        ldk_t = lddk;
        ldv_t = lddv;
      } else {
        tdk = partial.data() + size_t(t) * 2 * Tk * hd;
        tdv = tdk + Tk * hd;
        ldk_t = ldv_t = hd;
      }
      for (int64_t b = sp; b < blocks; b += stripes) {
        const int nl = int(std::min<int64_t>(kLaneBlock, lanes - b * kLaneBlock));
        backward_block(p, g, kvh, b * kLaneBlock, nl, tdk, ldk_t, tdv, ldv_t, scratch.data());
      }
    }
  });
  if (stripes > 1) {
    cpu::parallel_for(n_kv_head * Tk, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t kvh = r / Tk, j = r % Tk;
        float* dkr = dk + j * lddk + kvh * hd;
        float* dvr = dv + j * lddv + kvh * hd;
        for (int64_t sp = 0; sp < stripes; ++sp) {
          const float* src = partial.data() + size_t((kvh * stripes + sp) * 2 * Tk * hd);
          for (int64_t d = 0; d < hd; ++d) {
            dkr[d] += src[j * hd + d];
            dvr[d] += src[Tk * hd + j * hd + d];
          }
        }
      }
    });
  }
}

}  // namespace iris::ops
