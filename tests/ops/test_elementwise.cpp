// Elementwise ops against the references, including aliasing and the parallel path.
#include <gtest/gtest.h>

#include "ops/elementwise.h"
#include "ops_test_util.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsElementwise, MatchReference) {
  for (int64_t n : {1, 15, 16, 17, 1000, 100003}) {
    SCOPED_TRACE(n);
    VecD a = test::random_vec(test::sz(n), 1), b = test::random_vec(test::sz(n), 2);
    VecFl af = test::to_f(a), bf = test::to_f(b), yf(test::sz(n));
    VecD y(test::sz(n));
    ref::add(a.data(), b.data(), y.data(), n);
    add(af.data(), bf.data(), yf.data(), n);
    EXPECT_LT(test::scaled_err(yf, y), 1e-7);
    VecFl acopy = af;
    add(acopy.data(), bf.data(), acopy.data(), n);  // y aliases a
    EXPECT_EQ(acopy, yf);
    acopy = af;
    add_inplace(acopy.data(), bf.data(), n);
    EXPECT_EQ(acopy, yf);
    VecD s = a;
    ref::scale_inplace(s.data(), 0.375, n);
    acopy = af;
    scale_inplace(acopy.data(), 0.375f, n);
    EXPECT_LT(test::scaled_err(acopy, s), 1e-7);
  }
  for (auto [rows, n] : {std::pair<int64_t, int64_t>{1, 1}, {3, 17}, {70, 64}, {1000, 33}}) {
    VecD y = test::random_vec(test::sz(rows * n), 3), b = test::random_vec(test::sz(n), 4), db0 = test::random_vec(test::sz(n), 5);
    VecFl yf = test::to_f(y), bf = test::to_f(b), dbf = test::to_f(db0);
    VecD db = db0;
    ref::sum_rows_accumulate(y.data(), db.data(), rows, n);
    sum_rows_accumulate(yf.data(), dbf.data(), rows, n);
    EXPECT_LT(test::scaled_err(dbf, db), 1e-6);
    ref::add_bias_rows(y.data(), b.data(), rows, n);
    add_bias_rows(yf.data(), bf.data(), rows, n);
    EXPECT_LT(test::scaled_err(yf, y), 1e-7);
  }
}

}  // namespace
}  // namespace iris::ops
