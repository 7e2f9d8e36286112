// iris train: the parity entry point. Trains on one pre-tokenised batch (--pixel-values, --input-ids, --labels as
// .npy; labels -100 are ignored) with the seed's stages, SGD or AdamW, and writes the loss before each step and
// the trained weights as a Hugging Face folder (and a PEFT adapter when LoRA is on).
// With --data/--captions it runs the LLaVA trainer (train/trainer.h), with --objective lm --text the same trainer on
// plain text, with --objective clip contrastive pretraining of the vision tower (train/clip.h).
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "cpu/threads.h"
#include "io/npy.h"
#include "train/clip.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train/trainable.h"
#include "train/trainer.h"

namespace iris::cli {

namespace {

std::vector<int32_t> int_ids(const std::string& path, const char* what) {
  Tensor t = io::load_npy(path);
  IRIS_CHECK(t.ndim() == 1 || (t.ndim() == 2 && t.dim(0) == 1), path, ": ", what, " must be (S,) or (1, S), got ",
             shape_str(t.shape()));
  IRIS_CHECK(t.dtype() == DType::I64 || t.dtype() == DType::I32, path, ": ", what, " must be int64 or int32");
  Tensor i = t.to(DType::I64);
  std::vector<int32_t> r(static_cast<size_t>(i.numel()));
  for (size_t k = 0; k < r.size(); ++k) {
    int64_t v = i.data<int64_t>()[k];
    IRIS_CHECK(v >= -100 && v <= INT32_MAX, path, ": value ", v, " at ", k, " is out of range");
    r[k] = int32_t(v);
  }
  return r;
}

// --objective clip: the shared flags the user gave override ClipConfig's own defaults (CLIP's, not this command's).
int run_clip(const CLI::App& app, const train::TrainerConfig& tc, train::ClipConfig cc, const std::string& resume) {
  if (!resume.empty()) {
    IRIS_CHECK(train::is_clip_run(resume), "train --objective clip --resume ", resume, ": not a contrastive run");
    cc.out = resume;
    train::run_clip_training(cc, /*resume=*/true);
    return 0;
  }
  IRIS_CHECK(tc.data.empty(), "train --objective clip: give --captions (image-caption JSONL), not --data");
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  for (const char* flag : {"--lr-vision", "--lr-projector", "--lr-llm"})
    IRIS_CHECK(!given(flag), "train --objective clip: ", flag, " is for the LLaVA stages (the contrastive run has one --lr)");
  cc.model = tc.model, cc.captions = tc.captions, cc.images = tc.images, cc.out = tc.out;
  if (given("--optimizer")) cc.optimizer = tc.optimizer;
  if (given("--lr")) cc.lr = tc.lr;
  if (given("--momentum")) cc.momentum = tc.momentum;
  if (given("--weight-decay")) cc.weight_decay = tc.weight_decay;
  if (given("--betas")) cc.beta1 = tc.beta1, cc.beta2 = tc.beta2;
  if (given("--eps")) cc.eps = tc.eps;
  if (given("--decay-all")) cc.decay_all = tc.decay_all;
  if (given("--schedule")) cc.schedule = tc.schedule;
  if (given("--warmup")) cc.warmup = tc.warmup;
  if (given("--max-grad-norm")) cc.max_grad_norm = tc.max_grad_norm;
  if (given("--epochs")) cc.epochs = tc.epochs;
  if (given("--max-steps")) cc.max_steps = tc.max_steps;
  if (given("--batch-size")) cc.batch_size = tc.batch_size;
  if (given("--save-every")) cc.save_every = tc.save_every;
  if (given("--keep")) cc.keep_last = tc.keep_last;
  if (given("--seed")) cc.seed = tc.seed;
  if (given("--workers")) cc.workers = tc.workers;
  if (given("--dtype")) cc.dtype = tc.dtype;
  cc.checkpointing = tc.checkpointing;
  train::run_clip_training(cc, /*resume=*/false);
  return 0;
}

}  // namespace

Runner add_train(CLI::App& app) {
  struct Opts {
    train::TrainerConfig tc;  // every training setting; the parity mode uses the same ones
    std::string pixel_values, input_ids, labels, save_losses, resume;
    int steps = 1, threads = 0;
    std::vector<double> betas{0.9, 0.999};
    train::ClipConfig clip;  // --objective clip's own settings
  };
  auto o = std::make_shared<Opts>();
  // The command's defaults: no schedule and no clipping unless asked (the parity entry point relies on it).
  o->tc.schedule = "constant";
  o->tc.max_grad_norm = 0;
  o->tc.lr = 1e-3;
  app.add_option("-m,--model", o->tc.model, "model folder (Hugging Face layout)");
  app.add_option("--pixel-values", o->pixel_values, "normalised pixel values .npy, (1, 3, H, W) float32");
  app.add_option("--input-ids", o->input_ids, "parity mode: input ids .npy, (1, S), image tokens expanded");
  app.add_option("--labels", o->labels, "parity mode: labels .npy, (1, S), -100 = not supervised (shifted by one inside)");
  app.add_option("--objective", o->tc.objective,
                 "llava: conversations/captions with images (default); lm: next-token pretraining of the language "
                 "model on plain text (--text); clip: contrastive pretraining of the vision tower on --captions")
      ->check(CLI::IsMember({"llava", "lm", "clip"}));
  app.add_option("--text", o->tc.text, "objective lm: text files (.txt paragraphs, .jsonl strings, LLaVA .json turns)");
  app.add_option("--data", o->tc.data, "LLaVA conversation JSON (or JSONL) to train on");
  app.add_option("--captions", o->tc.captions, "image-caption JSONL (stage 1 style) to train on");
  app.add_option("--images", o->tc.images, "folder the data's image paths are relative to");
  app.add_option("--resume", o->resume, "continue the run in this folder from its latest checkpoint");
  app.add_option("--epochs", o->tc.epochs, "epochs");
  app.add_option("--max-steps", o->tc.max_steps, "stop after this many optimizer steps (0: epochs decide)");
  app.add_option("--batch-size", o->tc.batch_size, "examples per batch");
  app.add_option("--grad-accum", o->tc.grad_accum, "batches per optimizer step");
  app.add_option("--save-every", o->tc.save_every, "checkpoint every N steps");
  app.add_option("--keep", o->tc.keep_last, "checkpoints kept");
  app.add_option("--max-tokens", o->tc.max_tokens, "longer examples are truncated");
  app.add_option("--min-pixels", o->tc.min_pixels, "Qwen2-VL: fewest pixels a training image is resized to (default: the folder's)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_option("--max-pixels", o->tc.max_pixels, "Qwen2-VL: most pixels a training image is resized to (default: the folder's)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_flag("--strict", o->tc.strict, "bad data entries are fatal instead of skipped");
  app.add_flag("--augment", o->tc.augment, "random resized crop and colour jitter");
  app.add_flag("--group-by-length", o->tc.group_by_length, "batches of similar length");
  app.add_flag("--grad-checkpointing", o->tc.checkpointing, "recompute activations per block in the backward");
  app.add_option("--workers", o->tc.workers, "data loader threads");
  app.add_option("--replicas", o->tc.replicas,
                 "data parallelism: N model replicas, one thread each, share each step's examples (for small models)");
  app.add_option("--stage", o->tc.stage, "1: projector; 2: projector + LLM (full, or LoRA with --lora-rank); 3: everything")
      ->check(CLI::Range(1, 3));
  app.add_option("--lora-rank", o->tc.lora_rank, "LoRA rank (0: full fine-tuning)");
  app.add_option("--lora-alpha", o->tc.lora_alpha, "LoRA alpha (scale alpha/rank)");
  app.add_option("--lora-dropout", o->tc.lora_dropout, "LoRA dropout");
  app.add_option("--lora-targets", o->tc.lora_targets, "linear layers to adapt, e.g. q_proj,v_proj (default: all of q,k,v,o,gate,up,down / fc1,fc2 / linear_1,2)")
      ->delimiter(',');
  app.add_option("--lora-components", o->tc.lora_components, "components that get adapters: vision,projector,llm")
      ->delimiter(',');
  app.add_option("--train", o->tc.train, "components to train in full, overriding the stage: vision,projector,llm")
      ->delimiter(',');
  app.add_option("--freeze", o->tc.freeze, "components to freeze, overriding the stage")->delimiter(',');
  app.add_option("--optimizer", o->tc.optimizer, "sgd or adamw")->check(CLI::IsMember({"sgd", "adamw"}));
  app.add_option("--lr", o->tc.lr, "learning rate");
  app.add_option("--lr-vision", o->tc.lr_vision, "learning rate of the vision tower's weights (default: --lr)");
  app.add_option("--lr-projector", o->tc.lr_projector, "learning rate of the projector's weights (default: --lr)");
  app.add_option("--lr-llm", o->tc.lr_llm, "learning rate of the language model's weights (default: --lr)");
  app.add_option("--momentum", o->tc.momentum, "SGD momentum");
  app.add_option("--weight-decay", o->tc.weight_decay, "weight decay (AdamW: decoupled; SGD: L2 on the gradient)");
  app.add_option("--betas", o->betas, "AdamW betas, e.g. --betas 0.9 0.999")->expected(2);
  app.add_option("--eps", o->tc.eps, "AdamW epsilon");
  app.add_flag("--decay-all", o->tc.decay_all, "weight decay on every trained tensor (norms and biases too)");
  app.add_option("--schedule", o->tc.schedule, "constant (default: no schedule), linear or cosine")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}));
  app.add_option("--warmup", o->tc.warmup, "warmup steps");
  app.add_option("--max-grad-norm", o->tc.max_grad_norm, "clip gradients to this global norm (0: off)");
  app.add_option("--steps", o->steps, "optimizer steps on the batch")->check(CLI::PositiveNumber);
  app.add_option("--save-losses", o->save_losses, "write the loss before each step, (steps,) float32 .npy");
  app.add_option("--out", o->tc.out, "write the trained model (HF folder; + PEFT adapter when LoRA is on)");
  app.add_option("--dtype", o->tc.dtype, "matrix-product precision of trained layers: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("-t,--threads", o->threads, "threads");
  app.add_option("--seed", o->tc.seed, "seed (LoRA initialisation, dropout)");
  app.add_option("--text-layers", o->clip.text_layers, "clip: text encoder layers (default 2)");
  app.add_option("--text-hidden", o->clip.text_hidden, "clip: text encoder width (default 128)");
  app.add_option("--embed-dim", o->clip.embed_dim, "clip: shared embedding width (default 128)");
  app.add_option("--regions", o->clip.regions,
                 "clip: region-phrase JSONL ({\"image\", \"regions\": [{\"bbox\": [x0,y0,x1,y1], \"text\"}]}); adds "
                 "a region-level contrastive loss (`iris data shapes` writes regions.jsonl)");
  app.add_option("--region-weight", o->clip.region_weight, "clip: weight of the region loss (default 1)");
  return [o, &app] {
    cpu::set_num_threads(o->threads);
    o->tc.beta1 = o->betas[0];
    o->tc.beta2 = o->betas[1];
    if (o->tc.objective == "clip" || (!o->resume.empty() && train::is_clip_run(o->resume)))
      return run_clip(app, o->tc, o->clip, o->resume);
    if (!o->resume.empty()) {
      train::TrainerConfig tc;
      tc.out = o->resume;
      train::run_training(tc, /*resume=*/true);
      return 0;
    }
    IRIS_CHECK(!o->tc.model.empty(), "train: -m/--model is required");
    if (o->input_ids.empty()) {  // a data-driven run
      train::TrainerConfig& tc = o->tc;
      IRIS_CHECK(!tc.out.empty(), "train: --out is required");
      IRIS_CHECK(!std::filesystem::exists(std::filesystem::path(tc.out) / "train_config.json"), "train: ", tc.out,
                 " already holds a run (continue it with --resume ", tc.out, ")");
      train::run_training(tc, /*resume=*/false);
      return 0;
    }
    IRIS_CHECK(!o->labels.empty(), "train: --labels is required with --input-ids");
    train::TrainSpec spec = train::make_spec(o->tc);
    auto model = models::Vlm::load(o->tc.model, {models::WeightPrecision::F32, /*full_vision_tower=*/spec.train_vision});
    train::TrainableVlm tv(*model, spec);

    train::Example ex;
    ex.ids = int_ids(o->input_ids, "input ids");
    ex.labels = int_ids(o->labels, "labels");
    IRIS_CHECK(ex.ids.size() == ex.labels.size(), "input ids (", ex.ids.size(), ") and labels (", ex.labels.size(),
               ") differ in length");
    if (!o->pixel_values.empty()) {
      Tensor px = io::load_npy(o->pixel_values);
      IRIS_CHECK(px.ndim() == 4 && px.dtype() == DType::F32, o->pixel_values,
                 ": pixel values must be float32 (N, C, H, W), got ", shape_str(px.shape()));
      for (int64_t i = 0; i < px.dim(0); ++i) {
        Tensor one = px.select(0, i).contiguous();
        ex.pixel_values.emplace_back(one.data<float>(), one.data<float>() + one.numel());
      }
    }
    const int64_t n_sup = train::supervised_count(ex);
    IRIS_CHECK(n_sup > 0, "no supervised tokens: every label after the first is -100");

    auto opt = train::Optimizer::create(train::optimizer_config_of(o->tc));
    train::ScheduleConfig sc;
    sc.kind = o->tc.schedule;
    sc.warmup_steps = o->tc.warmup;
    sc.total_steps = o->steps;

    train::ParamGroups groups = train::param_groups(tv, o->tc);
    std::vector<float> losses;
    for (int step = 0; step < o->steps; ++step) {
      tv.zero_grad();
      // Mean over supervised tokens, as Hugging Face's loss: scale the summed-loss gradient by 1/count.
      auto [sum, count] = tv.forward_backward(ex, 1.0f / float(n_sup));
      losses.push_back(float(sum / double(count)));
      double gnorm = o->tc.max_grad_norm > 0 ? train::clip_grad_norm(groups.refs, o->tc.max_grad_norm) : 0.0;
      double lr = train::schedule_lr(sc, o->tc.lr, step);
      groups.schedule(sc, step);
      opt->step(groups.refs, lr);
      tv.weights_updated();
      std::fprintf(stderr, "step %d: loss %.6f (%lld tokens), lr %.3g%s\n", step + 1, losses.back(),
                   (long long)count, lr, o->tc.max_grad_norm > 0 ? (", grad norm " + std::to_string(gnorm)).c_str() : "");
    }
    if (!o->save_losses.empty())
      io::save_npy(o->save_losses, Tensor::from_vector(losses, {int64_t(losses.size())}));
    if (!o->tc.out.empty()) {
      const models::ModelConfig& cfg = model->config();
      if (o->tc.lora_rank > 0) {
        train::save_peft_adapter(o->tc.out + "/adapter", tv, o->tc.model);
        std::fprintf(stderr, "wrote the LoRA adapter to %s/adapter\n", o->tc.out.c_str());
      }
      models::Vlm::save_folder(o->tc.out, cfg, tv.full_state(), DType::F32);
      models::Vlm::copy_side_files(o->tc.model, o->tc.out);
      std::fprintf(stderr, "wrote %s\n", o->tc.out.c_str());
    }
    return 0;
  };
}

}  // namespace iris::cli
