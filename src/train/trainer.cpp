// The training loop.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <thread>

#include "cpu/threads.h"
#include "data/dataset.h"
#include "data/encode.h"
#include "data/loader.h"
#include "data/text_corpus.h"
#include "data/text_windows.h"
#include "io/file.h"
#include "models/processor_clip.h"
#include "train/checkpoint.h"
#include "train/config_json.h"
#include "train/lora.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/trainable.h"
#include "vision/preprocess.h"

namespace iris::train {

namespace fs = std::filesystem;

#define IRIS_TRAIN_FIELDS(X)                                                                                        \
  X(objective) X(text) X(model) X(data) X(captions) X(images) X(out) X(stage) X(lora_rank) X(lora_alpha)            \
  X(lora_dropout) X(optimizer) X(train) X(freeze) X(lora_targets) X(lora_components) X(lr) X(lr_vision)             \
  X(lr_projector) X(lr_llm) X(momentum) X(weight_decay) X(beta1) X(beta2) X(eps) X(max_grad_norm)                   \
  X(decay_all) X(schedule) X(warmup) X(epochs) X(batch_size) X(grad_accum) X(max_steps) X(save_every)               \
  X(keep_last) X(max_tokens) X(seed) X(strict) X(augment) X(group_by_length) X(checkpointing) X(dtype)              \
  X(workers) X(replicas) X(min_pixels) X(max_pixels)

IRIS_CONFIG_JSON(TrainerConfig, IRIS_TRAIN_FIELDS)

vision::PreprocessConfig preprocess_for(const models::Vlm& m, const std::string& dir) {
  const auto* clip = dynamic_cast<const models::ClipProcessor*>(&m.processor());
  IRIS_CHECK(clip, dir, ": ", m.config().architecture_name(), " has no CLIP image processor");
  return clip->config();
}

namespace {

// The data loader's hook for processors whose image-token count depends on the image (Qwen2-VL).
data::ProcessedImage process_for_loader(const models::Vlm& m, const vision::Image& img,
                                       const models::ProcessOptions& opt) {
  models::ImagePixels px = m.processor().process(img, opt);
  data::ProcessedImage p;
  Tensor v = px.values.contiguous();
  p.values.assign(v.data<float>(), v.data<float>() + v.numel());
  p.rows = v.dim(0);
  p.cols = v.numel() / std::max<int64_t>(v.dim(0), 1);
  p.grid = {px.grid_t, px.grid_h, px.grid_w};
  p.tokens = m.processor().tokens_for(px);
  return p;
}

}  // namespace

ParamGroups param_groups(TrainableVlm& tv, const TrainerConfig& cfg) {
  struct Group {
    const char* component;
    const char* flag;
    double lr;
  };
  const Group groups[] = {{"vision", "--lr-vision", cfg.lr_vision},
                          {"projector", "--lr-projector", cfg.lr_projector},
                          {"llm", "--lr-llm", cfg.lr_llm}};
  ParamGroups g;
  for (Param* p : tv.params()) {
    g.refs.push_back({p->name, p->value.data<float>(), p->grad.data<float>(), p->value.numel(), p->decay});
    double lr = cfg.lr;
    for (const Group& c : groups)
      if (p->component == c.component && c.lr > 0) lr = c.lr;
    g.base_lr.push_back(lr);
  }
  for (const Group& c : groups) {
    IRIS_CHECK(std::isfinite(c.lr) && c.lr >= 0, "train: ", c.flag, " must be a finite rate >= 0 (0: --lr), got ",
               c.lr);
    if (c.lr == 0) continue;
    bool trains = false;
    for (Param* p : tv.params()) trains = trains || p->component == c.component;
    IRIS_CHECK(trains, "train: ", c.flag, " is given but the ", c.component,
               " does not train in this run (choose it with --stage or --train)");
  }
  return g;
}

void ParamGroups::schedule(const ScheduleConfig& sc, int64_t step) {
  for (size_t i = 0; i < refs.size(); ++i) refs[i].lr = schedule_lr(sc, base_lr[i], step);
}

TrainSpec make_spec(const TrainerConfig& cfg) {
  TrainSpec spec = stage_spec(cfg.objective == "lm" ? 2 : cfg.stage, cfg.lora_rank);
  auto set = [&](const std::string& c, bool on) {
    if (c == "vision") spec.train_vision = on;
    else if (c == "projector") spec.train_projector = on;
    else if (c == "llm") spec.train_llm = on;
    else throw Error(str_cat("component '", c, "': expected vision, projector or llm"));
  };
  for (const auto& c : cfg.train) set(c, true);
  for (const auto& c : cfg.freeze) set(c, false);
  spec.lora.alpha = cfg.lora_alpha;
  spec.lora.dropout = cfg.lora_dropout;
  if (!cfg.lora_targets.empty()) spec.lora.targets = cfg.lora_targets;
  if (!cfg.lora_components.empty()) spec.lora.components = cfg.lora_components;
  // A component trained in full carries no adapter.
  auto& lc = spec.lora.components;
  lc.erase(std::remove_if(lc.begin(), lc.end(),
                          [&](const std::string& c) {
                            return (c == "vision" && spec.train_vision) || (c == "projector" && spec.train_projector) ||
                                   (c == "llm" && spec.train_llm);
                          }),
           lc.end());
  if (cfg.objective == "lm") {  // text only: nothing below the language model sees data
    IRIS_CHECK(cfg.train.empty() || (cfg.train.size() == 1 && cfg.train[0] == "llm"),
               "train --objective lm trains the language model only (--train llm)");
    spec.train_vision = spec.train_projector = false;
    spec.train_llm = spec.lora.rank == 0;
    lc.erase(std::remove_if(lc.begin(), lc.end(), [](const std::string& c) { return c != "llm"; }), lc.end());
    if (spec.lora.rank > 0 && lc.empty()) lc = {"llm"};
  }
  spec.seed = cfg.seed;
  spec.checkpointing = cfg.checkpointing;
  spec.precision = cfg.dtype == "bf16" ? cpu::MatmulPrecision::BF16 : cpu::MatmulPrecision::F32;
  return spec;
}

double run_training(const TrainerConfig& cfg_in, bool resume) {
  TrainerConfig cfg = cfg_in;
  IRIS_CHECK(!cfg.out.empty(), "train: --out is required");
  std::optional<LoadedCheckpoint> ckpt;
  if (resume) {
    fs::path cp = fs::path(cfg.out) / "train_config.json";
    IRIS_CHECK(fs::exists(cp), "cannot resume: ", cp.string(), " does not exist");
    cfg = TrainerConfig::from_json(io::read_json_file(cp.string()));
    if (auto latest = latest_checkpoint(cfg.out)) ckpt = load_checkpoint(*latest);
  }
  IRIS_CHECK(cfg.objective == "llava" || cfg.objective == "lm", "train: objective '", cfg.objective,
             "': expected llava or lm (clip has its own trainer)");
  const bool lm_objective = cfg.objective == "lm";
  if (lm_objective)
    IRIS_CHECK(!cfg.text.empty() && cfg.data.empty() && cfg.captions.empty(),
               "train --objective lm: give the corpus as --text FILE (.txt, .jsonl or LLaVA .json), not --data/--captions");
  else
    IRIS_CHECK(!cfg.data.empty() || !cfg.captions.empty(), "train: give --data (LLaVA JSON) or --captions (JSONL)");
  IRIS_CHECK(cfg.batch_size >= 1 && cfg.grad_accum >= 1 && cfg.epochs >= 1, "train: batch size, grad accumulation and epochs must be >= 1");
  fs::create_directories(cfg.out);
  if (!resume) io::write_file_atomic((fs::path(cfg.out) / "train_config.json").string(), cfg.to_json().dump(2) + "\n");

  // Model and what trains.
  const bool vision_trains =
      !lm_objective && (cfg.stage == 3 || std::find(cfg.train.begin(), cfg.train.end(), "vision") != cfg.train.end());
  auto model = models::Vlm::load(cfg.model, {models::WeightPrecision::F32, /*full_vision_tower=*/vision_trains});
  TrainableVlm tv(*model, make_spec(cfg));
  IRIS_CHECK(cfg.replicas >= 1 && cfg.replicas <= 256, "train: --replicas ", cfg.replicas, " outside [1, 256]");
  std::vector<std::unique_ptr<models::Vlm>> replica_models;
  std::vector<std::unique_ptr<TrainableVlm>> replicas;  // replicas 1..N-1 (replica 0 is tv)
  for (int r = 1; r < cfg.replicas; ++r) {
    replica_models.push_back(models::Vlm::load(cfg.model, {models::WeightPrecision::F32, vision_trains}));
    replicas.push_back(std::make_unique<TrainableVlm>(*replica_models.back(), make_spec(cfg)));
  }
  // Replicas take replica 0's weights (after a restore and after every optimizer step).
  auto sync_replicas = [&] {
    std::vector<Param*> master = tv.params();
    for (auto& rep : replicas) {
      std::vector<Param*> mine = rep->params();
      for (size_t i = 0; i < master.size(); ++i) mine[i]->value.copy_from(master[i]->value);
      rep->weights_updated();
    }
  };

  // Data.
  text::Tokenizer tok = text::Tokenizer::from_dir(cfg.model);
  std::vector<int32_t> eos = tok.eos_ids();
  for (int e : model->config().text().eos_token_ids)
    if (std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
  data::PromptFormat fmt = data::prompt_format_for(tok, model->has_vision() ? model->image_token_id() : -1,
                                                   model->has_vision() ? model->processor().fixed_tokens() : 1, eos);
  // Without a chat template, the family's conversation format: the template inference renders with.
  if (fmt.chat_template.empty() && model->has_vision()) fmt.chat_template = model->processor().default_chat_template();
  std::unique_ptr<data::BatchSource> source;
  if (lm_objective) {
    std::vector<std::string> docs;
    for (const std::string& f : cfg.text) {
      std::vector<std::string> d = data::read_text_documents(f);
      docs.insert(docs.end(), std::make_move_iterator(d.begin()), std::make_move_iterator(d.end()));
    }
    auto tw = std::make_unique<data::TextWindowLoader>(docs, tok, cfg.max_tokens, cfg.batch_size, cfg.seed);
    std::fprintf(stderr, "text: %zu documents, %lld tokens, %lld windows of up to %lld tokens\n", docs.size(),
                 (long long)tw->total_tokens(), (long long)tw->epoch_size(), (long long)cfg.max_tokens);
    source = std::move(tw);
  } else {
    data::LoadReport report;
    std::vector<data::Sample> samples = !cfg.data.empty()
                                            ? data::load_llava_json(cfg.data, &report, cfg.strict)
                                            : data::load_caption_jsonl(cfg.captions, cfg.seed, &report, cfg.strict);
    IRIS_CHECK(!samples.empty(), "train: no usable examples in ", cfg.data.empty() ? cfg.captions : cfg.data);
    data::LoaderConfig lc;
    lc.image_dir = cfg.images;
    if (model->has_vision()) {
      if (model->processor().fixed_tokens() > 0) {
        lc.preprocess = preprocess_for(*model, cfg.model);
      } else {
        const models::Vlm* mp = model.get();
        models::ProcessOptions popt;
        popt.min_pixels = cfg.min_pixels;
        popt.max_pixels = cfg.max_pixels;
        lc.process = [mp, popt](const vision::Image& img) { return process_for_loader(*mp, img, popt); };
      }
    }
    lc.workers = cfg.workers;
    lc.seed = cfg.seed;
    lc.augment = cfg.augment;
    lc.max_tokens = cfg.max_tokens;
    lc.group_by_length = cfg.group_by_length;
    lc.batch_size = cfg.batch_size;
    lc.strict = cfg.strict;
    source = std::make_unique<data::DataLoader>(std::move(samples), fmt, lc);
  }
  data::BatchSource& loader = *source;

  auto opt = Optimizer::create(optimizer_config_of(cfg));
  const int64_t batches_per_epoch = (loader.epoch_size() + cfg.batch_size - 1) / cfg.batch_size;
  const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / cfg.grad_accum);
  const int64_t total = cfg.max_steps > 0 ? cfg.max_steps : steps_per_epoch * cfg.epochs;
  ScheduleConfig sc;
  sc.kind = cfg.schedule;
  sc.warmup_steps = cfg.warmup;
  sc.total_steps = total;

  ParamGroups groups = param_groups(tv, cfg);
  std::vector<ParamRef>& refs = groups.refs;
  int64_t step = 0, tokens = 0;
  if (ckpt) {  // restore weights, optimizer, data position
    for (const auto& [name, t] : ckpt->weights) {
      Param* p = tv.find(name);
      IRIS_CHECK(p && p->value.numel() == t.numel(), "checkpoint ", ckpt->dir, ": tensor '", name,
                 "' does not match this run's trained tensors");
      p->value.copy_from(t.to(DType::F32).view(p->value.shape()));
    }
    tv.weights_updated();
    sync_replicas();
    opt->load_state(ckpt->optimizer);
    opt->check_state(refs);
    step = ckpt->state.step;
    tokens = ckpt->state.extra.value("tokens", int64_t(0));
    loader.restore(ckpt->state.extra.at("loader"));
    std::fprintf(stderr, "resuming %s at step %lld\n", ckpt->dir.c_str(), (long long)step);
  }
  MetricsLog log((fs::path(cfg.out) / "metrics.jsonl").string(), ckpt ? std::optional<int64_t>(step) : std::nullopt);
  ProgressBar bar(total, step);
  std::vector<int64_t> plot_steps;
  std::vector<double> plot_losses;
  for (const StepMetrics& m : MetricsLog::read(log.path())) {
    plot_steps.push_back(m.step);
    plot_losses.push_back(m.loss);
  }
  auto save = [&](int64_t at) {
    TrainState st;
    st.step = at;
    st.epoch = loader.epoch();
    st.data_position = loader.position();
    st.rng_seed = cfg.seed;
    st.extra = {{"loader", loader.state()}, {"tokens", tokens}};
    io::NamedTensors w;
    for (Param* p : tv.params()) w.emplace_back(p->name, p->value);
    save_checkpoint(cfg.out, st, w, *opt, cfg.keep_last);
  };
  auto t_start = std::chrono::steady_clock::now();
  double last_loss = NAN;
  int64_t tokens_at_start = tokens;
  while (step < total) {
    tv.zero_grad();
    double loss_sum = 0;
    int64_t count = 0;
    // One optimizer step = grad_accum batches; the loss is the mean over all their supervised tokens.
    std::vector<std::vector<data::Example>> batches;
    for (int a = 0; a < cfg.grad_accum; ++a) {
      auto b = loader.next_batch();
      if (!b) b = loader.next_batch();  // the end of an epoch: the loader moves on to the next
      IRIS_CHECK(b.has_value() && !b->empty(), "train: the data loader produced no batch");
      batches.push_back(std::move(*b));
    }
    std::vector<Example> examples;
    int64_t n_sup = 0;
    for (auto& b : batches)
      for (auto& e : b) {
        Example ex;
        ex.ids = std::move(e.ids);
        ex.labels = std::move(e.labels);
        if (e.image_grids.empty()) {
          ex.pixel_values = std::move(e.pixel_values);
        } else {  // the model's own layout: (rows, cols) and the grid
          for (size_t j = 0; j < e.pixel_values.size(); ++j) {
            models::ImagePixels px;
            px.values = Tensor::from_vector(e.pixel_values[j], {e.image_sizes[j].first, e.image_sizes[j].second});
            px.grid_t = e.image_grids[j][0];
            px.grid_h = e.image_grids[j][1];
            px.grid_w = e.image_grids[j][2];
            ex.images.push_back(std::move(px));
          }
        }
        examples.push_back(std::move(ex));
        n_sup += supervised_count(examples.back());
        tokens += int64_t(examples.back().ids.size());
      }
    if (n_sup == 0) continue;
    const float scale = 1.0f / float(n_sup);
    if (replicas.empty()) {
      for (const Example& ex : examples) {
        auto [s, c] = tv.forward_backward(ex, scale);
        loss_sum += s;
        count += c;
      }
    } else {  // example k on replica k mod N, each replica on its own thread
      const size_t R = replicas.size() + 1;
      std::vector<double> sums(R, 0.0);
      std::vector<int64_t> counts(R, 0);
      std::vector<std::exception_ptr> errors(R);
      auto work = [&](size_t r) {
        try {
          cpu::ScopedThreads one(1);
          TrainableVlm& t = r == 0 ? tv : *replicas[r - 1];
          if (r > 0) t.zero_grad();
          for (size_t k = r; k < examples.size(); k += R) {
            auto [s, c] = t.forward_backward(examples[k], scale);
            sums[r] += s;
            counts[r] += c;
          }
        } catch (...) {
          errors[r] = std::current_exception();
        }
      };
      std::vector<std::thread> threads;
      for (size_t r = 1; r < R; ++r) threads.emplace_back(work, r);
      work(0);
      for (auto& th : threads) th.join();
      for (auto& e : errors)
        if (e) std::rethrow_exception(e);
      std::vector<Param*> master = tv.params();
      for (size_t r = 1; r < R; ++r) {
        std::vector<Param*> mine = replicas[r - 1]->params();
        for (size_t i = 0; i < master.size(); ++i) {
          float* g = master[i]->grad.data<float>();
          const float* h = mine[i]->grad.data<float>();
          const int64_t n = master[i]->grad.numel();
          cpu::parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
            for (int64_t j = b; j < e; ++j) g[j] += h[j];
          });
        }
      }
      for (size_t r = 0; r < R; ++r) {
        loss_sum += sums[r];
        count += counts[r];
      }
    }
    double gnorm = cfg.max_grad_norm > 0 ? clip_grad_norm(refs, cfg.max_grad_norm) : grad_norm(refs);
    double lr = schedule_lr(sc, cfg.lr, step);
    groups.schedule(sc, step);
    opt->step(refs, lr);
    tv.weights_updated();
    sync_replicas();
    ++step;
    last_loss = loss_sum / double(std::max<int64_t>(count, 1));
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    StepMetrics m;
    m.step = step;
    m.loss = last_loss;
    m.lr = lr;
    m.grad_norm = gnorm;
    m.tokens = tokens;
    m.tokens_per_s = secs > 0 ? double(tokens - tokens_at_start) / secs : 0;
    m.elapsed_s = secs;
    log.log(m);
    bar.update(m);
    plot_steps.push_back(step);
    plot_losses.push_back(last_loss);
    if (cfg.save_every > 0 && step % cfg.save_every == 0 && step < total) {
      save(step);
      bar.message("saved checkpoint step " + std::to_string(step));
    }
  }
  save(step);
  bar.finish();
  // Outputs other tools load: the full model as a Hugging Face folder, and the adapter as PEFT writes it.
  const std::string final_dir = (fs::path(cfg.out) / "final").string();
  models::Vlm::save_folder(final_dir, model->config(), tv.full_state(), DType::F32);
  models::Vlm::copy_side_files(cfg.model, final_dir);
  if (cfg.lora_rank > 0) save_peft_adapter((fs::path(cfg.out) / "adapter").string(), tv, cfg.model);
  write_loss_plot_svg((fs::path(cfg.out) / "loss.svg").string(), plot_steps, plot_losses, "training loss");
  std::fprintf(stderr, "done: %lld steps, final loss %.4f; wrote %s%s\n", (long long)step, last_loss,
               final_dir.c_str(), cfg.lora_rank > 0 ? " and adapter/" : "");
  data::LoadReport r = loader.report();
  std::fprintf(stderr, "data: %s\n", r.summary().c_str());
  return last_loss;
}

}  // namespace iris::train
