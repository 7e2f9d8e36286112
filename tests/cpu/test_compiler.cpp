// Guards against a GCC 12 AVX-512 miscompilation (SLP vectorisation of constant vectors) that the build works
// around with -fno-tree-slp-vectorize: if the flags change and the bug returns, this fails.
#include <gtest/gtest.h>

#include <vector>

namespace {

struct Sink {
  double last = 0;
};

__attribute__((noinline)) void take(Sink& s, const std::vector<double>& v) { s.last = v[3]; }
__attribute__((noinline)) int64_t last_of(const std::vector<int64_t>& v) { return v.back(); }

}  // namespace

TEST(Compiler, ConstantVectorsAreBuiltCorrectly) {
  Sink s;
  take(s, {1 / 3.0, 1 / 3.0, 1 / 3.0, 0.0});
  EXPECT_EQ(s.last, 0.0);
  std::vector<int64_t> w{7, 7, 7, 0};
  EXPECT_EQ(last_of(w), 0);
}
