// TrainableVlm: binds master copies and gradients into the trained layers, attaches LoRA adapters, and runs one
// example forward and backward: vision tower -> projector -> splice -> decoder -> LM head on the supervised rows
// -> cross-entropy, then the same in reverse.
#include "train/trainable.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "ops/loss.h"
#include "train/lora.h"

namespace iris::train {

namespace {

constexpr int32_t kIgnore = -100;

uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Rows t whose logits are supervised (labels[t + 1] != -100) and their targets.
void supervised_rows(const Example& ex, std::vector<int64_t>& rows, std::vector<int32_t>& targets) {
  rows.clear();
  targets.clear();
  for (size_t t = 0; t + 1 < ex.labels.size(); ++t)
    if (ex.labels[t + 1] != kIgnore) {
      rows.push_back(int64_t(t));
      targets.push_back(ex.labels[t + 1]);
    }
}

}  // namespace

TrainSpec stage_spec(int stage, int lora_rank) {
  IRIS_CHECK(stage >= 1 && stage <= 3, "training stage ", stage, ": expected 1 (projector), 2 (projector + LLM) or 3 "
             "(everything)");
  IRIS_CHECK(lora_rank >= 0, "LoRA rank ", lora_rank, " is negative");
  TrainSpec s;
  s.train_projector = true;
  if (stage == 1) return s;
  if (lora_rank == 0) {
    s.train_llm = true;
    s.train_vision = stage == 3;
  } else {
    s.lora.rank = lora_rank;
    s.lora.components = stage == 3 ? std::vector<std::string>{"vision", "llm"} : std::vector<std::string>{"llm"};
  }
  return s;
}

int64_t supervised_count(const Example& ex) {
  int64_t n = 0;
  for (size_t t = 1; t < ex.labels.size(); ++t) n += ex.labels[t] != kIgnore;
  return n;
}

TrainableVlm::TrainableVlm(models::Vlm& model, const TrainSpec& spec) : model_(model), spec_(spec) {
  if (spec_.lora.rank > 0 && spec_.lora.components.empty()) spec_.lora.components = {"llm"};
  for (const auto& c : spec_.lora.components)
    IRIS_CHECK(c == "vision" || c == "projector" || c == "llm", "LoRA component '", c,
               "': expected vision, projector or llm");
  const bool lora = spec_.lora.rank > 0;
  IRIS_CHECK(!(lora && spec_.train_vision && contains(spec_.lora.components, "vision")) &&
                 !(lora && spec_.train_projector && contains(spec_.lora.components, "projector")) &&
                 !(lora && spec_.train_llm && contains(spec_.lora.components, "llm")),
             "a component is trained either fully or through LoRA, not both");
  if (!model_.has_vision()) {
    IRIS_CHECK(!spec_.train_vision && !spec_.train_projector, "this model has no vision tower or projector to train "
               "(train_vision / train_projector must be off)");
    IRIS_CHECK(!lora || !(contains(spec_.lora.components, "vision") || contains(spec_.lora.components, "projector")),
               "this model has no vision tower or projector for LoRA");
  }
  std::vector<nn::ParamSlot> slots;
  std::vector<std::string> components;
  auto take = [&](std::vector<nn::ParamSlot> v, const char* component) {
    for (auto& s : v) {
      slots.push_back(std::move(s));
      components.push_back(component);
    }
  };
  if (spec_.train_vision) take(model_.param_slots("vision"), "vision");
  if (spec_.train_projector) take(model_.param_slots("projector"), "projector");
  if (spec_.train_llm) take(model_.param_slots("llm"), "llm");
  for (size_t i = 0; i < slots.size(); ++i) add_param(slots[i], components[i]);
  attach_lora();
  IRIS_CHECK(!params_.empty(), "the training spec trains nothing");
}

void TrainableVlm::add_param(nn::ParamSlot& slot, const std::string& component) {
  auto p = std::make_unique<Param>();
  p->name = slot.name;
  p->component = component;
  // An owned f32 copy, never the stored tensor itself (which may be a mapping or 16-bit).
  p->value = slot.value.dtype() == DType::F32 ? slot.value.clone() : slot.value.to(DType::F32);
  p->grad = Tensor::zeros(slot.value.shape());
  p->decay = slot.decay;
  slot.bind(p->value, p->grad.data<float>(), spec_.precision);
  if (slot.refresh) refresh_.push_back(slot.refresh);
  params_.push_back(std::move(p));
}

void TrainableVlm::attach_lora() {
  const LoraSpec& ls = spec_.lora;
  if (ls.rank <= 0) return;
  std::vector<std::string> targets;
  for (const auto& t : ls.targets) targets.push_back(lora_target_name(t));
  std::set<std::string> matched;
  std::mt19937_64 rng(mix64(spec_.seed ^ 0x4c6f5241ull));
  const float scale = ls.use_rslora ? ls.alpha / std::sqrt(float(ls.rank)) : ls.alpha / float(ls.rank);
  IRIS_CHECK(ls.dropout >= 0.0f && ls.dropout < 1.0f, "LoRA dropout ", ls.dropout, " outside [0, 1)");
  for (const nn::LinearSlot& s : model_.linear_slots()) {
    if (!contains(ls.components, s.component)) continue;
    const std::string name = module_short_name(s.module);
    if (targets.empty() ? name == "lm_head" : !contains(targets, name)) continue;
    matched.insert(name);
    nn::Linear& l = *s.linear;
    IRIS_CHECK(!l.lora, "linear '", s.module, "' already has a LoRA adapter");
    l.lora = make_lora_adapter(l.in_features(), l.out_features(), ls.rank, scale, rng);
    l.lora->dropout = ls.dropout;
    for (int which = 0; which < 2; ++which) {
      auto p = std::make_unique<Param>();
      p->name = "base_model.model." + s.module + (which == 0 ? ".lora_A.weight" : ".lora_B.weight");
      p->component = s.component;
      p->value = which == 0 ? l.lora->A : l.lora->B;
      p->grad = Tensor::zeros(p->value.shape());
      (which == 0 ? l.lora->grad_A : l.lora->grad_B) = p->grad.data<float>();
      lora_params_.push_back(p->name);
      params_.push_back(std::move(p));
    }
    adapters_.push_back({s.module, s.component, l.lora.get()});
  }
  for (const auto& t : targets)
    IRIS_CHECK(matched.count(t), "LoRA target '", t, "' matches no linear layer of the chosen components");
  IRIS_CHECK(!adapters_.empty(), "LoRA: no linear layer matched the targets in the chosen components");
}

std::vector<Param*> TrainableVlm::params() {
  std::vector<Param*> r;
  for (auto& p : params_) r.push_back(p.get());
  return r;
}

Param* TrainableVlm::find(const std::string& name) {
  for (auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

void TrainableVlm::zero_grad() {
  for (auto& p : params_) std::memset(p->grad.raw(), 0, p->grad.nbytes());
}

void TrainableVlm::weights_updated() {
  for (auto& f : refresh_) f();
}

io::NamedTensors TrainableVlm::full_state() { return model_.state(); }

io::NamedTensors TrainableVlm::adapter_state() const {
  io::NamedTensors r;
  for (const auto& p : params_)
    if (contains(lora_params_, p->name)) r.emplace_back(p->name, p->value);
  return r;
}

io::NamedTensors TrainableVlm::trained_base_state() const {
  io::NamedTensors r;
  for (const auto& p : params_)
    if (!contains(lora_params_, p->name)) r.emplace_back(p->name, p->value);
  return r;
}

std::vector<std::pair<std::string, std::string>> TrainableVlm::adapted_modules() const {
  std::vector<std::pair<std::string, std::string>> r;
  for (const auto& a : adapters_) r.emplace_back(a.module, a.component);
  return r;
}

void TrainableVlm::check_example(const Example& ex) const {
  IRIS_CHECK(!ex.ids.empty(), "training example: no tokens");
  IRIS_CHECK(ex.labels.size() == ex.ids.size(), "training example: ", ex.labels.size(), " labels for ", ex.ids.size(),
             " tokens (expected one label per token)");
  IRIS_CHECK(ex.images.empty() || ex.pixel_values.empty(), "training example: images given twice (images and "
             "pixel_values)");
  if (!ex.pixel_values.empty() || !ex.images.empty())
    IRIS_CHECK(model_.has_vision(), "training example has images but the model has no vision tower");
  if (!ex.pixel_values.empty()) {
    IRIS_CHECK(model_.config().arch == models::Architecture::Llava, "training example: flat pixel_values are LLaVA's "
               "form; give this family's processed images");
    const auto& vc = model_.config().llava.vision;
    const size_t n = size_t(vc.num_channels) * size_t(vc.image_size) * size_t(vc.image_size);
    for (size_t i = 0; i < ex.pixel_values.size(); ++i)
      IRIS_CHECK(ex.pixel_values[i].size() == n, "training example: image ", i, " has ", ex.pixel_values[i].size(),
                 " values, expected ", vc.num_channels, " x ", vc.image_size, " x ", vc.image_size, " = ", n);
  }
}

std::vector<models::ImagePixels> TrainableVlm::example_images(const Example& ex) const {
  if (ex.pixel_values.empty()) return ex.images;
  const auto& vc = model_.config().llava.vision;
  std::vector<models::ImagePixels> out;
  for (const auto& v : ex.pixel_values) {
    models::ImagePixels p;
    p.values = Tensor::from_vector(v, {vc.num_channels, vc.image_size, vc.image_size});
    p.grid_h = p.grid_w = vc.image_size / vc.patch_size;
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<models::ImageFeatures> TrainableVlm::encode_images(const Example& ex, bool keep) {
  std::vector<models::ImageFeatures> out;
  const std::vector<models::ImagePixels> px = example_images(ex);
  image_acts_.clear();
  image_acts_.resize(keep ? px.size() : 0);
  for (size_t i = 0; i < px.size(); ++i) {
    if (!keep) {
      out.push_back(model_.encode_image(px[i]));
      continue;
    }
    out.push_back(model_.encode_image_train(px[i], true, image_acts_[i], spec_.checkpointing));
  }
  return out;
}

std::pair<double, int64_t> TrainableVlm::forward_backward(const Example& ex, float grad_scale) {
  check_example(ex);
  std::vector<int64_t> rows;
  std::vector<int32_t> targets;
  supervised_rows(ex, rows, targets);
  if (rows.empty()) return {0.0, 0};
  ++step_;
  for (size_t i = 0; i < adapters_.size(); ++i)
    adapters_[i].lora->dropout_seed = mix64(mix64(spec_.seed ^ step_) + uint64_t(i));

  const models::Llama& lm = model_.text();
  const int64_t S = int64_t(ex.ids.size()), D = lm.hidden_size(), V = lm.vocab_size(), R = int64_t(rows.size());
  const bool below_trains = model_.image_path_trains();

  // Forward.
  std::vector<models::ImageFeatures> images = encode_images(ex, below_trains);
  models::PromptInput in = model_.prepare_prompt(ex.ids, images);  // (S, D) and positions
  models::LlamaActs la;
  lm.forward_train(in.embeddings.data<float>(), S, in.positions, la, spec_.checkpointing);
  std::vector<float> hrows(size_t(R * D)), logits(size_t(R * V));  // (R, D), (R, V)
  for (int64_t r = 0; r < R; ++r) std::copy_n(la.out.data() + rows[size_t(r)] * D, D, hrows.data() + r * D);
  lm.head().forward_train(hrows.data(), R, logits.data());
  int64_t count = 0;
  const double loss = ops::cross_entropy_forward_backward(logits.data(), targets.data(), R, V, &count, logits.data(),
                                                          grad_scale, kIgnore);

  // Backward: head on the supervised rows, scattered into the gradient of the decoder output.
  std::vector<float> dh(size_t(R * D));
  lm.head().backward(hrows.data(), logits.data(), R, dh.data());
  std::vector<float> dout(size_t(S * D), 0.0f);
  for (int64_t r = 0; r < R; ++r) std::copy_n(dh.data() + r * D, D, dout.data() + rows[size_t(r)] * D);
  const bool need_dx = lm.embed_trains() || below_trains;
  std::vector<float> dx(need_dx ? size_t(S * D) : 0);
  lm.backward(la, dout.data(), need_dx ? dx.data() : nullptr);

  const int32_t img_tok = model_.has_vision() ? model_.image_token_id() : -1;
  if (lm.embed_trains())
    for (int64_t t = 0; t < S; ++t)
      if (ex.ids[size_t(t)] != img_tok) lm.embed_backward(&ex.ids[size_t(t)], 1, dx.data() + t * D);
  if (below_trains) {
    std::vector<int64_t> img_pos;
    for (int64_t t = 0; t < S; ++t)
      if (ex.ids[size_t(t)] == img_tok) img_pos.push_back(t);
    size_t next = 0;
    for (size_t i = 0; i < images.size(); ++i) {
      const int64_t n = images[i].n_tokens();
      std::vector<float> dy(size_t(n * D));  // (n, D): gradient of this image's embeddings
      for (int64_t j = 0; j < n; ++j) std::copy_n(dx.data() + img_pos[next++] * D, D, dy.data() + j * D);
      model_.encode_image_backward(image_acts_[i], dy.data());
    }
  }
  image_acts_.clear();
  return {loss, count};
}

double TrainableVlm::loss_only(const Example& ex, int64_t* count) {
  check_example(ex);
  std::vector<int64_t> rows;
  std::vector<int32_t> targets;
  supervised_rows(ex, rows, targets);
  if (count) *count = int64_t(rows.size());
  if (rows.empty()) return 0.0;
  const models::Llama& lm = model_.text();
  const int64_t S = int64_t(ex.ids.size()), D = lm.hidden_size(), V = lm.vocab_size(), R = int64_t(rows.size());
  std::vector<models::ImageFeatures> images = encode_images(ex, false);
  models::PromptInput in = model_.prepare_prompt(ex.ids, images);
  Tensor& x = in.embeddings;
  nn::KVCache cache = lm.make_cache(S);
  lm.forward(x.data<float>(), S, in.positions, cache, nullptr, false);  // x becomes the final-normed hidden states
  std::vector<float> hrows(size_t(R * D)), logits(size_t(R * V));
  for (int64_t r = 0; r < R; ++r) std::copy_n(x.data<float>() + rows[size_t(r)] * D, D, hrows.data() + r * D);
  lm.head().forward(hrows.data(), R, logits.data());
  return ops::cross_entropy_forward_backward(logits.data(), targets.data(), R, V, nullptr, nullptr, 1.0f, kIgnore);
}

}  // namespace iris::train
