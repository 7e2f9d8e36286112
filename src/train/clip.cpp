// Contrastive pretraining of the vision tower: the head's math, the caption data grouped by image, the two
// towers, and the training loop (optimizer, schedule, clipping, checkpoints, resume, metrics) of `iris train
// --objective clip`. See clip.h for the model and the data order.
#include "train/clip.h"

#include "models/vit_clip.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <numbers>
#include <optional>
#include <thread>

#include "data/dataset.h"
#include "data/rng.h"
#include "io/file.h"
#include "models/vlm.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "train/config_json.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/trainable.h"
#include "train/trainer.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace iris::train {

namespace fs = std::filesystem;

#define IRIS_CLIP_FIELDS(X)                                                                                       \
  X(model) X(captions) X(images) X(out) X(text_layers) X(text_hidden) X(text_heads) X(embed_dim)                \
  X(max_text_tokens) X(optimizer) X(lr) X(momentum) X(weight_decay) X(beta1) X(beta2) X(eps) X(max_grad_norm)   \
  X(decay_all) X(schedule) X(warmup) X(epochs) X(batch_size) X(max_steps) X(save_every) X(keep_last) X(seed)     \
  X(checkpointing) X(dtype) X(workers) X(objective) X(regions) X(region_weight)

IRIS_CONFIG_JSON(ClipConfig, IRIS_CLIP_FIELDS)

namespace {

constexpr const char* kConfigFile = "clip_config.json";

// ---- the head -------------------------------------------------------------------------------------------------

// y (B, E) = x (B, D) w^T, w (E, D) float.
void project(const double* x, const float* w, int64_t B, int64_t D, int64_t E, double* y) {
  for (int64_t i = 0; i < B; ++i)
    for (int64_t e = 0; e < E; ++e) {
      double acc = 0;
      const float* we = w + e * D;
      for (int64_t k = 0; k < D; ++k) acc += x[i * D + k] * double(we[k]);
      y[i * E + e] = acc;
    }
}

// Rows of u (B, E) divided by their norms (clamped below at 1e-12, as torch.nn.functional.normalize).
constexpr double kNormEps = 1e-12;
void normalise(const double* u, int64_t B, int64_t E, double* a, double* norms) {
  for (int64_t i = 0; i < B; ++i) {
    double ss = 0;
    for (int64_t e = 0; e < E; ++e) ss += u[i * E + e] * u[i * E + e];
    norms[i] = std::max(std::sqrt(ss), kNormEps);
    for (int64_t e = 0; e < E; ++e) a[i * E + e] = u[i * E + e] / norms[i];
  }
}

// Backward of normalise: du from da, in place (da becomes du).
void normalise_backward(const double* a, const double* norms, int64_t B, int64_t E, double* da) {
  for (int64_t i = 0; i < B; ++i) {
    double* d = da + i * E;
    const double* ai = a + i * E;
    double dot = 0;
    if (norms[i] > kNormEps)
      for (int64_t e = 0; e < E; ++e) dot += ai[e] * d[e];
    for (int64_t e = 0; e < E; ++e) d[e] = (d[e] - ai[e] * dot) / norms[i];
  }
}

// Backward of project: dw (E, D) += du^T x (float), dx (B, D) = du w (when dx is not null).
void project_backward(const double* x, const float* w, const double* du, int64_t B, int64_t D, int64_t E, float* dw,
                      double* dx) {
  if (dw)
    for (int64_t e = 0; e < E; ++e)
      for (int64_t k = 0; k < D; ++k) {
        double acc = 0;
        for (int64_t i = 0; i < B; ++i) acc += du[i * E + e] * x[i * D + k];
        dw[e * D + k] += float(acc);
      }
  if (dx)
    for (int64_t i = 0; i < B; ++i)
      for (int64_t k = 0; k < D; ++k) {
        double acc = 0;
        for (int64_t e = 0; e < E; ++e) acc += du[i * E + e] * double(w[e * D + k]);
        dx[i * D + k] = acc;
      }
}

// The contrastive loss on pooled features: image side p (N, Dv), text side t (M, Dt), logits L (N, M) = exp(s)
// A B^T of the projected, normalised rows. Rows: CE of row n against column targets[n]. symmetric (N == M,
// targets the identity) adds CE over the columns, and the loss is their mean: (rows + columns) / (2N); else rows / N.
// With grads, dp (N, Dv) and dt (M, Dt) get the input gradients (when non-null), the weight gradients of g are
// ADDED to, and *g.logit_scale is written.
ClipHeadResult contrastive(const std::vector<double>& p, int64_t N, int64_t Dv, const std::vector<double>& t,
                           int64_t M, int64_t Dt, int64_t E, const float* w_image, const float* w_text,
                           float logit_scale, const std::vector<int64_t>& targets, bool symmetric,
                           const ClipHeadGrads& g, std::vector<double>* dp, std::vector<double>* dt) {
  std::vector<double> u(size_t(N * E)), v(size_t(M * E)), a(size_t(N * E)), b(size_t(M * E)),
      na(static_cast<size_t>(N)), nb(static_cast<size_t>(M));
  project(p.data(), w_image, N, Dv, E, u.data());
  project(t.data(), w_text, M, Dt, E, v.data());
  normalise(u.data(), N, E, a.data(), na.data());
  normalise(v.data(), M, E, b.data(), nb.data());
  const double scale = std::exp(double(logit_scale));
  std::vector<double> L(size_t(N * M));  // image-side row n against text j
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < M; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += a[size_t(i * E + e)] * b[size_t(j * E + e)];
      L[size_t(i * M + j)] = scale * dot;
    }
  // One softmax cross-entropy per line of L: line k's n entries sit at k * outer + c * inner (c = 0..n-1), its
  // target at c = target(k). Rows: N lines of M, (outer, inner) = (M, 1); columns: M lines of N, (1, M).
  ClipHeadResult res;
  auto line_softmax = [&](int64_t lines, int64_t n, int64_t outer, int64_t inner, auto target, std::vector<double>& pr,
                          int64_t& correct) {
    double loss = 0;
    for (int64_t k = 0; k < lines; ++k) {
      auto at = [&](int64_t c) { return size_t(k * outer + c * inner); };
      double mx = L[at(0)];
      int64_t arg = 0;
      for (int64_t c = 1; c < n; ++c)
        if (L[at(c)] > mx) mx = L[at(c)], arg = c;
      double sum = 0;
      for (int64_t c = 0; c < n; ++c) sum += (pr[at(c)] = std::exp(L[at(c)] - mx));
      for (int64_t c = 0; c < n; ++c) pr[at(c)] /= sum;
      loss += mx + std::log(sum) - L[at(target(k))];
      correct += arg == target(k);
    }
    return loss;
  };
  std::vector<double> prow(size_t(N * M)), pcol(symmetric ? size_t(N * M) : 0);
  const double loss_rows = line_softmax(N, M, M, 1, [&](int64_t k) { return targets[size_t(k)]; }, prow, res.correct_i2t);
  const double loss_cols = symmetric ? line_softmax(M, N, 1, M, [](int64_t k) { return k; }, pcol, res.correct_t2i) : 0;
  const double denom = symmetric ? 2.0 * double(N) : double(N);
  res.loss = (loss_rows + loss_cols) / denom;
  if (!dp && !dt && !g.w_image && !g.w_text && !g.logit_scale) return res;

  // Backward. dL = (softmax_rows - onehot(targets) [+ softmax_cols - I]) / denom; L = exp(s) S with S = A B^T.
  std::vector<double> dS(size_t(N * M));
  double ds = 0;
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < M; ++j) {
      const size_t ij = size_t(i * M + j);
      double d = prow[ij] - (targets[size_t(i)] == j ? 1.0 : 0.0);
      if (symmetric) d += pcol[ij] - (i == j ? 1.0 : 0.0);
      const double dl = d / denom;
      ds += dl * L[ij];
      dS[ij] = dl * scale;
    }
  if (g.logit_scale) *g.logit_scale = float(ds);
  std::vector<double> da(size_t(N * E), 0.0), db(size_t(M * E), 0.0);  // dA = dS B, dB = dS^T A
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < M; ++j) {
      const double d = dS[size_t(i * M + j)];
      for (int64_t e = 0; e < E; ++e) {
        da[size_t(i * E + e)] += d * b[size_t(j * E + e)];
        db[size_t(j * E + e)] += d * a[size_t(i * E + e)];
      }
    }
  normalise_backward(a.data(), na.data(), N, E, da.data());
  normalise_backward(b.data(), nb.data(), M, E, db.data());
  if (dp) dp->assign(size_t(N * Dv), 0.0);
  if (dt) dt->assign(size_t(M * Dt), 0.0);
  project_backward(p.data(), w_image, da.data(), N, Dv, E, g.w_image, dp ? dp->data() : nullptr);
  project_backward(t.data(), w_text, db.data(), M, Dt, E, g.w_text, dt ? dt->data() : nullptr);
  return res;
}

void check_head_sizes(const char* what, int64_t B, int64_t R, int64_t Dv, int64_t Dt, int64_t E, float logit_scale) {
  IRIS_CHECK(B >= 1 && R >= 1 && Dv >= 1 && Dt >= 1 && E >= 1, what, ": sizes must be positive (B ", B, ", R ", R,
             ", Dv ", Dv, ", Dt ", Dt, ", E ", E, ")");
  IRIS_CHECK(std::isfinite(logit_scale), what, ": the logit scale is ", logit_scale);
}

}  // namespace

ClipHeadResult clip_head_forward_backward(const ClipHeadShape& sh, const float* image_rows, const float* text,
                                          const float* w_image, const float* w_text, float logit_scale,
                                          const ClipHeadGrads& g) {
  const int64_t B = sh.B, R = sh.R, Dv = sh.Dv, Dt = sh.Dt;
  check_head_sizes("contrastive head", B, R, Dv, Dt, sh.E, logit_scale);
  std::vector<double> p(size_t(B * Dv), 0.0), t(text, text + B * Dt);  // pooled: the mean over each image's rows
  for (int64_t i = 0; i < B; ++i)
    for (int64_t r = 0; r < R; ++r) {
      const float* row = image_rows + (i * R + r) * Dv;
      for (int64_t k = 0; k < Dv; ++k) p[size_t(i * Dv + k)] += double(row[k]);
    }
  for (double& x : p) x /= double(R);
  std::vector<int64_t> targets(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) targets[size_t(i)] = i;
  std::vector<double> dp, dt;
  const ClipHeadResult res = contrastive(p, B, Dv, t, B, Dt, sh.E, w_image, w_text, logit_scale, targets,
                                         /*symmetric=*/true, g, g.image_rows ? &dp : nullptr, g.text ? &dt : nullptr);
  if (g.image_rows)
    for (int64_t i = 0; i < B; ++i)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t k = 0; k < Dv; ++k) g.image_rows[(i * R + r) * Dv + k] = float(dp[size_t(i * Dv + k)] / double(R));
  if (g.text)
    for (int64_t i = 0; i < B * Dt; ++i) g.text[i] = float(dt[size_t(i)]);
  return res;
}

ClipHeadResult region_head_forward_backward(const ClipHeadShape& sh, const float* image_rows, const RegionBatch& rb,
                                            const float* text, const float* w_image, const float* w_text,
                                            float logit_scale, const ClipHeadGrads& g) {
  const int64_t B = sh.B, R = sh.R, Dv = sh.Dv, Dt = sh.Dt, K = rb.regions(), U = int64_t(rb.texts.size());
  check_head_sizes("region head", B, R, Dv, Dt, sh.E, logit_scale);
  IRIS_CHECK(K >= 1 && U >= 1 && rb.target.size() == size_t(K) && rb.weights.size() == size_t(K * R),
             "region head: ", K, " regions with ", rb.target.size(), " targets and ", rb.weights.size(),
             " pooling weights over ", R, " rows, ", U, " texts");
  std::vector<double> p(size_t(K * Dv), 0.0), t(text, text + U * Dt);  // pooled: each region's weighted rows
  for (int64_t k = 0; k < K; ++k) {
    const int64_t img = rb.image[size_t(k)];
    IRIS_CHECK(img >= 0 && img < B && rb.target[size_t(k)] >= 0 && rb.target[size_t(k)] < U, "region head: region ",
               k, " names image ", img, " of ", B, " and text ", rb.target[size_t(k)], " of ", U);
    for (int64_t r = 0; r < R; ++r) {
      const double w = rb.weights[size_t(k * R + r)];
      if (w == 0) continue;
      const float* row = image_rows + (img * R + r) * Dv;
      for (int64_t d = 0; d < Dv; ++d) p[size_t(k * Dv + d)] += w * double(row[d]);
    }
  }
  std::vector<double> dp, dt;
  const ClipHeadResult res = contrastive(p, K, Dv, t, U, Dt, sh.E, w_image, w_text, logit_scale, rb.target,
                                         /*symmetric=*/false, g, g.image_rows ? &dp : nullptr, g.text ? &dt : nullptr);
  if (g.image_rows) {
    std::fill_n(g.image_rows, B * R * Dv, 0.0f);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = 0; r < R; ++r) {
        const double w = rb.weights[size_t(k * R + r)];
        if (w == 0) continue;
        float* row = g.image_rows + (rb.image[size_t(k)] * R + r) * Dv;
        for (int64_t d = 0; d < Dv; ++d) row[d] += float(w * dp[size_t(k * Dv + d)]);
      }
  }
  if (g.text)
    for (int64_t i = 0; i < U * Dt; ++i) g.text[i] = float(dt[size_t(i)]);
  return res;
}

bool is_clip_run(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kConfigFile, ec);
}

namespace {

// ---- data -----------------------------------------------------------------------------------------------------

uint64_t hash_bytes(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t f = 0xcbf29ce484222325ULL;  // FNV-1a, folded through mix64
  for (size_t i = 0; i < n; ++i) f = (f ^ p[i]) * 0x100000001b3ULL;
  return data::mix64(h ^ data::mix64(f ^ n));
}

struct RegionRef {
  std::array<double, 4> box{};  // x0, y0, x1, y1 in the original image's pixels
  int64_t text = 0;             // index into ClipData::region_texts
};

struct ClipData {
  std::vector<std::string> images;                          // resolved paths, in first-appearance order
  std::vector<std::vector<std::vector<int32_t>>> captions;  // per image: the token ids of each caption
  std::vector<std::vector<RegionRef>> regions;              // per image: its regions (--regions)
  std::vector<std::vector<int32_t>> region_texts;           // the distinct region texts, token ids
  uint64_t fingerprint = 0;  // of the image names (as the JSONL gives them) and the caption ids, for resume
};

// --regions: JSONL lines {"image": path (as the captions give it), "regions": [{"bbox": [x0, y0, x1, y1], "text":
// "..."}, ...]}, the box in the image's pixels. Regions of images without captions are skipped with a count on
// stderr; a malformed line is an error naming the line.
template <class Tokenize>
void load_regions(const ClipConfig& cfg, const std::string& image_dir, const std::map<std::string, size_t>& index,
                  const Tokenize& tokenize, ClipData& d) {
  std::ifstream f(cfg.regions, std::ios::binary);
  IRIS_CHECK(f.good(), "train --objective clip: cannot read regions file '", cfg.regions, "'");
  std::map<std::vector<int32_t>, int64_t> text_index;
  std::string line;
  int64_t lineno = 0, skipped = 0, total = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = str_cat(cfg.regions, ":", lineno, ": ");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(str_cat(where, "not JSON (", e.what(), ")"));
    }
    IRIS_CHECK(j.is_object() && j.contains("image") && j["image"].is_string() && j.contains("regions") &&
                   j["regions"].is_array(),
               where, "expected {\"image\": path, \"regions\": [...]}");
    const std::string rel = j["image"].get<std::string>();
    const std::string path = data::resolve_image_path(image_dir, rel);
    auto it = index.find(path);
    for (const auto& r : j["regions"]) {
      IRIS_CHECK(r.is_object() && r.contains("bbox") && r["bbox"].is_array() && r["bbox"].size() == 4 &&
                     r.contains("text") && r["text"].is_string() && !r["text"].get<std::string>().empty(),
                 where, "a region must be {\"bbox\": [x0, y0, x1, y1], \"text\": non-empty string}");
      RegionRef ref;
      for (size_t k = 0; k < 4; ++k) {
        IRIS_CHECK(r["bbox"][k].is_number(), where, "bbox values must be numbers");
        ref.box[k] = r["bbox"][k].get<double>();
        IRIS_CHECK(std::isfinite(ref.box[k]), where, "bbox values must be finite");
      }
      IRIS_CHECK(ref.box[0] < ref.box[2] && ref.box[1] < ref.box[3], where, "bbox [", ref.box[0], ", ", ref.box[1],
                 ", ", ref.box[2], ", ", ref.box[3], "] is empty (need x0 < x1 and y0 < y1)");
      ++total;
      if (it == index.end()) {
        ++skipped;
        continue;
      }
      std::vector<int32_t> ids = tokenize(r["text"].get<std::string>());
      auto [ti, fresh] = text_index.emplace(ids, int64_t(d.region_texts.size()));
      if (fresh) d.region_texts.push_back(std::move(ids));
      ref.text = ti->second;
      d.regions[it->second].push_back(ref);
    }
  }
  IRIS_CHECK(total > skipped, "train --objective clip: no region of ", cfg.regions,
             " belongs to an image of the captions (", total, " regions)");
  if (skipped > 0)
    std::fprintf(stderr, "regions: %lld of %lld regions skipped (their images have no captions)\n", (long long)skipped,
                 (long long)total);
}

// The captions JSONL grouped by image (images that do not exist are skipped with a warning), each caption
// tokenized with BOS as the tokenizer adds it, cut to max_text_tokens - 1, plus EOS.
ClipData load_clip_data(const ClipConfig& cfg, const text::Tokenizer& tok, int32_t eos) {
  std::error_code ec;
  const std::string image_dir = cfg.images.empty() ? fs::path(cfg.captions).parent_path().string() : cfg.images;
  data::LoadReport report;
  std::vector<data::Sample> samples = data::load_caption_jsonl(cfg.captions, cfg.seed, &report, /*strict=*/false);
  ClipData d;
  auto tokenize = [&](const std::string& text) {
    std::vector<int32_t> ids = tok.encode(text, /*add_special_tokens=*/true);
    if (int64_t(ids.size()) >= cfg.max_text_tokens) ids.resize(size_t(cfg.max_text_tokens - 1));
    ids.push_back(eos);
    return ids;
  };
  std::vector<std::string> names;  // as given, so that a moved dataset folder still resumes
  std::map<std::string, size_t> index;
  std::map<std::string, bool> exists;
  for (const data::Sample& s : samples) {
    const std::string& rel = s.image_paths.at(0);
    const std::string path = data::resolve_image_path(image_dir, rel);
    auto ex = exists.find(path);
    if (ex == exists.end()) ex = exists.emplace(path, fs::is_regular_file(path, ec)).first;
    if (!ex->second) {
      data::report_skip(&report, data::skip_reason::kMissingImage, str_cat(s.id, ": image ", path, " not found"));
      continue;
    }
    auto [it, fresh] = index.emplace(path, d.images.size());
    if (fresh) {
      d.images.push_back(path);
      names.push_back(rel);
      d.captions.emplace_back();
    }
    d.captions[it->second].push_back(tokenize(s.turns.back().text));
  }
  d.regions.resize(d.images.size());
  if (!cfg.regions.empty()) load_regions(cfg, image_dir, index, tokenize, d);
  uint64_t h = 0x636c6970ULL;  // "clip"
  for (size_t i = 0; i < d.images.size(); ++i) {
    h = hash_bytes(h, names[i].data(), names[i].size());
    for (const auto& c : d.captions[i]) h = hash_bytes(h, c.data(), c.size() * sizeof(int32_t));
    for (const RegionRef& r : d.regions[i]) {
      h = hash_bytes(h, r.box.data(), sizeof r.box);
      const auto& ids = d.region_texts[size_t(r.text)];
      h = hash_bytes(h, ids.data(), ids.size() * sizeof(int32_t));
    }
  }
  d.fingerprint = h;
  if (report.total_skipped() > 0) std::fprintf(stderr, "captions: %s\n", report.summary().c_str());
  return d;
}

// The (image, caption) pairs of a step: the epoch's permutation of the images from (seed, epoch), the next
// batch_size of them, and each image's caption of that epoch from (seed, epoch, image).
class BatchPlan {
 public:
  BatchPlan(const ClipData& d, uint64_t seed, int64_t batch) : d_(d), seed_(seed), batch_(batch) {}
  int64_t steps_per_epoch() const { return int64_t(d_.images.size()) / batch_; }
  std::vector<std::pair<int64_t, int64_t>> pairs(int64_t step) {
    const int64_t epoch = step / steps_per_epoch(), first = (step % steps_per_epoch()) * batch_;
    if (epoch != order_epoch_) {
      order_.resize(d_.images.size());
      for (size_t i = 0; i < order_.size(); ++i) order_[i] = int64_t(i);
      data::Rng rng(data::hash_key({seed_, uint64_t(epoch), 0x6f726465ULL /* "orde" */}));
      data::shuffle(order_, rng);
      order_epoch_ = epoch;
    }
    std::vector<std::pair<int64_t, int64_t>> r;
    for (int64_t k = 0; k < batch_; ++k) {
      const int64_t img = order_[size_t(first + k)];
      data::Rng rng(data::hash_key({seed_, uint64_t(epoch), uint64_t(img), 0x63617074ULL /* "capt" */}));
      r.emplace_back(img, int64_t(rng.below(d_.captions[size_t(img)].size())));
    }
    return r;
  }

 private:
  const ClipData& d_;
  uint64_t seed_;
  int64_t batch_, order_epoch_ = -1;
  std::vector<int64_t> order_;
};

// Decodes and preprocesses images on `workers` threads (std::thread: file I/O and decoding, no OpenMP), each
// (3, size, size) as the LLaVA trainer preprocesses them, with the decoded image's size (for region boxes).
struct LoadedImages {
  std::vector<std::vector<float>> pixels;
  std::vector<std::pair<int, int>> sizes;  // (width, height) as decoded
};
LoadedImages load_images(const std::vector<std::string>& paths, const vision::PreprocessConfig& pp, int64_t size,
                         int workers) {
  LoadedImages out;
  out.pixels.resize(paths.size());
  out.sizes.resize(paths.size());
  std::vector<std::exception_ptr> errors(paths.size());
  auto work = [&](size_t w, size_t nw) {
    for (size_t i = w; i < paths.size(); i += nw) {
      try {
        vision::Image img = vision::load_image(paths[i]);
        out.sizes[i] = {img.width, img.height};
        out.pixels[i] = vision::preprocess(img, pp);
        IRIS_CHECK(int64_t(out.pixels[i].size()) == 3 * size * size, "preprocessing gives ", out.pixels[i].size(),
                   " values, the vision tower takes 3 x ", size, " x ", size);
      } catch (const Error& e) {
        errors[i] = std::make_exception_ptr(Error(str_cat("image ", paths[i], ": ", e.what())));
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t nw = size_t(std::clamp<int64_t>(workers, 1, int64_t(paths.size())));
  if (nw <= 1) {
    work(0, 1);
  } else {
    std::vector<std::thread> threads;
    for (size_t w = 0; w < nw; ++w) threads.emplace_back(work, w, nw);
    for (auto& t : threads) t.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

// The regions of a step's images: each box mapped through the preprocessing onto the patch grid; boxes the crop
// cut away entirely are left out.
RegionBatch make_region_batch(const ClipData& d, const std::vector<std::pair<int64_t, int64_t>>& pairs,
                              const std::vector<std::pair<int, int>>& sizes, const vision::PreprocessConfig& pp,
                              const ClipTowers& towers) {
  RegionBatch rb;
  std::map<int64_t, int64_t> texts;  // data's text index -> the batch's
  for (size_t i = 0; i < pairs.size(); ++i)
    for (const RegionRef& r : d.regions[size_t(pairs[i].first)]) {
      const auto box = pp.map_box(sizes[i].first, sizes[i].second, r.box);
      std::vector<float> w = region_row_weights(box, towers.grid(), towers.patch(), towers.rows());
      if (w.empty()) continue;
      auto [it, fresh] = texts.emplace(r.text, int64_t(rb.texts.size()));
      if (fresh) rb.texts.push_back(d.region_texts[size_t(r.text)]);
      rb.image.push_back(int64_t(i));
      rb.target.push_back(it->second);
      rb.weights.insert(rb.weights.end(), w.begin(), w.end());
    }
  return rb;
}

// Gaussian init from the data RNG (std::normal_distribution differs between standard libraries).
void fill_normal(Tensor& t, double std, uint64_t key) {
  data::Rng rng(key);
  float* v = t.data<float>();
  for (int64_t i = 0; i < t.numel(); i += 2) {
    const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)) * std, phi = 2.0 * std::numbers::pi * u2;
    v[i] = float(r * std::cos(phi));
    if (i + 1 < t.numel()) v[i + 1] = float(r * std::sin(phi));
  }
}

std::unique_ptr<Param> make_param(const std::string& name, const Shape& shape) {
  auto p = std::make_unique<Param>();
  p->name = name;
  p->value = Tensor::zeros(shape);
  p->grad = Tensor::zeros(shape);
  p->decay = default_weight_decay(name, shape);
  return p;
}

void check_config(const ClipConfig& c) {
  IRIS_CHECK(!c.model.empty(), "train --objective clip: -m/--model is required");
  IRIS_CHECK(!c.out.empty(), "train --objective clip: --out is required");
  IRIS_CHECK(c.batch_size >= 2, "train --objective clip: batch size ", c.batch_size,
             " is too small (the contrastive loss needs at least 2 pairs per batch)");
  IRIS_CHECK(c.epochs >= 1 && c.max_steps >= 0, "train --objective clip: epochs must be >= 1 and max steps >= 0");
  IRIS_CHECK(c.text_layers >= 1 && c.text_heads >= 1 && c.text_hidden >= 1 && c.text_hidden % c.text_heads == 0 &&
                 (c.text_hidden / c.text_heads) % 2 == 0,
             "train --objective clip: text encoder of ", c.text_layers, " layers, hidden ", c.text_hidden, ", ",
             c.text_heads, " heads (need layers >= 1 and hidden a multiple of 2 x heads)");
  IRIS_CHECK(c.embed_dim >= 1, "train --objective clip: embedding width ", c.embed_dim, " must be >= 1");
  IRIS_CHECK(c.max_text_tokens >= 2, "train --objective clip: max text tokens ", c.max_text_tokens, " must be >= 2");
  IRIS_CHECK(c.workers >= 0, "train --objective clip: workers must be >= 0");
  IRIS_CHECK(c.dtype == "f32" || c.dtype == "bf16", "train --objective clip: dtype '", c.dtype,
             "': expected f32 or bf16");
  IRIS_CHECK(!c.captions.empty(), "train --objective clip: --captions (image-caption JSONL) is required");
  IRIS_CHECK(std::isfinite(c.region_weight) && c.region_weight > 0, "train --objective clip: region weight ",
             c.region_weight, " must be > 0");
  std::error_code ec;
  IRIS_CHECK(fs::is_regular_file(c.captions, ec), "train --objective clip: captions file '", c.captions,
             "' does not exist");
}

}  // namespace

// ---- the model ------------------------------------------------------------------------------------------------

models::ModelConfig clip_text_encoder_config(const ClipConfig& cfg, int64_t vocab, std::optional<int32_t> bos,
                                             int32_t eos) {
  models::ModelConfig m;
  m.arch = models::Architecture::Llama;
  models::LlamaConfig& t = m.llava.text;
  t.vocab_size = int(vocab);
  t.hidden_size = cfg.text_hidden;
  t.num_hidden_layers = cfg.text_layers;
  t.num_attention_heads = t.num_key_value_heads = cfg.text_heads;
  t.head_dim = cfg.text_hidden / std::max(cfg.text_heads, 1);
  t.intermediate_size = (cfg.text_hidden * 8 / 3 + 7) / 8 * 8;  // ~2.7x, a multiple of 8 (tiny-llava's 344 for 128)
  t.max_position_embeddings = std::max(cfg.max_text_tokens, 2);
  t.rms_norm_eps = 1e-5f;
  t.tie_word_embeddings = true;  // the LM head is unused; tied, the folder is a plain LlamaForCausalLM
  t.bos_token_id = bos ? std::optional<int>(*bos) : std::nullopt;
  t.eos_token_ids = {eos};
  t.validate();
  return m;
}

ClipTowers::ClipTowers(models::Vlm& vlm, models::Vlm& text, const ClipConfig& cfg)
    : vlm_(vlm), text_model_(text), checkpointing_(cfg.checkpointing) {
  IRIS_CHECK(vlm.has_vision(), "contrastive training: the model has no vision tower to pretrain");
  IRIS_CHECK(!text.has_vision(), "contrastive training: the text encoder must be a text-only Llama");
  const cpu::MatmulPrecision precision = cfg.dtype == "bf16" ? cpu::MatmulPrecision::BF16 : cpu::MatmulPrecision::F32;
  TrainSpec vs;  // embeddings, pre_layrnorm and the layers up to the feature layer
  vs.train_vision = true;
  vs.train_projector = vs.train_llm = false;
  vs.checkpointing = cfg.checkpointing;
  vs.precision = precision;
  vision_ = std::make_unique<TrainableVlm>(vlm, vs);
  TrainSpec ts;  // the whole text encoder
  ts.train_vision = ts.train_projector = false;
  ts.train_llm = true;
  ts.checkpointing = cfg.checkpointing;
  ts.precision = precision;
  text_ = std::make_unique<TrainableVlm>(text, ts);

  const models::LlavaConfig& lc = vlm.config().llava;
  fl_ = lc.feature_layer_index();
  drop_cls_ = lc.vision_feature_select_strategy == "default";
  C_ = lc.vision.num_channels, HW_ = lc.vision.image_size, Dv_ = lc.vision.hidden_size;
  T_ = lc.vision.num_positions(), R_ = drop_cls_ ? T_ - 1 : T_;
  Dt_ = text.text().hidden_size(), E_ = cfg.embed_dim;
  patch_ = lc.vision.patch_size, grid_ = HW_ / patch_;
  IRIS_CHECK(E_ >= 1, "contrastive training: embedding width ", E_, " must be >= 1");

  w_image_ = make_param("clip.visual_projection.weight", {E_, Dv_});
  w_text_ = make_param("clip.text_projection.weight", {E_, Dt_});
  logit_scale_ = make_param("clip.logit_scale", {1});
  fill_normal(w_image_->value, 1.0 / std::sqrt(double(Dv_)), data::hash_key({cfg.seed, 0x76697350ULL /* "visP" */}));
  fill_normal(w_text_->value, 1.0 / std::sqrt(double(Dt_)), data::hash_key({cfg.seed, 0x74787450ULL /* "txtP" */}));
  logit_scale_->value.data<float>()[0] = std::log(1.0f / 0.07f);

  for (Param* p : vision_->params()) params_.emplace_back(p->name, p);
  for (Param* p : text_->params()) params_.emplace_back("text_encoder." + p->name, p);
  for (Param* p : {w_image_.get(), w_text_.get(), logit_scale_.get()}) params_.emplace_back(p->name, p);
}

void ClipTowers::zero_grad() {
  for (auto& [name, p] : params_) std::fill_n(p->grad.data<float>(), p->grad.numel(), 0.0f);
}

void ClipTowers::weights_updated() {
  vision_->weights_updated();
  text_->weights_updated();
}

void ClipTowers::clamp_logit_scale() {
  float& s = logit_scale_->value.data<float>()[0];
  s = std::clamp(s, 0.0f, std::log(100.0f));
}

float ClipTowers::logit_scale() const { return logit_scale_->value.data<float>()[0]; }

io::NamedTensors ClipTowers::heads() const {
  return {{"visual_projection.weight", w_image_->value},
          {"text_projection.weight", w_text_->value},
          {"logit_scale", logit_scale_->value}};
}

ClipHeadResult ClipTowers::forward_backward(const std::vector<std::vector<float>>& pixels,
                                            const std::vector<std::vector<int32_t>>& captions, bool backward,
                                            const RegionBatch* regions, double region_weight,
                                            ClipHeadResult* region_result) {
  const int64_t B = int64_t(pixels.size());
  IRIS_CHECK(B >= 1 && captions.size() == pixels.size(), "contrastive batch: ", pixels.size(), " images and ",
             captions.size(), " captions (expected as many of each, at least one)");
  const models::ClipVision& vision = vlm_.clip_vision();
  const models::Llama& text = text_model_.text();
  const int64_t Dv = Dv_, Dt = Dt_, R = R_, T = T_;
  for (int64_t i = 0; i < B; ++i) {
    IRIS_CHECK(int64_t(pixels[size_t(i)].size()) == C_ * HW_ * HW_, "contrastive batch: image ", i, " has ",
               pixels[size_t(i)].size(), " values, the vision tower takes ", C_, " x ", HW_, " x ", HW_);
    IRIS_CHECK(!captions[size_t(i)].empty(), "contrastive batch: caption ", i, " has no tokens");
  }
  const bool with_regions = regions && regions->regions() > 0;
  if (with_regions)
    for (const auto& ids : regions->texts) IRIS_CHECK(!ids.empty(), "contrastive batch: a region text has no tokens");

  // Forward, keeping every image's and text's activations: image rows (B, R, Dv), text features (n, Dt).
  std::vector<models::ClipVisionActs> vacts(static_cast<size_t>(B));
  std::vector<float> rows(size_t(B * R * Dv));
  for (int64_t i = 0; i < B; ++i) {
    vision.forward_train(pixels[size_t(i)].data(), C_, HW_, HW_, fl_, vacts[size_t(i)], checkpointing_);
    std::copy_n(vacts[size_t(i)].out.data() + (drop_cls_ ? Dv : 0), R * Dv, rows.data() + i * R * Dv);
  }
  auto encode = [&](const std::vector<std::vector<int32_t>>& texts, std::vector<models::LlamaActs>& acts) {
    acts.resize(texts.size());
    std::vector<float> feats(texts.size() * size_t(Dt));
    for (size_t j = 0; j < texts.size(); ++j) {
      const int64_t S = int64_t(texts[j].size());
      std::vector<float> x(size_t(S * Dt));
      text.embed(texts[j].data(), S, x.data());
      text.forward_train(x.data(), S, models::Positions::range(0, S), acts[j], checkpointing_);
      std::copy_n(acts[j].out.data() + (S - 1) * Dt, Dt, feats.data() + j * size_t(Dt));  // the last token's row
    }
    return feats;
  };
  auto encode_backward = [&](const std::vector<std::vector<int32_t>>& texts, std::vector<models::LlamaActs>& acts,
                             const std::vector<float>& dfeats) {
    for (size_t j = 0; j < texts.size(); ++j) {
      const int64_t S = int64_t(texts[j].size());
      std::vector<float> dout(size_t(S * Dt), 0.0f), dx(size_t(S * Dt));
      std::copy_n(dfeats.data() + j * size_t(Dt), Dt, dout.data() + (S - 1) * Dt);
      text.backward(acts[j], dout.data(), dx.data());
      text.embed_backward(texts[j].data(), S, dx.data());
      acts[j] = {};
    }
  };
  std::vector<models::LlamaActs> tacts, racts;
  const std::vector<float> feats = encode(captions, tacts);
  std::vector<float> rfeats;
  if (with_regions) rfeats = encode(regions->texts, racts);
  const ClipHeadShape shape{B, R, Dv, Dt, E_};
  const float* wi = w_image_->value.data<float>();
  const float* wt = w_text_->value.data<float>();
  if (!backward) {
    if (with_regions && region_result)
      *region_result = region_head_forward_backward(shape, rows.data(), *regions, rfeats.data(), wi, wt, logit_scale(), {});
    return clip_head_forward_backward(shape, rows.data(), feats.data(), wi, wt, logit_scale(), {});
  }

  // The heads, then both towers backward.
  std::vector<float> drows(rows.size()), dfeats(feats.size());
  ClipHeadGrads hg;
  hg.image_rows = drows.data();
  hg.text = dfeats.data();
  hg.w_image = w_image_->grad.data<float>();
  hg.w_text = w_text_->grad.data<float>();
  float ds = 0;
  hg.logit_scale = &ds;
  const ClipHeadResult hr = clip_head_forward_backward(shape, rows.data(), feats.data(), wi, wt, logit_scale(), hg);
  logit_scale_->grad.data<float>()[0] += ds;
  if (with_regions) {
    // The region loss enters scaled by region_weight: its gradients are computed unscaled into scratch buffers
    // and added with the weight.
    std::vector<float> drows_r(rows.size()), dfeats_r(rfeats.size()), dwi(size_t(E_ * Dv), 0.0f),
        dwt(size_t(E_ * Dt), 0.0f);
    ClipHeadGrads rg;
    rg.image_rows = drows_r.data();
    rg.text = dfeats_r.data();
    rg.w_image = dwi.data();
    rg.w_text = dwt.data();
    float dsr = 0;
    rg.logit_scale = &dsr;
    const ClipHeadResult rr = region_head_forward_backward(shape, rows.data(), *regions, rfeats.data(), wi, wt,
                                                           logit_scale(), rg);
    if (region_result) *region_result = rr;
    const float rw = float(region_weight);
    for (size_t i = 0; i < drows.size(); ++i) drows[i] += rw * drows_r[i];
    for (float& x : dfeats_r) x *= rw;
    float* gwi = w_image_->grad.data<float>();
    float* gwt = w_text_->grad.data<float>();
    for (size_t i = 0; i < dwi.size(); ++i) gwi[i] += rw * dwi[i];
    for (size_t i = 0; i < dwt.size(); ++i) gwt[i] += rw * dwt[i];
    logit_scale_->grad.data<float>()[0] += rw * dsr;
    encode_backward(regions->texts, racts, dfeats_r);
  }
  encode_backward(captions, tacts, dfeats);
  for (int64_t i = 0; i < B; ++i) {
    std::vector<float> dsel(size_t(T * Dv), 0.0f);  // the class token's row stays 0 when dropped
    std::copy_n(drows.data() + i * R * Dv, R * Dv, dsel.data() + (drop_cls_ ? Dv : 0));
    vision.backward(vacts[size_t(i)], dsel.data());
    vacts[size_t(i)] = {};
  }
  return hr;
}

std::vector<float> region_row_weights(const std::array<double, 4>& box, int64_t grid, int64_t patch, int64_t rows) {
  IRIS_CHECK(grid >= 1 && patch >= 1 && (rows == grid * grid || rows == grid * grid + 1), "region weights: ", rows,
             " rows for a ", grid, " x ", grid, " grid");
  const int64_t first = rows - grid * grid;  // 1 with the class token
  const double side = double(grid * patch);
  const double x0 = std::max(box[0], 0.0), y0 = std::max(box[1], 0.0), x1 = std::min(box[2], side),
               y1 = std::min(box[3], side);
  if (!(x0 < x1 && y0 < y1)) return {};
  std::vector<float> w(static_cast<size_t>(rows), 0.0f);
  int64_t n = 0;
  for (int64_t gy = 0; gy < grid; ++gy)
    for (int64_t gx = 0; gx < grid; ++gx) {
      const double cx = (double(gx) + 0.5) * double(patch), cy = (double(gy) + 0.5) * double(patch);
      if (cx >= x0 && cx < x1 && cy >= y0 && cy < y1) w[size_t(first + gy * grid + gx)] = 1.0f, ++n;
    }
  if (n == 0) {
    const int64_t gx = std::clamp<int64_t>(int64_t(0.5 * (x0 + x1) / double(patch)), 0, grid - 1),
                  gy = std::clamp<int64_t>(int64_t(0.5 * (y0 + y1) / double(patch)), 0, grid - 1);
    w[size_t(first + gy * grid + gx)] = 1.0f, n = 1;
  }
  for (float& x : w) x /= float(n);
  return w;
}

// ---- the training loop ----------------------------------------------------------------------------------------

double run_clip_training(const ClipConfig& cfg_in, bool resume) {
  ClipConfig cfg = cfg_in;
  IRIS_CHECK(!cfg.out.empty(), "train --objective clip: --out is required");
  const fs::path cfg_path = fs::path(cfg.out) / kConfigFile;
  std::optional<LoadedCheckpoint> ckpt;
  if (resume) {
    IRIS_CHECK(fs::exists(cfg_path), "cannot resume: ", cfg_path.string(), " does not exist");
    cfg = ClipConfig::from_json(io::read_json_file(cfg_path.string()));
    cfg.out = cfg_in.out;  // the folder may have moved
    if (auto latest = latest_checkpoint(cfg.out)) ckpt = load_checkpoint(*latest);
  } else {
    IRIS_CHECK(!fs::exists(cfg_path) && !fs::exists(fs::path(cfg.out) / "train_config.json"), "train: ", cfg.out,
               " already holds a run (continue it with --resume ", cfg.out, ")");
  }
  check_config(cfg);

  // The image side: the VLM with its whole vision tower in f32 (what does not train is saved unchanged).
  auto vlm = models::Vlm::load(cfg.model, {models::WeightPrecision::F32, /*full_vision_tower=*/true});
  IRIS_CHECK(vlm->has_vision(), "train --objective clip: ", cfg.model, " has no vision tower to pretrain");
  IRIS_CHECK(vlm->config().llava.vision.num_channels == 3, "train --objective clip: the vision tower takes ",
             vlm->config().llava.vision.num_channels, " channels (expected 3)");
  const int64_t HW = vlm->config().llava.vision.image_size;

  // Captions, tokenized once; EOS as the tokenizer names it, else the model config's.
  text::Tokenizer tok = text::Tokenizer::from_dir(cfg.model);
  std::vector<int32_t> eos_ids = tok.eos_ids();
  for (int e : vlm->config().text().eos_token_ids) eos_ids.push_back(e);
  IRIS_CHECK(!eos_ids.empty(), "train --objective clip: neither the tokenizer nor ", cfg.model,
             "/config.json names an end-of-sequence token");
  const int32_t eos = eos_ids.front();
  ClipData data = load_clip_data(cfg, tok, eos);
  const int64_t n_images = int64_t(data.images.size());
  IRIS_CHECK(n_images > 0, "train --objective clip: no usable image-caption pairs in ", cfg.captions);
  IRIS_CHECK(n_images >= cfg.batch_size, "train --objective clip: batch size ", cfg.batch_size, " exceeds the ",
             n_images, " images of ", cfg.captions);
  const vision::PreprocessConfig pp = preprocess_for(*vlm, cfg.model);

  // The text side, created from the seed; both towers and the heads.
  const models::ModelConfig tcfg = clip_text_encoder_config(cfg, vlm->text().vocab_size(), tok.bos_id(), eos);
  auto tenc = models::Vlm::create(tcfg, data::hash_key({cfg.seed, 0x74657874ULL /* "text" */}));
  ClipTowers towers(*vlm, *tenc, cfg);
  std::vector<ParamRef> refs;
  for (auto& [name, p] : towers.params())
    refs.push_back({name, p->value.data<float>(), p->grad.data<float>(), p->value.numel(), p->decay});

  auto opt = Optimizer::create(optimizer_config_of(cfg));
  BatchPlan plan(data, cfg.seed, cfg.batch_size);
  const bool with_regions = !cfg.regions.empty();
  const int64_t total = cfg.max_steps > 0 ? cfg.max_steps : plan.steps_per_epoch() * cfg.epochs;
  ScheduleConfig sc;
  sc.kind = cfg.schedule;
  sc.warmup_steps = cfg.warmup;
  sc.total_steps = total;
  validate_schedule(sc);

  fs::create_directories(cfg.out);
  if (!resume) io::write_file_atomic(cfg_path.string(), cfg.to_json().dump(2) + "\n");
  int64_t step = 0, tokens = 0;
  double elapsed_before = 0;
  if (ckpt) {  // restore weights, optimizer, position (the data order is a function of the step)
    IRIS_CHECK(ckpt->state.extra.value("fingerprint", uint64_t(0)) == data.fingerprint, "cannot resume ", cfg.out,
               ": the captions or their images differ from those the run started with");
    std::map<std::string, Param*> by_name(towers.params().begin(), towers.params().end());
    IRIS_CHECK(ckpt->weights.size() == by_name.size(), "checkpoint ", ckpt->dir, " holds ", ckpt->weights.size(),
               " tensors, this run trains ", by_name.size());
    for (const auto& [name, t] : ckpt->weights) {
      auto it = by_name.find(name);
      IRIS_CHECK(it != by_name.end() && it->second->value.numel() == t.numel(), "checkpoint ", ckpt->dir,
                 ": tensor '", name, "' does not match this run's trained tensors");
      it->second->value.copy_from(t.to(DType::F32).view(it->second->value.shape()));
    }
    towers.weights_updated();
    opt->load_state(ckpt->optimizer);
    opt->check_state(refs);
    step = ckpt->state.step;
    tokens = ckpt->state.extra.value("tokens", int64_t(0));
    elapsed_before = ckpt->state.extra.value("elapsed_s", 0.0);
    std::fprintf(stderr, "resuming %s at step %lld\n", ckpt->dir.c_str(), (long long)step);
  }
  std::fprintf(stderr, "clip: %lld images, %lld steps of %d pairs (%lld per epoch); text encoder %d x %d, embed %d\n",
               (long long)n_images, (long long)total, cfg.batch_size, (long long)plan.steps_per_epoch(),
               cfg.text_layers, cfg.text_hidden, cfg.embed_dim);

  MetricsLog log((fs::path(cfg.out) / "metrics.jsonl").string(), ckpt ? std::optional<int64_t>(step) : std::nullopt);
  ProgressBar bar(total, step);
  std::vector<int64_t> plot_steps;
  std::vector<double> plot_losses;
  for (const StepMetrics& m : MetricsLog::read(log.path())) {
    plot_steps.push_back(m.step);
    plot_losses.push_back(m.loss);
  }
  auto t_start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(); };
  auto save = [&](int64_t at) {
    TrainState st;
    st.step = at;
    st.epoch = at / plan.steps_per_epoch();
    st.data_position = (at % plan.steps_per_epoch()) * cfg.batch_size;
    st.rng_seed = cfg.seed;
    st.extra = {{"fingerprint", data.fingerprint}, {"tokens", tokens}, {"elapsed_s", elapsed_before + seconds()}};
    io::NamedTensors w;
    for (auto& [name, p] : towers.params()) w.emplace_back(name, p->value);
    save_checkpoint(cfg.out, st, w, *opt, cfg.keep_last);
  };

  // A step's images load on worker threads while the step before it computes.
  auto start_loading = [&](int64_t at) {
    std::vector<std::string> paths;
    for (const auto& pr : plan.pairs(at)) paths.push_back(data.images[size_t(pr.first)]);
    return std::async(std::launch::async, load_images, std::move(paths), pp, HW, cfg.workers);
  };
  std::future<LoadedImages> next;
  if (step < total) next = start_loading(step);

  double last_loss = NAN;
  const int64_t tokens_at_start = tokens;
  while (step < total) {
    std::vector<std::vector<int32_t>> captions;
    const auto pairs = plan.pairs(step);
    for (const auto& [img, cap] : pairs) {
      captions.push_back(data.captions[size_t(img)][size_t(cap)]);
      tokens += int64_t(captions.back().size()) + towers.image_tokens();
    }
    LoadedImages loaded = next.get();
    if (step + 1 < total) next = start_loading(step + 1);
    RegionBatch rb;
    if (with_regions) rb = make_region_batch(data, pairs, loaded.sizes, pp, towers);
    towers.zero_grad();
    ClipHeadResult rr;
    const ClipHeadResult hr =
        towers.forward_backward(loaded.pixels, captions, /*backward=*/true, &rb, cfg.region_weight, &rr);
    const double step_loss = hr.loss + (rb.regions() > 0 ? cfg.region_weight * rr.loss : 0.0);
    const double gnorm = cfg.max_grad_norm > 0 ? clip_grad_norm(refs, cfg.max_grad_norm) : grad_norm(refs);
    const double lr = schedule_lr(sc, cfg.lr, step);
    opt->step(refs, lr);
    towers.clamp_logit_scale();
    towers.weights_updated();
    ++step;
    last_loss = step_loss;
    const double secs = seconds(), scale = std::exp(double(towers.logit_scale()));
    StepMetrics m;
    m.step = step;
    m.loss = step_loss;
    m.lr = lr;
    m.grad_norm = gnorm;
    m.tokens = tokens;
    m.tokens_per_s = secs > 0 ? double(tokens - tokens_at_start) / secs : 0;
    m.elapsed_s = elapsed_before + secs;
    const double B = double(cfg.batch_size), acc_i2t = double(hr.correct_i2t) / B, acc_t2i = double(hr.correct_t2i) / B;
    nlohmann::json extra = {{"acc_i2t", acc_i2t}, {"acc_t2i", acc_t2i}, {"logit_scale", scale}};
    char note[120];
    int len = std::snprintf(note, sizeof note, "acc i2t %.2f t2i %.2f", acc_i2t, acc_t2i);
    if (with_regions) {
      const double acc_region = rb.regions() > 0 ? double(rr.correct_i2t) / double(rb.regions()) : 0.0;
      extra["clip_loss"] = hr.loss;
      extra["region_loss"] = rr.loss;
      extra["acc_region"] = acc_region;
      extra["regions"] = rb.regions();
      len += std::snprintf(note + len, sizeof note - size_t(len), " region %.2f", acc_region);
    }
    std::snprintf(note + len, sizeof note - size_t(len), " | scale %.1f", scale);
    log.log(m, extra);
    bar.update(m, note);
    plot_steps.push_back(step);
    plot_losses.push_back(step_loss);
    if (cfg.save_every > 0 && step % cfg.save_every == 0 && step < total) {
      save(step);
      bar.message("saved checkpoint step " + std::to_string(step));
    }
  }
  if (next.valid()) next.wait();
  save(step);
  bar.finish();

  // The VLM with its trained vision tower (every other tensor as loaded), and the text encoder with the heads.
  const models::LlavaConfig& lc = vlm->config().llava;
  const std::string final_dir = (fs::path(cfg.out) / "final").string();
  models::Vlm::save_folder(final_dir, vlm->config(), towers.vision().full_state(), DType::F32);
  models::Vlm::copy_side_files(cfg.model, final_dir);
  const std::string text_dir = (fs::path(cfg.out) / "text_encoder").string();
  models::Vlm::save_folder(text_dir, tcfg, towers.text().full_state(), DType::F32, cfg.model);
  io::save_safetensors((fs::path(text_dir) / "clip_heads.safetensors").string(), towers.heads());
  const bool drop_cls = lc.vision_feature_select_strategy == "default";
  const nlohmann::json heads = {
      {"embed_dim", cfg.embed_dim},
      {"logit_scale", "clip_heads.safetensors: logit_scale (1); logits = exp(logit_scale) * cosine similarity"},
      {"image_embedding", str_cat("mean over the rows of vision feature layer ", lc.vision_feature_layer,
                                  drop_cls ? " without the class token" : " (class token included)",
                                  ", then visual_projection (", cfg.embed_dim, ", ", lc.vision.hidden_size,
                                  "), then L2 normalisation")},
      {"text_embedding", str_cat("tokenizer ids (with BOS as the tokenizer adds it) + eos ", eos,
                                 ", the final-normed hidden state at the last token, then text_projection (",
                                 cfg.embed_dim, ", ", cfg.text_hidden, "), then L2 normalisation")},
      {"eos_token_id", eos},
      {"max_text_tokens", cfg.max_text_tokens}};
  io::write_file_atomic((fs::path(text_dir) / "clip_heads.json").string(), heads.dump(2) + "\n");
  write_loss_plot_svg((fs::path(cfg.out) / "loss.svg").string(), plot_steps, plot_losses, "contrastive loss");
  std::fprintf(stderr, "done: %lld steps, final loss %.4f; wrote %s and %s\n", (long long)step, last_loss,
               final_dir.c_str(), text_dir.c_str());
  return last_loss;
}

}  // namespace iris::train
