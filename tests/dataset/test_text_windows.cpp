// TextWindowLoader (`iris train --objective lm`): packing of tokenized documents into windows, every token a
// target, a seeded per-epoch order that visits each window once, and exact resumption from a saved state.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data/text_windows.h"
#include "fixtures.h"

namespace iris::data {
namespace {

using testing::shared_tokenizer;

std::vector<std::string> docs() {
  return {"A red circle and a blue square.", "How many stars are there? 3", "", "The quick brown fox jumps.",
          "Is there a green triangle? no", "Tokens from several documents are packed into one stream."};
}

TEST(TextWindows, PackedStreamIsTheDocumentsWithBosAndEos) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  for (int64_t window : {2, 5, 16, 1000}) {
    TextWindowLoader tw(docs(), tok, window, 3, 7);
    std::vector<int32_t> expect;
    for (const auto& d : docs()) {
      if (d.empty()) continue;
      auto ids = tok.encode(d, true);
      expect.insert(expect.end(), ids.begin(), ids.end());
      expect.push_back(tok.eos_ids().at(0));
    }
    EXPECT_EQ(tw.total_tokens(), int64_t(expect.size()));
    std::vector<int32_t> got;
    for (const auto& w : tw.windows()) {
      EXPECT_LE(int64_t(w.size()), window);
      EXPECT_GE(w.size(), 2u);
      got.insert(got.end(), w.begin(), w.end());
    }
    // Only a final window of one token may be dropped.
    ASSERT_LE(expect.size() - got.size(), 1u);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), expect.begin()));
  }
}

TEST(TextWindows, EachEpochVisitsEveryWindowOnceWithAllTokensSupervised) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  TextWindowLoader tw(docs(), tok, 6, 4, 11);
  const int64_t n = tw.epoch_size();
  ASSERT_GT(n, 4);
  std::vector<std::vector<int64_t>> orders;
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> seen;
    while (auto b = tw.next_batch()) {
      EXPECT_LE(b->size(), 4u);
      for (const Example& e : *b) {
        EXPECT_EQ(e.ids, tw.windows()[size_t(e.index)]);
        EXPECT_EQ(e.labels, e.ids);
        EXPECT_TRUE(e.pixel_values.empty());
        seen.push_back(e.index);
      }
    }
    EXPECT_EQ(tw.epoch(), epoch + 1);
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(sorted[size_t(i)], i);
    EXPECT_EQ(seen, tw.epoch_order(epoch));
    orders.push_back(seen);
  }
  EXPECT_NE(orders[0], orders[1]);  // reshuffled per epoch
  TextWindowLoader other_seed(docs(), tok, 6, 4, 12);
  EXPECT_NE(other_seed.epoch_order(0), orders[0]);
}

TEST(TextWindows, RestoreContinuesExactlyAndRefusesOtherData) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  TextWindowLoader a(docs(), tok, 5, 2, 3);
  std::vector<int64_t> uninterrupted;
  for (int i = 0; i < 9; ++i)
    if (auto b = a.next_batch())
      for (const Example& e : *b) uninterrupted.push_back(e.index);
  TextWindowLoader b(docs(), tok, 5, 2, 3);
  std::vector<int64_t> resumed;
  for (int i = 0; i < 4; ++i)
    if (auto bb = b.next_batch())
      for (const Example& e : *bb) resumed.push_back(e.index);
  TextWindowLoader c(docs(), tok, 5, 2, 3);
  c.restore(b.state());
  for (int i = 4; i < 9; ++i)
    if (auto bb = c.next_batch())
      for (const Example& e : *bb) resumed.push_back(e.index);
  EXPECT_EQ(resumed, uninterrupted);

  TextWindowLoader other(docs(), tok, 5, 2, 4);  // another seed: another order
  EXPECT_THROW(other.restore(b.state()), Error);
  EXPECT_THROW(c.restore(nlohmann::json{{"epoch", 0}}), Error);
}

TEST(TextWindows, BadSettingsAreErrors) {
  const text::Tokenizer& tok = shared_tokenizer("mistral");
  EXPECT_THROW(TextWindowLoader(docs(), tok, 1, 2, 0), Error);
  EXPECT_THROW(TextWindowLoader(docs(), tok, 8, 0, 0), Error);
  EXPECT_THROW(TextWindowLoader(std::vector<std::string>{"", ""}, tok, 8, 2, 0), Error);
}

}  // namespace
}  // namespace iris::data
