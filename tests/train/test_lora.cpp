// LoRA adapters end to end on the shared llava refcase: a fresh adapter (B = 0) leaves the logits unchanged; a
// trained adapter saved as PEFT saves it (names, adapter_config.json, modules_to_save) and loaded onto a fresh model
// gives the same logits; merging gives the logits of the adapter; a merged model saved and reloaded gives them
// again; adapters in the newer transformers layout load too; bad adapters are clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "io/npy.h"
#include "io/safetensors.h"
#include "train/lora.h"
#include "train/trainable.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

using iris::test::fresh_dir;

namespace {

std::string llava_dir() { return test::shared_dir() + "/refcases/llava"; }

std::unique_ptr<models::Vlm> load_llava() { return models::Vlm::load(llava_dir(), {models::WeightPrecision::F32}); }

train::Example llava_example() {
  train::Example ex;
  Tensor ids = io::load_npy(llava_dir() + "/input_ids.npy").to(DType::I64);
  for (int64_t i = 0; i < ids.numel(); ++i) ex.ids.push_back(int32_t(ids.data<int64_t>()[i]));
  ex.labels.assign(ex.ids.size(), -100);
  for (size_t t = ex.ids.size() - 8; t < ex.ids.size(); ++t) ex.labels[t] = ex.ids[t];
  Tensor px = io::load_npy(llava_dir() + "/pixel_values.npy");
  ex.pixel_values.emplace_back(px.data<float>(), px.data<float>() + px.numel());
  return ex;
}

// All logits (S, V) through the inference path.
std::vector<float> logits_of(models::Vlm& m, const train::Example& ex) {
  std::vector<models::ImageFeatures> images;
  const int64_t s = m.config().llava.vision.image_size;
  for (const auto& px : ex.pixel_values) {
    models::ImagePixels p;
    p.values = Tensor::from_vector(px, {3, s, s});
    images.push_back(m.encode_image(p));
  }
  Tensor x = m.embed_prompt(ex.ids, images);
  const int64_t S = int64_t(ex.ids.size());
  nn::KVCache cache = m.text().make_cache(S);
  std::vector<float> logits(size_t(S * m.text().vocab_size()));
  m.text().forward(x.data<float>(), S, models::Positions::range(0, S), cache, logits.data(), true);
  return logits;
}

// A few SGD steps so that every adapter (and the projector) moves away from its initial values.
void train_a_bit(train::TrainableVlm& tv, const train::Example& ex) {
  for (int s = 0; s < 3; ++s) {
    tv.zero_grad();
    tv.forward_backward(ex, 1.0f / 8);
    for (train::Param* p : tv.params())
      for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data<float>()[i] -= 0.5f * p->grad.data<float>()[i];
    tv.weights_updated();
  }
}

train::TrainSpec lora_spec() {
  train::TrainSpec spec = train::stage_spec(2, 4);  // projector full, LoRA rank 4 on every decoder linear
  spec.lora.alpha = 8;
  spec.lora.targets = {"q_proj", "v_proj", "down_proj"};
  return spec;
}

}  // namespace

TEST(Lora, FreshAdapterLeavesLogitsUnchanged) {
  auto m = load_llava();
  train::Example ex = llava_example();
  const std::vector<float> base = logits_of(*m, ex);
  train::TrainSpec spec;
  spec.train_projector = false;
  spec.lora.rank = 8;
  spec.lora.components = {"vision", "projector", "llm"};
  train::TrainableVlm tv(*m, spec);
  EXPECT_EQ(tv.params().size(), 2u * (2 * 6 + 2 + 2 * 7));  // A and B on 2 vision layers, 2 projector, 2 decoder
  EXPECT_EQ(test::max_abs_diff(base, logits_of(*m, ex)), 0.0);
  // A follows PEFT's kaiming-uniform bound 1/sqrt(in); B is zero.
  for (train::Param* p : tv.params()) {
    const float* v = p->value.data<float>();
    const bool is_b = p->name.find(".lora_B.") != std::string::npos;
    const double bound = 1.0 / std::sqrt(double(p->value.dim(1)));
    double mx = 0;
    for (int64_t i = 0; i < p->value.numel(); ++i) mx = std::max(mx, std::fabs(double(v[i])));
    if (is_b)
      EXPECT_EQ(mx, 0.0) << p->name;
    else
      EXPECT_TRUE(mx <= bound && mx > 0.5 * bound) << p->name << " max " << mx << " bound " << bound;
  }
}

TEST(Lora, SaveLoadGivesTheSameLogits) {
  train::Example ex = llava_example();
  auto m = load_llava();
  train::TrainableVlm tv(*m, lora_spec());
  train_a_bit(tv, ex);
  const std::vector<float> trained = logits_of(*m, ex);
  const std::string dir = fresh_dir("adapter");
  train::save_peft_adapter(dir, tv, "llava-hf/llava-1.5-7b-hf");

  // PEFT's file layout and names.
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["base_model_name_or_path"], "llava-hf/llava-1.5-7b-hf");
  EXPECT_EQ(cfg["modules_to_save"], nlohmann::json::array({"multi_modal_projector"}));
  auto st = io::SafetensorsFile::open(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(st->has("base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(st->has("base_model.model.language_model.model.layers.1.mlp.down_proj.lora_B.weight"));
  EXPECT_TRUE(st->has("base_model.model.multi_modal_projector.linear_2.bias"));
  EXPECT_FALSE(st->has("base_model.model.language_model.model.layers.0.self_attn.k_proj.lora_A.weight"));
  EXPECT_EQ(st->tensors().size(), 2u * 2 * 3 + 4);
  EXPECT_EQ(st->info("base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight").shape,
            (Shape{4, 64}));
  // target_modules: PEFT full-matches it against module paths: every adapted module, nothing else.
  const std::regex target(cfg["target_modules"].get<std::string>());
  for (const auto& [module, comp] : tv.adapted_modules()) EXPECT_TRUE(std::regex_match(module, target)) << module;
  for (const char* other : {"language_model.model.layers.0.self_attn.k_proj", "language_model.lm_head",
                            "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
                            "multi_modal_projector.linear_1"})
    EXPECT_FALSE(std::regex_match(std::string(other), target)) << other;

  auto fresh = load_llava();
  EXPECT_GT(test::max_abs_diff(trained, logits_of(*fresh, ex)), 1e-3);  // the adapter matters
  train::apply_lora_adapter(*fresh, dir);
  EXPECT_EQ(test::max_abs_diff(trained, logits_of(*fresh, ex)), 0.0);
}

TEST(Lora, MergeGivesTheLogitsOfTheAdapter) {
  train::Example ex = llava_example();
  const std::string dir = fresh_dir("adapter_merge");
  {
    auto m = load_llava();
    train::TrainableVlm tv(*m, lora_spec());
    train_a_bit(tv, ex);
    train::save_peft_adapter(dir, tv);
  }
  auto m = load_llava();
  train::apply_lora_adapter(*m, dir);
  const std::vector<float> with_adapter = logits_of(*m, ex);
  EXPECT_EQ(train::merge_lora(*m), 2 * 3);
  const std::vector<float> merged = logits_of(*m, ex);
  const double d = test::max_abs_diff(with_adapter, merged);
  std::cout << "[lora] merged vs adapter logits max|diff| " << d << "\n";
  EXPECT_LE(d, 1e-5);
  // Saved as an HF folder and reloaded: the merged weights (and every other tensor) come back.
  const std::string out = fresh_dir("merged_model");
  models::Vlm::save_folder(out, m->config(), m->state(), DType::F32);
  auto reloaded = models::Vlm::load(out, {models::WeightPrecision::F32});
  EXPECT_EQ(test::max_abs_diff(merged, logits_of(*reloaded, ex)), 0.0);
  EXPECT_EQ(io::Checkpoint::open(out).size(), io::Checkpoint::open(llava_dir()).size());
}

// transformers >= 4.52 names LLaVA's modules "model.language_model.*", "model.multi_modal_projector.*": an adapter
// saved against that layout loads onto a model in the older layout (and the reverse, by the same mapping).
TEST(Lora, NewerTransformersLayoutLoads) {
  train::Example ex = llava_example();
  const std::string dir = fresh_dir("adapter_old"), dir_new = fresh_dir("adapter_new");
  auto m = load_llava();
  train::TrainableVlm tv(*m, lora_spec());
  train_a_bit(tv, ex);
  const std::vector<float> trained = logits_of(*m, ex);
  train::save_peft_adapter(dir, tv);
  auto st = io::SafetensorsFile::open(dir + "/adapter_model.safetensors");
  io::NamedTensors renamed;
  for (const auto& [name, info] : st->tensors()) {
    std::string n = name;
    for (auto [from, to] : {std::pair<std::string, std::string>{"base_model.model.language_model.model.",
                                                                "base_model.model.model.language_model."},
                            {"base_model.model.multi_modal_projector.", "base_model.model.model.multi_modal_projector."}})
      if (n.rfind(from, 0) == 0) n = to + n.substr(from.size());
    renamed.emplace_back(n, st->get(info));
  }
  fs::create_directories(dir_new);
  io::save_safetensors(dir_new + "/adapter_model.safetensors", renamed);
  fs::copy_file(dir + "/adapter_config.json", dir_new + "/adapter_config.json");
  auto fresh = load_llava();
  train::apply_lora_adapter(*fresh, dir_new);
  EXPECT_EQ(test::max_abs_diff(trained, logits_of(*fresh, ex)), 0.0);
}

TEST(Lora, BadAdaptersAreErrors) {
  train::Example ex = llava_example();
  const std::string good = fresh_dir("adapter_good");
  {
    auto m = load_llava();
    train::TrainableVlm tv(*m, lora_spec());
    train::save_peft_adapter(good, tv);
  }
  auto expect_error = [&](const std::string& dir, const std::string& needle) {
    auto m = load_llava();
    try {
      train::apply_lora_adapter(*m, dir);
      ADD_FAILURE() << "no error for " << dir;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(fresh_dir("nowhere"), "adapter_config.json");
  // DoRA.
  const std::string dora = fresh_dir("adapter_dora");
  fs::create_directories(dora);
  fs::copy_file(good + "/adapter_model.safetensors", dora + "/adapter_model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(good + "/adapter_config.json"));
  cfg["use_dora"] = true;
  test::write_file(dora + "/adapter_config.json", cfg.dump());
  expect_error(dora, "DoRA");
  // A module the model does not have, and a wrong shape.
  auto st = io::SafetensorsFile::open(good + "/adapter_model.safetensors");
  for (int variant = 0; variant < 2; ++variant) {
    io::NamedTensors t;
    for (const auto& [name, info] : st->tensors()) t.emplace_back(name, st->get(info));
    if (variant == 0) {
      t.emplace_back("base_model.model.language_model.model.layers.7.self_attn.q_proj.lora_A.weight",
                     Tensor::zeros({4, 64}));
      t.emplace_back("base_model.model.language_model.model.layers.7.self_attn.q_proj.lora_B.weight",
                     Tensor::zeros({64, 4}));
    } else {
      for (auto& [name, tensor] : t)
        if (name == "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight")
          tensor = Tensor::zeros({4, 63});
    }
    const std::string d = fresh_dir("adapter_bad" + std::to_string(variant));
    fs::create_directories(d);
    io::save_safetensors(d + "/adapter_model.safetensors", t);
    fs::copy_file(good + "/adapter_config.json", d + "/adapter_config.json");
    expect_error(d, variant == 0 ? "layers.7.self_attn.q_proj" : "do not fit");
  }
}
