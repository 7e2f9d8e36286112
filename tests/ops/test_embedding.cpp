// Embedding: lookup and scatter-add gradient against the reference (repeated ids sum), finite differences,
// and the out-of-range id error.
#include <gtest/gtest.h>

#include <string>

#include "ops/embedding.h"
#include "ops_test_util.h"
#include "tensor/error.h"

namespace iris::ops {
namespace {

using test::VecD;
using test::VecFl;

TEST(OpsEmbedding, ForwardBackwardMatchReference) {
  for (int64_t dim : {1, 5, 16, 300, 1000}) {
    const int64_t vocab = 11;
    std::vector<int32_t> ids = {3, 0, 10, 3, 3, 7, 10, 1, 0};
    const int64_t n = int64_t(ids.size());
    VecD table = test::random_vec(test::sz(vocab * dim), 1), dout = test::random_vec(test::sz(n * dim), 2);
    VecD dtable0 = test::random_vec(test::sz(vocab * dim), 3);
    VecD out(test::sz(n * dim)), dtable = dtable0;
    ref::embedding_forward(table.data(), vocab, dim, ids.data(), n, out.data());
    ref::embedding_backward(ids.data(), n, dout.data(), dtable.data(), vocab, dim);
    VecFl tf = test::to_f(table), dof = test::to_f(dout), outf(out.size()), dtf = test::to_f(dtable0);
    embedding_forward(tf.data(), vocab, dim, ids.data(), n, outf.data());
    EXPECT_EQ(test::scaled_err(outf, out), 0.0);
    embedding_backward(ids.data(), n, dof.data(), dtf.data(), vocab, dim);
    EXPECT_LT(test::scaled_err(dtf, dtable), 1e-6) << dim;
  }
}

TEST(OpsEmbedding, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t vocab = 4, dim = 3;
  std::vector<int32_t> ids = {2, 0, 2};
  VecD table = test::random_vec(test::sz(vocab * dim), 4), dout = test::random_vec(ids.size() * dim, 5);
  VecD out(ids.size() * dim);
  auto loss = [&] {
    ref::embedding_forward(table.data(), vocab, dim, ids.data(), int64_t(ids.size()), out.data());
    return test::dot(dout, out);
  };
  VecD fd = test::numeric_grad(table, loss);
  VecD g(table.size(), 0.0);
  ref::embedding_backward(ids.data(), int64_t(ids.size()), dout.data(), g.data(), vocab, dim);
  EXPECT_LT(test::scaled_err(g, fd), 1e-7);
}

TEST(OpsEmbedding, OutOfRangeIdThrowsNamingIt) {
  VecFl table(4 * 2, 1.0f), out(2 * 2);
  for (int32_t bad : {4, -1, 1000000}) {
    std::vector<int32_t> ids = {1, bad};
    try {
      embedding_forward(table.data(), 4, 2, ids.data(), 2, out.data());
      FAIL() << "expected iris::Error for id " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("vocab size 4"), std::string::npos) << msg;
    }
    EXPECT_THROW(embedding_backward(ids.data(), 2, out.data(), table.data(), 4, 2), Error);
  }
}

}  // namespace
}  // namespace iris::ops
