// DataLoader: epoch orders, length grouping, worker threads with an ordered bounded prefetch window, resume.
#include "data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "data/rng.h"

namespace iris::data {

namespace fs = std::filesystem;

namespace {

constexpr uint8_t kBad = 1;               // the sample failed (counted once)
constexpr uint8_t kTruncatedCounted = 2;  // its truncation was counted
constexpr uint8_t kAdjustedCounted = 4;   // its boundary adjustments were counted

uint64_t fnv1a(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return mix64(h ^ s.size());
}

}  // namespace

// Per-sample flags and the report, shared by the workers.
struct DataLoader::Shared {
  std::mutex m;
  LoadReport report;
  std::vector<uint8_t> flags;
};

// One epoch's examples from a start position. Workers claim order entries in sequence, at most `window` ahead
// of the consumer, and leave the results in `ready`; the consumer takes them back in order.
struct DataLoader::Stream {
  struct Slot {
    std::optional<Example> example;
    std::exception_ptr error;
  };
  int64_t epoch = 0;
  std::vector<int64_t> order;
  int64_t window = 1;
  std::mutex m;
  std::condition_variable cv_work, cv_ready;
  int64_t next_claim = 0, next_take = 0;
  std::map<int64_t, Slot> ready;
  bool stop = false;
  std::vector<std::thread> threads;
};

DataLoader::DataLoader(std::vector<Sample> samples, const PromptFormat& fmt, LoaderConfig cfg)
    : samples_(std::move(samples)), encoder_(fmt), cfg_(std::move(cfg)), shared_(std::make_unique<Shared>()) {
  IRIS_CHECK(cfg_.batch_size >= 1, "data: batch_size must be >= 1, got ", cfg_.batch_size);
  IRIS_CHECK(cfg_.workers >= 0 && cfg_.workers <= 256, "data: workers must be in [0, 256], got ", cfg_.workers);
  IRIS_CHECK(cfg_.prefetch >= 1, "data: prefetch must be >= 1, got ", cfg_.prefetch);
  IRIS_CHECK(cfg_.max_tokens >= 1, "data: max_tokens must be >= 1, got ", cfg_.max_tokens);
  IRIS_CHECK(cfg_.group_chunks >= 1, "data: group_chunks must be >= 1, got ", cfg_.group_chunks);
  IRIS_CHECK(cfg_.max_pixels >= 1, "data: max_pixels must be >= 1, got ", cfg_.max_pixels);
  shared_->flags.assign(samples_.size(), 0);
  shared_->report.loaded = int64_t(samples_.size());
  if (cfg_.group_by_length) compute_lengths();
}

DataLoader::~DataLoader() { stop_stream(); }

LoadReport DataLoader::report() const {
  std::lock_guard<std::mutex> lock(shared_->m);
  return shared_->report;
}

int64_t DataLoader::epoch_size() const {
  if (!cfg_.group_by_length) return int64_t(samples_.size());
  return int64_t(std::count_if(lengths_.begin(), lengths_.end(), [](int64_t l) { return l > 0; }));
}

// ---- loading one sample ----

namespace {

// Encodes a sample and applies max_tokens. Throws DataError.
// image_tokens: each image's token count (a per-image processor), else empty.
Encoded encode_limited(const ConversationEncoder& enc, const Sample& s, const LoaderConfig& cfg, bool* truncated,
                       const std::vector<int64_t>& image_tokens = {}) {
  Encoded e = enc.encode(s, image_tokens);
  *truncated = false;
  if (int64_t(e.ids.size()) <= cfg.max_tokens) return e;
  if (cfg.over_length == OverLength::Skip)
    throw DataError(skip_reason::kTooLong, str_cat(e.ids.size(), " tokens, over max_tokens ", cfg.max_tokens));
  const size_t before = e.ids.size();
  if (image_tokens.empty())
    truncate_encoded(e, cfg.max_tokens, enc.format().image_token, enc.format().image_tokens_per_image);
  else
    truncate_encoded(e, cfg.max_tokens, enc.format().image_token, image_tokens);
  if (std::all_of(e.labels.begin(), e.labels.end(), [](int32_t l) { return l == kIgnoreIndex; }))
    throw DataError(skip_reason::kTooLong, str_cat(before, " tokens, and no answer token is within max_tokens ",
                                                   cfg.max_tokens));
  *truncated = true;
  return e;
}

std::string describe_sample(int64_t index, const Sample& s) { return str_cat("sample ", index, " (id \"", s.id, "\")"); }

}  // namespace

Example DataLoader::load_example(int64_t index, int64_t epoch) const {
  bool truncated = false;
  int adjusted = 0;
  return build(index, epoch, &truncated, &adjusted);
}

Example DataLoader::build(int64_t index, int64_t epoch, bool* truncated, int* adjusted) const {
  IRIS_CHECK(index >= 0 && size_t(index) < samples_.size(), "data: sample index ", index, " out of range [0, ",
             samples_.size(), ")");
  const Sample& s = samples_[size_t(index)];
  vision::DecodeOptions dopt;
  dopt.max_pixels = cfg_.max_pixels;
  auto load = [&](size_t j) {
    const std::string path = resolve_image_path(cfg_.image_dir, s.image_paths.at(j));
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
      throw DataError(skip_reason::kMissingImage, str_cat("image ", path, ": not found"));
    vision::Image img;
    try {
      img = vision::load_image(path, dopt);
    } catch (const iris::Error& err) {
      throw DataError(skip_reason::kBadImage, str_cat("image ", path, ": ", err.what()));
    }
    if (cfg_.augment) {
      Rng rng(hash_key({cfg_.seed, uint64_t(epoch), uint64_t(index), uint64_t(j), 0x6175676dULL /* "augm" */}));
      img = augment_image(vision::to_rgb(img), cfg_.augment_config, rng);
    }
    return std::make_pair(img, path);
  };
  Example ex;
  ex.id = s.id;
  ex.index = index;
  if (cfg_.process) {  // images first: their sizes decide their token counts
    std::vector<ProcessedImage> processed;
    std::vector<int64_t> counts;
    for (size_t j = 0; j < s.image_paths.size(); ++j) {
      auto [img, path] = load(j);
      try {
        processed.push_back(cfg_.process(img));
      } catch (const iris::Error& err) {  // too small, too elongated for the processor
        throw DataError(skip_reason::kBadImage, str_cat("image ", path, ": ", err.what()));
      }
      counts.push_back(processed.back().tokens);
    }
    Encoded e = encode_limited(encoder_, s, cfg_, truncated, counts);
    *adjusted = e.boundary_adjusted;
    ex.ids = std::move(e.ids);
    ex.labels = std::move(e.labels);
    for (int j = 0; j < e.n_images; ++j) {
      ProcessedImage& p = processed[size_t(j)];
      ex.pixel_values.push_back(std::move(p.values));
      ex.image_sizes.emplace_back(int(p.rows), int(p.cols));
      ex.image_grids.push_back(p.grid);
    }
    return ex;
  }
  Encoded e = encode_limited(encoder_, s, cfg_, truncated);
  *adjusted = e.boundary_adjusted;
  ex.ids = std::move(e.ids);
  ex.labels = std::move(e.labels);
  for (int j = 0; j < e.n_images; ++j) {
    vision::Image img = load(size_t(j)).first;
    auto [w, h] = cfg_.preprocess.output_size(img.width, img.height);
    ex.pixel_values.push_back(vision::preprocess(img, cfg_.preprocess));
    ex.image_sizes.emplace_back(h, w);
  }
  return ex;
}

void DataLoader::record_bad(int64_t index, const DataError& e) {
  const std::string msg = str_cat(describe_sample(index, samples_[size_t(index)]), ": ", e.what());
  if (cfg_.strict) throw iris::Error(msg);
  std::lock_guard<std::mutex> lock(shared_->m);
  uint8_t& f = shared_->flags[size_t(index)];
  if (f & kBad) return;
  f |= kBad;
  report_skip(&shared_->report, e.reason(), msg, !cfg_.quiet);
}

void DataLoader::record_stats(int64_t index, bool truncated, int adjusted) {
  if (!truncated && adjusted == 0) return;
  std::lock_guard<std::mutex> lock(shared_->m);
  uint8_t& f = shared_->flags[size_t(index)];
  if (truncated && !(f & kTruncatedCounted)) {
    f |= kTruncatedCounted;
    shared_->report.truncated++;
  }
  if (adjusted > 0 && !(f & kAdjustedCounted)) {
    f |= kAdjustedCounted;
    shared_->report.boundary_adjusted += adjusted;
  }
}

std::optional<Example> DataLoader::load_entry(int64_t index, int64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(shared_->m);
    if (shared_->flags[size_t(index)] & kBad) return std::nullopt;
  }
  try {
    bool truncated = false;
    int adjusted = 0;
    Example ex = build(index, epoch, &truncated, &adjusted);
    record_stats(index, truncated, adjusted);
    return ex;
  } catch (const DataError& e) {
    record_bad(index, e);
    return std::nullopt;
  }
}

// ---- lengths and orders ----

void DataLoader::compute_lengths() {
  const int64_t n = int64_t(samples_.size());
  lengths_.assign(size_t(n), 0);
  std::exception_ptr first_error;
  std::mutex err_m;
  auto work = [&](int64_t begin, int64_t step) {
    for (int64_t i = begin; i < n; i += step) {
      try {
        bool truncated = false;
        const Sample& smp = samples_[size_t(i)];
        // A per-image processor: one token per image stands in for the count (a sorting key only).
        const std::vector<int64_t> ones(cfg_.process ? smp.image_paths.size() : 0, 1);
        Encoded e = encode_limited(encoder_, smp, cfg_, &truncated, ones);
        lengths_[size_t(i)] = int64_t(e.ids.size());
        if (!cfg_.process) record_stats(i, truncated, e.boundary_adjusted);  // else counted when loaded
      } catch (const DataError& e) {
        try {
          record_bad(i, e);
        } catch (...) {
          std::lock_guard<std::mutex> lock(err_m);
          if (!first_error) first_error = std::current_exception();
          return;
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_m);
        if (!first_error) first_error = std::current_exception();
        return;
      }
    }
  };
  const int threads = std::max(1, std::min<int>(cfg_.workers, int(n)));
  if (threads <= 1) {
    work(0, 1);
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work, t, threads);
    for (std::thread& th : pool) th.join();
  }
  if (first_error) std::rethrow_exception(first_error);
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order;
  order.reserve(samples_.size());
  for (int64_t i = 0; i < int64_t(samples_.size()); ++i)
    if (!cfg_.group_by_length || lengths_[size_t(i)] > 0) order.push_back(i);
  if (cfg_.shuffle) {
    Rng rng(hash_key({cfg_.seed, uint64_t(epoch), 0x6f726465ULL /* "orde" */}));
    shuffle(order, rng);
  }
  if (cfg_.group_by_length) {
    const size_t chunk = size_t(cfg_.batch_size) * size_t(cfg_.group_chunks);
    for (size_t b = 0; b < order.size(); b += chunk) {
      auto first = order.begin() + long(b), last = order.begin() + long(std::min(order.size(), b + chunk));
      std::stable_sort(first, last, [&](int64_t x, int64_t y) { return lengths_[size_t(x)] > lengths_[size_t(y)]; });
    }
  }
  return order;
}

uint64_t DataLoader::fingerprint() const {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const Sample& s : samples_) {
    h = fnv1a(h, s.id);
    for (const std::string& p : s.image_paths) h = fnv1a(h, p);
    for (const Turn& t : s.turns) h = fnv1a(h, t.role + '\n' + t.text);
  }
  return hash_key({h, cfg_.seed, uint64_t(cfg_.shuffle), uint64_t(cfg_.group_by_length), uint64_t(cfg_.group_chunks),
                   uint64_t(cfg_.batch_size), uint64_t(cfg_.max_tokens), uint64_t(cfg_.over_length)});
}

nlohmann::json DataLoader::state() const {
  return {{"epoch", epoch_}, {"position", position_}, {"fingerprint", std::to_string(fingerprint())}};
}

void DataLoader::restore(const nlohmann::json& st) {
  IRIS_CHECK(st.is_object() && st.contains("epoch") && st["epoch"].is_number_integer() && st.contains("position") &&
                 st["position"].is_number_integer() && st.contains("fingerprint") && st["fingerprint"].is_string(),
             "data: a loader state needs integer \"epoch\" and \"position\" and a \"fingerprint\" string, got ",
             st.dump());
  const std::string fp = st["fingerprint"].get<std::string>();
  IRIS_CHECK(fp == std::to_string(fingerprint()), "data: the saved loader state is for other data or settings ",
             "(fingerprint ", fp, ", this loader's ", fingerprint(), "): resuming would not continue the same order");
  seek(st["epoch"].get<int64_t>(), st["position"].get<int64_t>());
}

void DataLoader::seek(int64_t epoch, int64_t position) {
  IRIS_CHECK(epoch >= 0, "data: epoch must be >= 0, got ", epoch);
  IRIS_CHECK(position >= 0 && position <= epoch_size(), "data: position ", position, " is outside the epoch [0, ",
             epoch_size(), "]");
  stop_stream();
  epoch_ = epoch;
  position_ = position;
}

// ---- the stream ----

void DataLoader::start_stream() {
  stop_stream();
  stream_ = std::make_unique<Stream>();
  Stream& st = *stream_;
  st.epoch = epoch_;
  st.order = epoch_order(epoch_);
  st.next_claim = st.next_take = position_;
  st.window = std::max<int64_t>(cfg_.prefetch, cfg_.workers);
  for (int t = 0; t < cfg_.workers; ++t) {
    st.threads.emplace_back([this, &st] {
      for (;;) {
        int64_t k;
        {
          std::unique_lock<std::mutex> lock(st.m);
          st.cv_work.wait(lock, [&] {
            return st.stop || st.next_claim >= int64_t(st.order.size()) || st.next_claim < st.next_take + st.window;
          });
          if (st.stop || st.next_claim >= int64_t(st.order.size())) return;
          k = st.next_claim++;
        }
        Stream::Slot slot;
        try {
          slot.example = load_entry(st.order[size_t(k)], st.epoch);
        } catch (...) {
          slot.error = std::current_exception();
        }
        std::lock_guard<std::mutex> lock(st.m);
        st.ready.emplace(k, std::move(slot));
        st.cv_ready.notify_all();
      }
    });
  }
}

void DataLoader::stop_stream() {
  if (!stream_) return;
  {
    std::lock_guard<std::mutex> lock(stream_->m);
    stream_->stop = true;
  }
  stream_->cv_work.notify_all();
  for (std::thread& t : stream_->threads) t.join();
  stream_.reset();
}

std::optional<std::vector<Example>> DataLoader::next_batch() {
  if (!stream_) start_stream();
  Stream& st = *stream_;
  const int64_t end = int64_t(st.order.size());
  std::vector<Example> batch;
  while (int64_t(batch.size()) < cfg_.batch_size && position_ < end) {
    Stream::Slot slot;
    if (cfg_.workers == 0) {
      try {
        slot.example = load_entry(st.order[size_t(position_)], st.epoch);
      } catch (...) {
        slot.error = std::current_exception();
      }
    } else {
      std::unique_lock<std::mutex> lock(st.m);
      st.cv_ready.wait(lock, [&] { return st.ready.count(position_) > 0; });
      auto it = st.ready.find(position_);
      slot = std::move(it->second);
      st.ready.erase(it);
      st.next_take = position_ + 1;
      st.cv_work.notify_all();
    }
    if (slot.error) {  // strict mode (or an unexpected failure): a later call retries from this entry
      stop_stream();
      std::rethrow_exception(slot.error);
    }
    ++position_;
    if (slot.example) batch.push_back(std::move(*slot.example));
  }
  if (batch.empty() || (cfg_.drop_last && int64_t(batch.size()) < cfg_.batch_size)) {
    stop_stream();  // the end of the epoch
    ++epoch_;
    position_ = 0;
    return std::nullopt;
  }
  return batch;
}

}  // namespace iris::data
