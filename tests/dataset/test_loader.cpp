// DataLoader: every good sample once per epoch, bad ones skipped and counted once, deterministic order for a
// seed whatever the worker count, a new order each epoch, exact resume from a saved position, length grouping,
// augmentation, truncation and strict mode.
#include <gtest/gtest.h>

#include <set>

#include "data/loader.h"
#include "fixtures.h"
#include "vision/preprocess.h"

namespace iris::data {
namespace {

using iris::test::temp_dir;
using iris::test::write_file;

constexpr int kImages = 12;

// A folder with images and a LLaVA JSON of 24 good samples (varied lengths; text-only, one- and two-image) and 4
// whose images are missing or broken.
struct Corpus {
  std::string dir;
  std::vector<Sample> samples;
  int good = 0;
};

const Corpus& corpus() {
  static Corpus c = [] {
    Corpus c;
    c.dir = testing::make_image_folder("loader", kImages);
    nlohmann::json arr = nlohmann::json::array();
    for (int i = 0; i < 24; ++i) {
      nlohmann::json e;
      e["id"] = str_cat("s", i);  // (not "s" + std::to_string(i): GCC 12 -Wrestrict false positive)
      std::string answer = str_cat("Answer ", i);
      for (int w = 0; w < (i * 7) % 23; ++w) answer += " word";
      std::string question = str_cat("Question ", i, "?");
      if (i % 5 == 3) {  // text-only
      } else if (i % 5 == 4) {
        e["image"] = {str_cat("img", i % kImages, ".png"), str_cat("img", (i + 1) % kImages, ".png")};
        question = "<image>\n<image>\n" + question;
      } else {
        e["image"] = str_cat("img", i % kImages, ".png");
        question = "<image>\n" + question;
      }
      e["conversations"] = {{{"from", "human"}, {"value", question}}, {{"from", "gpt"}, {"value", answer}}};
      arr.push_back(e);
      c.good++;
    }
    for (std::string bad : {"missing.png", "broken.png", "truncated.png", "sub/none.png"}) {
      nlohmann::json e;
      e["id"] = str_cat("bad_", bad);
      e["image"] = bad;
      e["conversations"] = {{{"from", "human"}, {"value", "<image>\nQ"}}, {{"from", "gpt"}, {"value", "A"}}};
      arr.insert(arr.begin() + 3 * long(arr.size() % 7), e);
    }
    write_file(c.dir + "/data.json", arr.dump(1));
    LoadReport r;
    c.samples = load_llava_json(c.dir + "/data.json", &r);
    return c;
  }();
  return c;
}

PromptFormat mistral_format() {
  PromptFormat pf;
  pf.tok = &testing::shared_tokenizer("mistral");
  pf.image_token = 32000;
  pf.image_tokens_per_image = 4;
  return pf;
}

LoaderConfig small_config() {
  LoaderConfig cfg;
  cfg.image_dir = corpus().dir + "/images";
  cfg.preprocess.shortest_edge = 8;
  cfg.preprocess.crop_height = cfg.preprocess.crop_width = 8;
  cfg.quiet = true;
  cfg.seed = 7;
  return cfg;
}

// What a run produces, comparable across runs: per batch, the sample indices, ids, labels and pixels.
struct Trace {
  std::vector<std::vector<int64_t>> batches;
  std::vector<std::vector<int32_t>> ids, labels;
  std::vector<std::vector<std::vector<float>>> pixels;
  bool operator==(const Trace&) const = default;
};

// Runs the loader for n batches (or to the end of `epochs` epochs when n < 0); nullopt marks an epoch end.
Trace run(DataLoader& dl, int n_batches, int epochs = 1) {
  Trace t;
  int ends = 0;
  while (n_batches < 0 ? ends < epochs : int(t.batches.size()) < n_batches) {
    auto b = dl.next_batch();
    if (!b) {
      ++ends;
      t.batches.push_back({-1});
      continue;
    }
    std::vector<int64_t> idx;
    for (Example& e : *b) {
      idx.push_back(e.index);
      t.ids.push_back(e.ids);
      t.labels.push_back(e.labels);
      t.pixels.push_back(e.pixel_values);
    }
    t.batches.push_back(idx);
  }
  return t;
}

std::vector<int64_t> flat(const Trace& t, int epoch) {
  std::vector<int64_t> out;
  int e = 0;
  for (const auto& b : t.batches) {
    if (b.size() == 1 && b[0] == -1) {
      ++e;
      continue;
    }
    if (e == epoch) out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

TEST(Loader, EveryGoodSampleOncePerEpochAndBadOnesCountedOnce) {
  LoaderConfig cfg = small_config();
  cfg.batch_size = 3;
  DataLoader dl(corpus().samples, mistral_format(), cfg);
  EXPECT_EQ(dl.size(), corpus().samples.size());
  Trace t = run(dl, -1, 2);
  for (int e = 0; e < 2; ++e) {
    std::vector<int64_t> seen = flat(t, e);
    EXPECT_EQ(int(seen.size()), corpus().good);
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size());
    for (int64_t i : seen) EXPECT_EQ(corpus().samples[size_t(i)].id.rfind("bad_", 0), std::string::npos);
  }
  EXPECT_NE(flat(t, 0), flat(t, 1));  // a new order each epoch
  LoadReport r = dl.report();
  EXPECT_EQ(r.skipped_for(skip_reason::kMissingImage), 2);
  EXPECT_EQ(r.skipped_for(skip_reason::kBadImage), 2);
  EXPECT_EQ(r.total_skipped(), 4);  // counted once although seen in two epochs
  EXPECT_EQ(dl.epoch(), 2);
  EXPECT_EQ(dl.position(), 0);
}

TEST(Loader, ExamplesMatchTheEncoderAndPreprocessing) {
  LoaderConfig cfg = small_config();
  cfg.shuffle = false;
  DataLoader dl(corpus().samples, mistral_format(), cfg);
  ConversationEncoder enc(mistral_format());
  int checked = 0;
  while (auto b = dl.next_batch()) {
    ASSERT_EQ(b->size(), 1u);
    const Example& ex = (*b)[0];
    const Sample& s = corpus().samples[size_t(ex.index)];
    Encoded e = enc.encode(s);
    EXPECT_EQ(ex.ids, e.ids);
    EXPECT_EQ(ex.labels, e.labels);
    EXPECT_EQ(ex.id, s.id);
    ASSERT_EQ(ex.pixel_values.size(), s.image_paths.size());
    for (size_t j = 0; j < s.image_paths.size(); ++j) {
      vision::Image img = vision::load_image(cfg.image_dir + "/" + s.image_paths[j]);
      EXPECT_EQ(ex.pixel_values[j], vision::preprocess(img, cfg.preprocess));
      EXPECT_EQ(ex.image_sizes[j], std::make_pair(8, 8));
    }
    ++checked;
  }
  EXPECT_EQ(checked, corpus().good);
}

TEST(Loader, SameSequenceForAnyWorkerCount) {
  Trace ref;
  for (int workers : {0, 1, 3}) {
    for (int prefetch : {1, 5}) {
      LoaderConfig cfg = small_config();
      cfg.workers = workers;
      cfg.prefetch = prefetch;
      cfg.batch_size = 4;
      cfg.augment = true;
      DataLoader dl(corpus().samples, mistral_format(), cfg);
      Trace t = run(dl, -1, 2);
      if (workers == 0)
        ref = t;
      else
        EXPECT_TRUE(t == ref) << "workers " << workers << " prefetch " << prefetch;
    }
  }
  LoaderConfig other = small_config();
  other.seed = 8;
  other.batch_size = 4;
  DataLoader dl(corpus().samples, mistral_format(), other);
  EXPECT_NE(flat(run(dl, -1, 1), 0), flat(ref, 0));
}

TEST(Loader, ResumeContinuesExactly) {
  LoaderConfig cfg = small_config();
  cfg.batch_size = 3;
  cfg.workers = 2;
  cfg.augment = true;
  DataLoader full(corpus().samples, mistral_format(), cfg);
  const Trace all = run(full, -1, 3);
  for (int stop_after : {0, 1, 4, 9, 10, 13}) {
    DataLoader a(corpus().samples, mistral_format(), cfg);
    Trace head = run(a, stop_after);
    nlohmann::json state = a.state();
    DataLoader b(corpus().samples, mistral_format(), cfg);  // a fresh process
    b.restore(nlohmann::json::parse(state.dump()));
    Trace tail = run(b, int(all.batches.size()) - stop_after);
    // head + tail == the uninterrupted run
    Trace joined = head;
    joined.batches.insert(joined.batches.end(), tail.batches.begin(), tail.batches.end());
    joined.ids.insert(joined.ids.end(), tail.ids.begin(), tail.ids.end());
    joined.labels.insert(joined.labels.end(), tail.labels.begin(), tail.labels.end());
    joined.pixels.insert(joined.pixels.end(), tail.pixels.begin(), tail.pixels.end());
    EXPECT_TRUE(joined == all) << "stopped after " << stop_after << " batches, state " << state.dump();
  }
}

TEST(Loader, SeekAndStateChecks) {
  LoaderConfig cfg = small_config();
  DataLoader dl(corpus().samples, mistral_format(), cfg);
  EXPECT_THROW(dl.seek(0, dl.epoch_size() + 1), iris::Error);
  EXPECT_THROW(dl.seek(-1, 0), iris::Error);
  dl.seek(3, dl.epoch_size());
  EXPECT_FALSE(dl.next_batch().has_value());  // the end of epoch 3
  EXPECT_EQ(dl.epoch(), 4);
  LoaderConfig other = cfg;
  other.seed = 99;
  DataLoader dl2(corpus().samples, mistral_format(), other);
  EXPECT_THROW(dl2.restore(dl.state()), iris::Error);  // another order: refused
  EXPECT_THROW(dl2.restore(nlohmann::json{{"epoch", 1}}), iris::Error);
  std::vector<Sample> fewer(corpus().samples.begin(), corpus().samples.end() - 1);
  DataLoader dl3(fewer, mistral_format(), cfg);
  EXPECT_THROW(dl3.restore(dl.state()), iris::Error);
}

TEST(Loader, GroupByLength) {
  LoaderConfig cfg = small_config();
  cfg.group_by_length = true;
  cfg.batch_size = 2;
  cfg.group_chunks = 3;
  cfg.workers = 2;
  DataLoader dl(corpus().samples, mistral_format(), cfg);
  ASSERT_EQ(dl.lengths().size(), corpus().samples.size());
  EXPECT_EQ(dl.epoch_size(), int64_t(corpus().samples.size()));  // image failures are only found on loading
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> order = dl.epoch_order(epoch);
    for (size_t b = 0; b < order.size(); b += 6)
      for (size_t i = b + 1; i < std::min(order.size(), b + 6); ++i)
        EXPECT_GE(dl.lengths()[size_t(order[i - 1])], dl.lengths()[size_t(order[i])]);
  }
  EXPECT_NE(dl.epoch_order(0), dl.epoch_order(1));
  // Lengths are the example lengths.
  Trace t = run(dl, -1, 1);
  EXPECT_EQ(int(flat(t, 0).size()), corpus().good);
  size_t k = 0;
  for (const auto& b : t.batches)
    for (int64_t idx : b)
      if (idx >= 0) {
        EXPECT_EQ(int64_t(t.ids[k++].size()), dl.lengths()[size_t(idx)]);
      }
}

TEST(Loader, AugmentationDeterministicPerEpochAndOffByDefault) {
  LoaderConfig cfg = small_config();
  cfg.shuffle = false;
  cfg.augment = true;
  DataLoader aug(corpus().samples, mistral_format(), cfg);
  cfg.augment = false;
  DataLoader plain(corpus().samples, mistral_format(), cfg);
  Trace a = run(aug, -1, 2), p = run(plain, -1, 2);
  ASSERT_EQ(a.pixels.size(), p.pixels.size());
  const size_t per_epoch = a.pixels.size() / 2;
  int differs_from_plain = 0, differs_between_epochs = 0;
  for (size_t i = 0; i < per_epoch; ++i) {
    differs_from_plain += a.pixels[i] != p.pixels[i];
    differs_between_epochs += a.pixels[i] != a.pixels[i + per_epoch];
    EXPECT_EQ(p.pixels[i], p.pixels[i + per_epoch]);  // no augmentation: the same pixels every epoch
    EXPECT_EQ(a.ids[i], p.ids[i]);
  }
  EXPECT_GT(differs_from_plain, int(per_epoch) / 2);
  EXPECT_GT(differs_between_epochs, int(per_epoch) / 2);
  // The same (seed, epoch, index) gives the same pixels in a separate load.
  const Example again = aug.load_example(a.batches[0][0], 0);
  EXPECT_EQ(again.pixel_values, a.pixels[0]);
}

TEST(Loader, TruncateOrSkipLongExamples) {
  LoaderConfig cfg = small_config();
  cfg.max_tokens = 30;
  DataLoader trunc(corpus().samples, mistral_format(), cfg);
  Trace t = run(trunc, -1, 2);
  ConversationEncoder enc(mistral_format());
  int64_t long_ones = 0, kept = 0;
  for (const Sample& s : corpus().samples) {
    if (s.id.rfind("bad_", 0) == 0) continue;
    Encoded e = enc.encode(s);
    if (e.ids.size() <= 30) continue;
    ++long_ones;
    Encoded cut = e;
    truncate_encoded(cut, 30, 32000, 4);
    kept += std::any_of(cut.labels.begin(), cut.labels.end(), [](int32_t l) { return l != kIgnoreIndex; });
  }
  ASSERT_GT(long_ones, 3);
  for (const auto& ids : t.ids) EXPECT_LE(ids.size(), 30u);
  LoadReport r = trunc.report();
  EXPECT_EQ(r.truncated, kept);  // once per sample over two epochs
  EXPECT_EQ(r.skipped_for(skip_reason::kTooLong), long_ones - kept);  // nothing supervised left
  EXPECT_EQ(int64_t(flat(t, 0).size()), corpus().good - (long_ones - kept));

  cfg.over_length = OverLength::Skip;
  DataLoader skip(corpus().samples, mistral_format(), cfg);
  Trace s = run(skip, -1, 1);
  EXPECT_EQ(int64_t(flat(s, 0).size()), corpus().good - long_ones);
  EXPECT_EQ(skip.report().skipped_for(skip_reason::kTooLong), long_ones);
  EXPECT_EQ(skip.report().truncated, 0);
}

TEST(Loader, DropLastAndPartialBatches) {
  LoaderConfig cfg = small_config();
  cfg.batch_size = 5;
  DataLoader keep(corpus().samples, mistral_format(), cfg);
  Trace k = run(keep, -1, 1);
  ASSERT_EQ(k.batches.size(), 6u);  // 24 good: 5 5 5 5 4, then the epoch end
  EXPECT_EQ(k.batches[4].size(), 4u);
  cfg.drop_last = true;
  DataLoader drop(corpus().samples, mistral_format(), cfg);
  Trace d = run(drop, -1, 1);
  ASSERT_EQ(d.batches.size(), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(d.batches[i].size(), 5u);
}

TEST(Loader, StrictModeNamesTheSample) {
  LoaderConfig cfg = small_config();
  cfg.strict = true;
  cfg.shuffle = false;
  cfg.workers = 2;
  DataLoader dl(corpus().samples, mistral_format(), cfg);
  try {
    while (dl.next_batch()) {
    }
    FAIL() << "expected iris::Error";
  } catch (const DataError&) {
    FAIL() << "strict mode must throw a plain iris::Error";
  } catch (const iris::Error& e) {
    EXPECT_NE(std::string(e.what()).find("(id \"bad_"), std::string::npos) << e.what();
  }
  // The failing entry is not consumed: the same error again.
  EXPECT_THROW(dl.next_batch(), iris::Error);
}

TEST(Loader, BadConfigIsRefused) {
  LoaderConfig cfg = small_config();
  cfg.batch_size = 0;
  EXPECT_THROW(DataLoader(corpus().samples, mistral_format(), cfg), iris::Error);
  cfg = small_config();
  cfg.workers = -1;
  EXPECT_THROW(DataLoader(corpus().samples, mistral_format(), cfg), iris::Error);
  PromptFormat no_tok;
  EXPECT_THROW(DataLoader(corpus().samples, no_tok, small_config()), iris::Error);
}

TEST(Loader, EmptyDataset) {
  DataLoader dl({}, mistral_format(), small_config());
  EXPECT_FALSE(dl.next_batch().has_value());
  EXPECT_FALSE(dl.next_batch().has_value());
  EXPECT_EQ(dl.epoch(), 2);
}

}  // namespace
}  // namespace iris::data
