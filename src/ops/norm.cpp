// RMSNorm and LayerNorm kernels. Rows run in parallel; each row is reduced with several vector accumulators
// (breaking the add dependency chain and keeping float rounding small). LayerNorm uses two passes (mean, then
// the centred sum of squares), which is exact where the one-pass E[x^2] - E[x]^2 cancels.
// Backward computes dw/db first, over column blocks (each thread owns its columns, summing over all rows, so
// the result does not depend on the thread count), then dx over rows; that order lets dx alias dy.
#include "ops/norm.h"

#include <algorithm>

#include "cpu/threads.h"
#include "ops/simd.h"
#include "tensor/error.h"

namespace iris::ops {

namespace {

using namespace simd;

// Rows per thread at least: a row of a few thousand floats is a few microseconds of work.
inline int64_t row_grain(int64_t dim) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1)); }

// Sum over i < n of f(i, count) where f returns a vector of `count` valid lanes (zeros beyond).
template <typename F>
inline float row_reduce(int64_t n, F f) {
  VecF a0 = zero(), a1 = zero(), a2 = zero(), a3 = zero();
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    a0 = a0 + f(i, kLanes);
    a1 = a1 + f(i + kLanes, kLanes);
    a2 = a2 + f(i + 2 * kLanes, kLanes);
    a3 = a3 + f(i + 3 * kLanes, kLanes);
  }
  for (; i < n; i += kLanes) a0 = a0 + f(i, int(std::min<int64_t>(kLanes, n - i)));
  return reduce_add((a0 + a1) + (a2 + a3));
}

constexpr int64_t kColBlock = 4 * kLanes;  // columns per task in the weight-gradient pass

// For each column c: dw[c] += sum_r dy[r][c] * xhat(r, c) and db[c] += sum_r dy[r][c], xhat(r, c) =
// (x[r][c] - mean[r]) * rstd[r] (mean may be nullptr: RMSNorm).
void weight_grads(const float* x, const float* mean, const float* rstd, const float* dy, float* dw, float* db,
                  int64_t rows, int64_t dim) {
  if (!dw && !db) return;
  const int64_t nblocks = (dim + kColBlock - 1) / kColBlock;
  // Each block walks all rows: give threads at least a few blocks' worth of work.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(rows, 1));
  cpu::parallel_for(nblocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kColBlock;
      const int64_t ncols = std::min(kColBlock, dim - c0);
      const int nv = int((ncols + kLanes - 1) / kLanes);
      VecF aw[4] = {zero(), zero(), zero(), zero()}, ab[4] = {zero(), zero(), zero(), zero()};
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim + c0;
        const float* dyr = dy + r * dim + c0;
        VecF rs = set1(rstd[r]);
        VecF mu = set1(mean ? mean[r] : 0.0f);
        for (int v = 0; v < nv; ++v) {
          int cnt = int(std::min<int64_t>(kLanes, ncols - v * kLanes));
          VecF d = load_n(dyr + v * kLanes, cnt);
          VecF xhat = (load_n(xr + v * kLanes, cnt) - mu) * rs;
          aw[v] = fmadd(d, xhat, aw[v]);
          ab[v] = ab[v] + d;
        }
      }
      for (int v = 0; v < nv; ++v) {
        int cnt = int(std::min<int64_t>(kLanes, ncols - v * kLanes));
        float* pw = dw ? dw + c0 + v * kLanes : nullptr;
        float* pb = db ? db + c0 + v * kLanes : nullptr;
        if (pw) store_n(pw, load_n(pw, cnt) + aw[v], cnt);
        if (pb) store_n(pb, load_n(pb, cnt) + ab[v], cnt);
      }
    }
  });
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t dim, float eps) {
  IRIS_CHECK(dim > 0 && rows >= 0, "rmsnorm: bad shape (", rows, ", ", dim, ")");
  cpu::parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float ss = row_reduce(dim, [&](int64_t i, int c) {
        VecF v = load_n(xr + i, c);
        return v * v;
      });
      const float rs = 1.0f / std::sqrt(ss / float(dim) + eps);
      if (rstd) rstd[r] = rs;
      VecF vrs = set1(rs);
      for_chunks(dim, [&](int64_t i, int c) { store_n(yr + i, load_n(xr + i, c) * vrs * load_n(w + i, c), c); });
    }
  });
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t rows, int64_t dim) {
  IRIS_CHECK(dim > 0 && rows >= 0, "rmsnorm_backward: bad shape (", rows, ", ", dim, ")");
  weight_grads(x, nullptr, rstd, dy, dw, nullptr, rows, dim);
  if (!dx) return;
  cpu::parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      float* dxr = dx + r * dim;
      const float rs = rstd[r];
      // dx = r (g - x r^2 mean(g x)), g = dy w.
      float dot = row_reduce(dim, [&](int64_t i, int c) {
        return load_n(dyr + i, c) * load_n(w + i, c) * load_n(xr + i, c);
      });
      VecF vrs = set1(rs), k = set1(rs * rs * dot / float(dim));
      for_chunks(dim, [&](int64_t i, int c) {
        VecF g = load_n(dyr + i, c) * load_n(w + i, c);
        store_n(dxr + i, vrs * fnmadd(load_n(xr + i, c), k, g), c);
      });
    }
  });
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t dim, float eps) {
  IRIS_CHECK(dim > 0 && rows >= 0, "layernorm: bad shape (", rows, ", ", dim, ")");
  cpu::parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      const float mu = row_reduce(dim, [&](int64_t i, int c) { return load_n(xr + i, c); }) / float(dim);
      VecF vmu = set1(mu);
      const float var = row_reduce(dim, [&](int64_t i, int c) {
                          // masked lanes would give (0 - mu)^2: zero them
                          VecF d = load_n(xr + i, c) - vmu;
                          return c == kLanes ? d * d : select(tail_mask(c), d * d, zero());
                        }) /
                        float(dim);
      const float rs = 1.0f / std::sqrt(var + eps);
      if (mean) mean[r] = mu;
      if (rstd) rstd[r] = rs;
      VecF vrs = set1(rs);
      for_chunks(dim, [&](int64_t i, int c) {
        VecF xhat = (load_n(xr + i, c) - vmu) * vrs;
        VecF out = b ? fmadd(xhat, load_n(w + i, c), load_n(b + i, c)) : xhat * load_n(w + i, c);
        store_n(yr + i, out, c);
      });
    }
  });
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t dim) {
  IRIS_CHECK(dim > 0 && rows >= 0, "layernorm_backward: bad shape (", rows, ", ", dim, ")");
  weight_grads(x, mean, rstd, dy, dw, db, rows, dim);
  if (!dx) return;
  cpu::parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      const float* dyr = dy + r * dim;
      float* dxr = dx + r * dim;
      VecF vmu = set1(mean[r]), vrs = set1(rstd[r]);
      // Two sums in one sweep: sum(g) and sum(g xhat); masked lanes have dy = 0 so g = 0.
      VecF sg = zero(), sgx = zero();
      for_chunks(dim, [&](int64_t i, int c) {
        VecF g = load_n(dyr + i, c) * load_n(w + i, c);
        VecF xhat = (load_n(xr + i, c) - vmu) * vrs;
        sg = sg + g;
        sgx = fmadd(g, xhat, sgx);
      });
      VecF mg = set1(reduce_add(sg) / float(dim)), mgx = set1(reduce_add(sgx) / float(dim));
      for_chunks(dim, [&](int64_t i, int c) {
        VecF g = load_n(dyr + i, c) * load_n(w + i, c);
        VecF xhat = (load_n(xr + i, c) - vmu) * vrs;
        store_n(dxr + i, vrs * fnmadd(xhat, mgx, g - mg), c);
      });
    }
  });
}

}  // namespace iris::ops
