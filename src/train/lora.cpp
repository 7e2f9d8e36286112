// LoRA adapters: PEFT initialisation, adapter_config.json + adapter_model.safetensors writing and reading, merging.
#include "train/lora.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/file.h"
#include "io/safetensors.h"
#include "train/trainable.h"

namespace iris::train {

namespace fs = std::filesystem;

namespace {

const char* kPeftPrefix = "base_model.model.";

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::string regex_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) r += '\\';
    r += c;
  }
  return r;
}

// PEFT's target_modules as a regular expression (PEFT full-matches a string against each module path): per
// component, the common prefix of its adapted modules followed by their short names, so that an adapter on the
// decoder's q_proj does not also claim the vision tower's q_proj.
std::string target_pattern(const std::vector<std::pair<std::string, std::string>>& modules) {
  std::map<std::string, std::vector<std::string>> by_comp;  // component -> modules
  for (const auto& [m, comp] : modules) by_comp[comp].push_back(m);
  std::vector<std::string> alts;
  for (const auto& [comp, mods] : by_comp) {
    std::vector<std::string> heads, names;
    for (const auto& m : mods) {
      if (module_short_name(m) == "lm_head") {
        heads.push_back(regex_escape(m));
        continue;
      }
      std::string n = module_short_name(m);
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    }
    for (const auto& h : heads) alts.push_back(h);
    if (names.empty()) continue;
    std::string prefix;
    bool first = true;
    for (const auto& m : mods) {
      if (module_short_name(m) == "lm_head") continue;
      if (first) {
        prefix = m;
        first = false;
        continue;
      }
      size_t k = 0;
      while (k < prefix.size() && k < m.size() && prefix[k] == m[k]) ++k;
      prefix.resize(k);
    }
    prefix.resize(prefix.rfind('.') == std::string::npos ? 0 : prefix.rfind('.') + 1);  // whole path segments
    std::string group;
    for (const auto& n : names) {
      if (!group.empty()) group += '|';
      group += regex_escape(n);
    }
    alts.push_back(regex_escape(prefix) + "(.*\\.)?(" + group + ")");
  }
  std::string r;
  for (const auto& a : alts) {
    if (!r.empty()) r += '|';
    r += a;
  }
  return alts.size() > 1 ? "(" + r + ")" : r;
}

// The top-level module of a weight name, for modules_to_save ("multi_modal_projector", "vision_tower", ...).
std::string top_module(const std::string& weight) {
  for (const char* m : {"multi_modal_projector", "visual.merger", "vision_tower", "language_model"}) {
    size_t p = weight.find(m);
    if (p != std::string::npos) return weight.substr(0, p + std::string(m).size());
  }
  return weight.substr(0, weight.find('.'));
}

}  // namespace

std::unique_ptr<nn::LoraAdapter> make_lora_adapter(int64_t in, int64_t out, int rank, float scale,
                                                   std::mt19937_64& rng) {
  IRIS_CHECK(rank > 0 && in > 0 && out > 0, "LoRA adapter: bad shape rank ", rank, " in ", in, " out ", out);
  auto a = std::make_unique<nn::LoraAdapter>();
  a->A = Tensor::empty({rank, in});
  a->B = Tensor::zeros({out, rank});
  a->scale = scale;
  // kaiming_uniform_(a = sqrt 5): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(double(in));
  float* A = a->A.data<float>();
  for (int64_t i = 0; i < rank * in; ++i) {
    const double u = double(rng() >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    A[i] = float((2.0 * u - 1.0) * bound);
  }
  return a;
}

std::string lora_target_name(const std::string& n) {
  static const std::map<std::string, std::string> short_names = {
      {"q", "q_proj"}, {"k", "k_proj"}, {"v", "v_proj"}, {"o", "o_proj"},
      {"gate", "gate_proj"}, {"up", "up_proj"}, {"down", "down_proj"}};
  auto it = short_names.find(n);
  return it == short_names.end() ? n : it->second;
}

std::string module_short_name(const std::string& module) {
  size_t p = module.rfind('.');
  return p == std::string::npos ? module : module.substr(p + 1);
}

std::string canonical_name(const std::string& name) {
  static const std::pair<const char*, const char*> maps[] = {
      {"model.language_model.", "language_model.model."},
      {"model.vision_tower.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."},
      {"lm_head.", "language_model.lm_head."}};
  for (const auto& [from, to] : maps)
    if (starts_with(name, from)) return to + name.substr(std::string(from).size());
  return name;
}

void save_peft_adapter(const std::string& dir, const TrainableVlm& tv, const std::string& base_model) {
  const LoraSpec& ls = tv.spec().lora;
  io::NamedTensors tensors = tv.adapter_state();
  const auto modules = tv.adapted_modules();
  std::vector<std::string> to_save;
  for (const auto& [name, t] : tv.trained_base_state()) {
    tensors.emplace_back(kPeftPrefix + name, t);
    std::string m = top_module(name);
    if (std::find(to_save.begin(), to_save.end(), m) == to_save.end()) to_save.push_back(m);
  }
  nlohmann::json j;
  j["alpha_pattern"] = nlohmann::json::object();
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["lora_alpha"] = ls.alpha;
  j["lora_dropout"] = ls.dropout;
  j["modules_to_save"] = to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(to_save);
  j["peft_type"] = "LORA";
  j["r"] = ls.rank;
  j["rank_pattern"] = nlohmann::json::object();
  j["revision"] = nullptr;
  j["target_modules"] = modules.empty() ? nlohmann::json(nullptr)
                                        : nlohmann::json(target_pattern(modules));
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = ls.use_rslora;
  fs::create_directories(dir);
  io::write_file_atomic((fs::path(dir) / "adapter_config.json").string(), j.dump(2) + "\n");
  io::save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors);
}

void apply_lora_adapter(models::Vlm& model, const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string st_path = (fs::path(dir) / "adapter_model.safetensors").string();
  IRIS_CHECK(fs::exists(cfg_path), "LoRA adapter folder '", dir, "' has no adapter_config.json");
  IRIS_CHECK(fs::exists(st_path), "LoRA adapter folder '", dir, "' has no adapter_model.safetensors (a .bin adapter "
             "is not supported)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_file(cfg_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(cfg_path, ": ", e.what()));
  }
  auto get_or = [&](const char* k, auto dflt) {
    return j.contains(k) && !j[k].is_null() ? j[k].get<decltype(dflt)>() : dflt;
  };
  IRIS_CHECK(get_or("peft_type", std::string("LORA")) == "LORA", cfg_path, ": peft_type '", j.value("peft_type", ""),
             "', expected LORA");
  IRIS_CHECK(!get_or("use_dora", false), cfg_path, ": DoRA adapters are not supported");
  IRIS_CHECK(!get_or("fan_in_fan_out", false), cfg_path, ": fan_in_fan_out adapters are not supported");
  IRIS_CHECK(!j.contains("alpha_pattern") || j["alpha_pattern"].is_null() || j["alpha_pattern"].empty(), cfg_path,
             ": alpha_pattern is not supported");
  const double alpha = get_or("lora_alpha", 8.0);
  const bool rslora = get_or("use_rslora", false);

  std::map<std::string, nn::Linear*> linears;  // canonical module -> layer
  for (const auto& s : model.linear_slots()) linears[canonical_name(s.module)] = s.linear;
  std::vector<nn::ParamSlot> slots = model.all_param_slots();
  std::map<std::string, nn::ParamSlot*> weights;  // canonical weight name -> slot
  for (auto& s : slots) weights[canonical_name(s.name)] = &s;

  auto file = io::SafetensorsFile::open(st_path);
  std::map<std::string, std::pair<Tensor, Tensor>> ab;  // module -> (A, B)
  for (const auto& [key, info] : file->tensors()) {
    IRIS_CHECK(starts_with(key, kPeftPrefix), st_path, ": tensor '", key, "' does not start with '", kPeftPrefix, "'");
    std::string name = canonical_name(key.substr(std::string(kPeftPrefix).size()));
    IRIS_CHECK(name.find("lora_embedding_") == std::string::npos && name.find("lora_magnitude") == std::string::npos,
               st_path, ": tensor '", key, "': only LoRA on linear layers is supported");
    size_t pa = name.find(".lora_A."), pb = name.find(".lora_B.");
    if (pa != std::string::npos || pb != std::string::npos) {
      const bool is_a = pa != std::string::npos;
      const std::string module = name.substr(0, is_a ? pa : pb);
      if (!linears.count(module)) {
        // Vision layers past the feature layer are not loaded (LLaVA never runs them): their adapters do nothing.
        IRIS_CHECK(starts_with(module, "vision_tower."), st_path, ": tensor '", key, "' names module '", module,
                   "', which is not a linear layer of this model");
        continue;
      }
      Tensor t = file->get(info).to(DType::F32);
      (is_a ? ab[module].first : ab[module].second) = t.clone();
      continue;
    }
    auto it = weights.find(name);
    if (it == weights.end()) {
      IRIS_CHECK(starts_with(name, "vision_tower."), st_path, ": tensor '", key, "' is not a weight of this model");
      continue;
    }
    nn::ParamSlot& s = *it->second;
    Tensor t = file->get(info);
    IRIS_CHECK(t.shape() == s.value.shape(), st_path, ": tensor '", key, "' has shape ", shape_str(t.shape()),
               ", the model's weight has ", shape_str(s.value.shape()));
    s.bind(t.to(DType::F32).clone(), nullptr, model.precision());
  }
  for (auto& [module, pair] : ab) {
    auto& [A, B] = pair;
    IRIS_CHECK(A.defined() && B.defined(), st_path, ": module '", module, "' has lora_", A.defined() ? "A" : "B",
               " but no lora_", A.defined() ? "B" : "A");
    nn::Linear& l = *linears.at(module);
    IRIS_CHECK(A.ndim() == 2 && B.ndim() == 2 && A.dim(1) == l.in_features() && B.dim(0) == l.out_features() &&
                   A.dim(0) == B.dim(1) && A.dim(0) > 0,
               st_path, ": module '", module, "': lora_A ", shape_str(A.shape()), " and lora_B ", shape_str(B.shape()),
               " do not fit a (", l.out_features(), ", ", l.in_features(), ") linear (expected (r, ",
               l.in_features(), ") and (", l.out_features(), ", r))");
    auto a = std::make_unique<nn::LoraAdapter>();
    const double r = double(A.dim(0));
    a->scale = float(rslora ? alpha / std::sqrt(r) : alpha / r);
    a->A = A;
    a->B = B;
    l.lora = std::move(a);
  }
}

int merge_lora(models::Vlm& model) {
  int n = 0;
  for (const auto& s : model.linear_slots()) {
    nn::Linear& l = *s.linear;
    if (!l.lora) continue;
    const nn::LoraAdapter& a = *l.lora;
    Tensor W = l.w.tensor().dtype() == DType::F32 ? l.w.tensor().clone() : l.w.tensor().to(DType::F32);
    // W (out, in) += scale * B (out, r) A (r, in)
    cpu::gemm_f32(false, false, l.out_features(), l.in_features(), a.rank(), a.scale, a.B.data<float>(), a.rank(),
                  a.A.data<float>(), l.in_features(), 1.0f, W.data<float>(), l.in_features());
    l.w = cpu::LinearWeight(W, l.w.precision());
    l.lora.reset();
    ++n;
  }
  return n;
}

}  // namespace iris::train
