// config.json parsing. Every absent key takes the value Hugging Face's config class gives it (transformers 4.47).
#include "models/config.h"

#include <cmath>

#include "io/file.h"
#include "tensor/error.h"

namespace iris::models {

using nlohmann::json;

namespace {

// Reads j[key] into out when present and not null; a value of the wrong type is an error naming the key.
template <typename T>
void get_opt(const json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    throw Error(str_cat("config key '", key, "' has the wrong type: ", it->dump()));
  }
}

void check_positive(const char* what, long v) { IRIS_CHECK(v > 0, "config: ", what, " must be positive, got ", v); }

}  // namespace

namespace {

// The fields CLIP's and SigLIP's vision configs share (the same names in Hugging Face's classes).
template <typename C>
void read_vit_fields(const json& j, C& c) {
  get_opt(j, "hidden_size", c.hidden_size);
  get_opt(j, "intermediate_size", c.intermediate_size);
  get_opt(j, "num_hidden_layers", c.num_hidden_layers);
  get_opt(j, "num_attention_heads", c.num_attention_heads);
  get_opt(j, "num_channels", c.num_channels);
  get_opt(j, "image_size", c.image_size);
  get_opt(j, "patch_size", c.patch_size);
  get_opt(j, "hidden_act", c.hidden_act);
  get_opt(j, "layer_norm_eps", c.layer_norm_eps);
}

template <typename C>
void validate_vit_fields(const C& c) {
  check_positive("vision hidden_size", c.hidden_size);
  check_positive("vision intermediate_size", c.intermediate_size);
  check_positive("vision num_hidden_layers", c.num_hidden_layers);
  check_positive("vision num_attention_heads", c.num_attention_heads);
  check_positive("vision num_channels", c.num_channels);
  check_positive("vision image_size", c.image_size);
  check_positive("vision patch_size", c.patch_size);
  IRIS_CHECK(c.hidden_size % c.num_attention_heads == 0, "vision hidden_size ", c.hidden_size,
             " is not divisible by num_attention_heads ", c.num_attention_heads);
  IRIS_CHECK(c.image_size % c.patch_size == 0, "vision image_size ", c.image_size,
             " is not a multiple of patch_size ", c.patch_size);
}

template <typename C>
json vit_fields_json(const C& c, const std::string& model_type) {
  return json{{"model_type", model_type},           {"hidden_size", c.hidden_size},
              {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads}, {"num_channels", c.num_channels},
              {"image_size", c.image_size},             {"patch_size", c.patch_size},
              {"hidden_act", c.hidden_act},             {"layer_norm_eps", c.layer_norm_eps}};
}

}  // namespace

ClipVisionConfig ClipVisionConfig::from_json(const json& j) {
  ClipVisionConfig c;
  IRIS_CHECK(j.is_object(), "vision_config must be an object");
  read_vit_fields(j, c);
  if (j.contains("model_type") && j["model_type"].is_string()) {
    std::string mt = j["model_type"];
    IRIS_CHECK(mt == "clip_vision_model" || mt == "clip", "vision_config model_type '", mt,
               "' is not supported (supported: clip_vision_model)");
  }
  c.validate();
  return c;
}

void ClipVisionConfig::validate() const {
  validate_vit_fields(*this);
}

SiglipVisionConfig SiglipVisionConfig::from_json(const json& j) {
  SiglipVisionConfig c;
  IRIS_CHECK(j.is_object(), "vision_config must be an object");
  read_vit_fields(j, c);
  get_opt(j, "model_type", c.model_type);
  c.validate();
  return c;
}

void SiglipVisionConfig::validate() const {
  validate_vit_fields(*this);
}

json SiglipVisionConfig::to_json() const {
  return vit_fields_json(*this, model_type);
}

json ClipVisionConfig::to_json() const {
  return vit_fields_json(*this, "clip_vision_model");
}

LlamaConfig LlamaConfig::from_json(const json& j) {
  LlamaConfig c;
  IRIS_CHECK(j.is_object(), "text config must be an object");
  if (j.contains("model_type") && j["model_type"].is_string()) {
    std::string mt = j["model_type"];
    // Qwen2-VL keeps its text fields at the top level of its config (model_type qwen2_vl / qwen2_5_vl), or in a
    // text_config in newer transformers.
    if (mt == "qwen2_vl" || mt == "qwen2_5_vl" || mt == "qwen2_vl_text" || mt == "qwen2_5_vl_text") mt = "qwen2";
    IRIS_CHECK(mt == "llama" || mt == "qwen2", "text model_type '", mt, "' is not supported (supported: llama, qwen2)");
    c.model_type = mt;
  }
  if (c.model_type == "qwen2") {  // Qwen2Config's defaults
    c.attention_bias = true;      // q, k, v always have biases in Qwen2
    c.vocab_size = 151936;
    c.intermediate_size = 22016;
    c.max_position_embeddings = 32768;
    c.bos_token_id.reset();
    c.eos_token_ids.clear();
  }
  get_opt(j, "vocab_size", c.vocab_size);
  get_opt(j, "hidden_size", c.hidden_size);
  get_opt(j, "intermediate_size", c.intermediate_size);
  get_opt(j, "num_hidden_layers", c.num_hidden_layers);
  get_opt(j, "num_attention_heads", c.num_attention_heads);
  get_opt(j, "num_key_value_heads", c.num_key_value_heads);
  get_opt(j, "head_dim", c.head_dim);
  get_opt(j, "max_position_embeddings", c.max_position_embeddings);
  get_opt(j, "hidden_act", c.hidden_act);
  get_opt(j, "rms_norm_eps", c.rms_norm_eps);
  get_opt(j, "rope_theta", c.rope_theta);
  if (c.model_type == "llama") {
    get_opt(j, "attention_bias", c.attention_bias);
    get_opt(j, "mlp_bias", c.mlp_bias);
  } else {
    get_opt(j, "use_sliding_window", c.use_sliding_window);
    get_opt(j, "sliding_window", c.sliding_window);
    get_opt(j, "max_window_layers", c.max_window_layers);
    if (j.contains("layer_types") && !j["layer_types"].is_null()) {
      IRIS_CHECK(j["layer_types"].is_array(), "layer_types must be a list");
      for (const auto& t : j["layer_types"]) {
        IRIS_CHECK(t.is_string(), "layer_types must be a list of strings");
        c.layer_types.push_back(t.get<std::string>());
      }
    }
  }
  get_opt(j, "tie_word_embeddings", c.tie_word_embeddings);
  if (c.num_key_value_heads <= 0) c.num_key_value_heads = c.num_attention_heads;
  // Qwen2's attention ignores a head_dim field: heads are always hidden_size / num_attention_heads.
  if ((c.head_dim <= 0 || c.model_type == "qwen2") && c.num_attention_heads > 0)
    c.head_dim = c.hidden_size / c.num_attention_heads;
  if (j.contains("bos_token_id")) {
    if (j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"].get<int>();
    else if (j["bos_token_id"].is_null()) c.bos_token_id.reset();
  }
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids = {e.get<int>()};
    else if (e.is_array()) c.eos_token_ids = e.get<std::vector<int>>();
    else if (e.is_null()) c.eos_token_ids.clear();
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const json& r = j["rope_scaling"];
    RopeScaling& s = c.rope_scaling;
    // transformers copies the legacy "type" over "rope_type" when both are present.
    get_opt(r, "rope_type", s.type);
    get_opt(r, "type", s.type);
    get_opt(r, "factor", s.factor);
    get_opt(r, "low_freq_factor", s.low_freq_factor);
    get_opt(r, "high_freq_factor", s.high_freq_factor);
    get_opt(r, "original_max_position_embeddings", s.original_max_position_embeddings);
    if (r.contains("mrope_section")) {
      get_opt(r, "mrope_section", c.mrope_section);
      IRIS_CHECK(!c.mrope_section.empty(), "rope_scaling mrope_section is empty");
      for (int v : c.mrope_section) IRIS_CHECK(v >= 0, "rope_scaling mrope_section has a negative entry ", v);
    }
    if (s.type == "mrope") s.type = "default";  // transformers reads "mrope" as default RoPE over three streams
    IRIS_CHECK(s.type == "default" || s.type == "linear" || s.type == "llama3", "rope_scaling type '", s.type,
               "' is not supported (supported: linear, llama3)");
    IRIS_CHECK(s.factor > 0, "rope_scaling factor must be positive, got ", s.factor);
  }
  c.validate();
  return c;
}

void LlamaConfig::validate() const {
  check_positive("vocab_size", vocab_size);
  check_positive("hidden_size", hidden_size);
  check_positive("intermediate_size", intermediate_size);
  check_positive("num_hidden_layers", num_hidden_layers);
  check_positive("num_attention_heads", num_attention_heads);
  check_positive("num_key_value_heads", num_key_value_heads);
  check_positive("head_dim", head_dim);
  check_positive("max_position_embeddings", max_position_embeddings);
  IRIS_CHECK(num_attention_heads % num_key_value_heads == 0, "num_attention_heads ", num_attention_heads,
             " is not a multiple of num_key_value_heads ", num_key_value_heads);
  IRIS_CHECK(head_dim % 2 == 0, "head_dim must be even for rotary embeddings, got ", head_dim);
  IRIS_CHECK(hidden_act == "silu" || hidden_act == "swish", "text hidden_act '", hidden_act,
             "' is not supported (supported: silu)");
  IRIS_CHECK(rope_theta > 0, "rope_theta must be positive");
  if (!mrope_section.empty()) {
    long sum = 0;
    for (int v : mrope_section) sum += v;
    IRIS_CHECK(sum == head_dim / 2, "rope_scaling mrope_section sums to ", sum, " but head_dim / 2 is ", head_dim / 2);
  }
  if (use_sliding_window) check_positive("sliding_window", sliding_window);
  if (!layer_types.empty()) {
    IRIS_CHECK(int(layer_types.size()) == num_hidden_layers, "layer_types lists ", layer_types.size(),
               " layers but num_hidden_layers is ", num_hidden_layers);
    for (const std::string& t : layer_types)
      IRIS_CHECK(t == "full_attention" || t == "sliding_attention", "layer_types: unknown attention type '", t,
                 "' (full_attention, sliding_attention)");
  }
}

int64_t LlamaConfig::layer_window(int il) const {
  if (!use_sliding_window) return 0;
  const bool sliding =
      layer_types.empty() ? il >= max_window_layers : layer_types[size_t(il)] == "sliding_attention";
  return sliding ? sliding_window : 0;
}

json LlamaConfig::to_json() const {
  json j{{"model_type", model_type},
         {"architectures", {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
         {"vocab_size", vocab_size},
         {"hidden_size", hidden_size},
         {"intermediate_size", intermediate_size},
         {"num_hidden_layers", num_hidden_layers},
         {"num_attention_heads", num_attention_heads},
         {"num_key_value_heads", num_key_value_heads},
         {"head_dim", head_dim},
         {"max_position_embeddings", max_position_embeddings},
         {"hidden_act", hidden_act},
         {"rms_norm_eps", rms_norm_eps},
         {"rope_theta", rope_theta},
         {"attention_bias", attention_bias},
         {"mlp_bias", mlp_bias},
         {"use_sliding_window", use_sliding_window},
         {"sliding_window", sliding_window},
         {"max_window_layers", max_window_layers},
         {"tie_word_embeddings", tie_word_embeddings},
         {"torch_dtype", "float32"}};
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  j["eos_token_id"] = eos_token_ids.size() == 1 ? json(eos_token_ids[0]) : json(eos_token_ids);
  if (!layer_types.empty()) j["layer_types"] = layer_types;
  if (!mrope_section.empty()) {
    j["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", mrope_section}};
  } else if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  return j;
}

std::vector<float> LlamaConfig::rope_inv_freq() const {
  const int half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), evaluated in float32.
    float e = float(2 * i) / float(head_dim);
    inv[size_t(i)] = 1.0f / std::pow(float(rope_theta), e);
  }
  const RopeScaling& s = rope_scaling;
  if (s.type == "linear") {
    for (float& f : inv) f = float(f / s.factor);
  } else if (s.type == "llama3") {
    const double old_len = s.original_max_position_embeddings;
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv) {
      double wavelen = 2 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = float(f / s.factor);
      } else {
        double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = float((1 - smooth) * f / s.factor + smooth * f);
      }
    }
  }
  return inv;
}

int LlavaConfig::feature_layer_index() const {
  int n = vision.num_hidden_layers;
  int idx = vision_feature_layer < 0 ? n + 1 + vision_feature_layer : vision_feature_layer;
  return idx;
}

int LlavaConfig::image_tokens_per_image() const {
  int patches = vision.grid() * vision.grid();
  return vision_feature_select_strategy == "full" ? patches + 1 : patches;
}

LlavaConfig LlavaConfig::from_json(const json& j) {
  LlavaConfig c;
  // HF LlavaConfig: an absent vision_config is CLIP ViT-L/14-336; an absent text_config is LlamaConfig().
  c.vision.hidden_size = 1024;
  c.vision.intermediate_size = 4096;
  c.vision.num_hidden_layers = 24;
  c.vision.num_attention_heads = 16;
  c.vision.image_size = 336;
  c.vision.patch_size = 14;
  if (j.contains("vision_config") && !j["vision_config"].is_null())
    c.vision = ClipVisionConfig::from_json(j["vision_config"]);
  if (j.contains("text_config") && !j["text_config"].is_null()) c.text = LlamaConfig::from_json(j["text_config"]);
  get_opt(j, "projector_hidden_act", c.projector_hidden_act);
  get_opt(j, "multimodal_projector_bias", c.projector_bias);
  if (j.contains("vision_feature_layer")) {
    const json& v = j["vision_feature_layer"];
    IRIS_CHECK(v.is_number_integer(), "vision_feature_layer must be one integer (lists of layers are not supported), got ",
               v.dump());
    c.vision_feature_layer = v.get<int>();
  }
  get_opt(j, "vision_feature_select_strategy", c.vision_feature_select_strategy);
  get_opt(j, "image_token_index", c.image_token_index);
  if (j.contains("image_token_id") && j["image_token_id"].is_number_integer())  // newer transformers spelling
    c.image_token_index = j["image_token_id"].get<int>();
  if (j.contains("pad_token_id") && j["pad_token_id"].is_number_integer()) c.pad_token_id = j["pad_token_id"].get<int>();
  c.validate();
  return c;
}

void LlavaConfig::validate() const {
  vision.validate();
  text.validate();
  int idx = feature_layer_index();
  IRIS_CHECK(idx >= 0 && idx <= vision.num_hidden_layers, "vision_feature_layer ", vision_feature_layer,
             " is out of range for a vision tower with ", vision.num_hidden_layers, " layers");
  IRIS_CHECK(vision_feature_select_strategy == "default" || vision_feature_select_strategy == "full",
             "vision_feature_select_strategy '", vision_feature_select_strategy, "' is not one of default, full");
  IRIS_CHECK(image_token_index >= 0, "image_token_index must be >= 0, got ", image_token_index);
}

json LlavaConfig::to_json() const {
  json t = text.to_json();
  json j{{"architectures", {"LlavaForConditionalGeneration"}},
         {"model_type", "llava"},
         {"vision_config", vision.to_json()},
         {"text_config", t},
         {"projector_hidden_act", projector_hidden_act},
         {"multimodal_projector_bias", projector_bias},
         {"vision_feature_layer", vision_feature_layer},
         {"vision_feature_select_strategy", vision_feature_select_strategy},
         {"image_token_index", image_token_index},
         {"image_seq_length", image_tokens_per_image()},
         {"tie_word_embeddings", text.tie_word_embeddings},
         {"torch_dtype", "float32"}};
  if (pad_token_id) j["pad_token_id"] = *pad_token_id;
  return j;
}

const LlamaConfig& ModelConfig::text() const {
  if (arch == Architecture::Idefics3) return idefics3.text;
  return arch == Architecture::Qwen2VL || arch == Architecture::Qwen2_5VL ? qwen2_vl.text : llava.text;
}

LlamaConfig& ModelConfig::text() {
  if (arch == Architecture::Idefics3) return idefics3.text;
  return arch == Architecture::Qwen2VL || arch == Architecture::Qwen2_5VL ? qwen2_vl.text : llava.text;
}

// ---- Qwen2-VL -------------------------------------------------------------------------------------------

Qwen2VLVisionConfig Qwen2VLVisionConfig::from_json(const json& j, bool v25) {
  Qwen2VLVisionConfig c;
  IRIS_CHECK(j.is_object(), "vision_config must be an object");
  c.v25 = v25;
  get_opt(j, "depth", c.depth);
  get_opt(j, "num_heads", c.num_heads);
  get_opt(j, "in_chans", c.in_chans);
  get_opt(j, "in_channels", c.in_chans);
  get_opt(j, "patch_size", c.patch_size);
  get_opt(j, "spatial_merge_size", c.spatial_merge_size);
  get_opt(j, "temporal_patch_size", c.temporal_patch_size);
  if (!v25) {  // Qwen2VLVisionConfig: embed_dim, hidden_size (the merger's output), mlp_ratio
    int mlp_ratio = 4;
    c.hidden_act = "quick_gelu";
    get_opt(j, "embed_dim", c.embed_dim);
    get_opt(j, "hidden_size", c.out_dim);
    get_opt(j, "mlp_ratio", mlp_ratio);
    get_opt(j, "hidden_act", c.hidden_act);
    c.intermediate = c.embed_dim * mlp_ratio;
  } else {     // Qwen2_5_VLVisionConfig: hidden_size (the tower), out_hidden_size, intermediate_size, windows
    c.embed_dim = 3584;
    c.out_dim = 3584;
    c.intermediate = 3420;
    c.hidden_act = "silu";
    c.fullatt_block_indexes = {7, 15, 23, 31};
    get_opt(j, "hidden_size", c.embed_dim);
    get_opt(j, "out_hidden_size", c.out_dim);
    get_opt(j, "intermediate_size", c.intermediate);
    get_opt(j, "hidden_act", c.hidden_act);
    get_opt(j, "window_size", c.window_size);
    get_opt(j, "fullatt_block_indexes", c.fullatt_block_indexes);
  }
  c.validate();
  return c;
}

void Qwen2VLVisionConfig::validate() const {
  check_positive("vision depth", depth);
  check_positive("vision embed_dim", embed_dim);
  check_positive("vision output size", out_dim);
  check_positive("vision num_heads", num_heads);
  check_positive("vision MLP size", intermediate);
  check_positive("vision in_chans", in_chans);
  check_positive("vision patch_size", patch_size);
  check_positive("vision spatial_merge_size", spatial_merge_size);
  check_positive("vision temporal_patch_size", temporal_patch_size);
  IRIS_CHECK(embed_dim % num_heads == 0, "vision embed_dim ", embed_dim, " is not divisible by num_heads ", num_heads);
  IRIS_CHECK(head_dim() % 4 == 0, "vision head_dim ", head_dim(), " must be a multiple of 4 (2-D rotary embedding)");
  if (v25) {
    check_positive("vision window_size", window_size);
    const int unit = spatial_merge_size * patch_size;
    IRIS_CHECK(window_size % unit == 0 && window_size / unit >= 1, "vision window_size ", window_size,
               " is not a positive multiple of patch_size * spatial_merge_size = ", unit);
    for (int b : fullatt_block_indexes)
      IRIS_CHECK(b >= 0 && b < depth, "vision fullatt_block_indexes has ", b, ", outside [0, ", depth, ")");
  }
}

json Qwen2VLVisionConfig::to_json() const {
  json j{{"depth", depth},
         {"num_heads", num_heads},
         {"in_chans", in_chans},
         {"patch_size", patch_size},
         {"spatial_merge_size", spatial_merge_size},
         {"temporal_patch_size", temporal_patch_size},
         {"hidden_act", hidden_act}};
  if (!v25) {
    j["model_type"] = "qwen2_vl";
    j["embed_dim"] = embed_dim;
    j["hidden_size"] = out_dim;
    j["mlp_ratio"] = intermediate / embed_dim;
  } else {
    j["model_type"] = "qwen2_5_vl";
    j["hidden_size"] = embed_dim;
    j["out_hidden_size"] = out_dim;
    j["intermediate_size"] = intermediate;
    j["window_size"] = window_size;
    j["fullatt_block_indexes"] = fullatt_block_indexes;
    j["tokens_per_second"] = 2;
  }
  return j;
}

Qwen2VLConfig Qwen2VLConfig::from_json(const json& j, bool v25) {
  Qwen2VLConfig c;
  // transformers <= 4.51 keeps the text fields at the top level; later versions nest them in text_config.
  const json& tj = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
  json t = tj;
  t["model_type"] = "qwen2";
  c.text = LlamaConfig::from_json(t);
  IRIS_CHECK(!c.text.mrope_section.empty(), "config: a ", v25 ? "Qwen2.5-VL" : "Qwen2-VL",
             " model needs rope_scaling.mrope_section (M-RoPE)");
  IRIS_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), "config: vision_config is missing");
  c.vision = Qwen2VLVisionConfig::from_json(j["vision_config"], v25);
  for (const json* src : {&tj, &j}) {
    get_opt(*src, "image_token_id", c.image_token_id);
    get_opt(*src, "video_token_id", c.video_token_id);
    get_opt(*src, "vision_start_token_id", c.vision_start_token_id);
    get_opt(*src, "vision_end_token_id", c.vision_end_token_id);
  }
  IRIS_CHECK(c.vision.out_dim == c.text.hidden_size, "config: the vision merger outputs ", c.vision.out_dim,
             " values per token but the text hidden size is ", c.text.hidden_size);
  for (int id : {c.image_token_id, c.vision_start_token_id, c.vision_end_token_id})
    IRIS_CHECK(id >= 0 && id < c.text.vocab_size, "config: vision token id ", id, " is outside the vocabulary [0, ",
               c.text.vocab_size, ")");
  return c;
}

json Qwen2VLConfig::to_json() const {
  json j = text.to_json();
  const bool v25 = vision.v25;
  j["architectures"] = {v25 ? "Qwen2_5_VLForConditionalGeneration" : "Qwen2VLForConditionalGeneration"};
  j["model_type"] = v25 ? "qwen2_5_vl" : "qwen2_vl";
  j["vision_config"] = vision.to_json();
  j["image_token_id"] = image_token_id;
  j["video_token_id"] = video_token_id;
  j["vision_start_token_id"] = vision_start_token_id;
  j["vision_end_token_id"] = vision_end_token_id;
  return j;
}

// ---- Idefics3 / SmolVLM -----------------------------------------------------------------------------------

Idefics3Config Idefics3Config::from_json(const json& j, bool smolvlm) {
  Idefics3Config c;
  c.smolvlm = smolvlm;
  IRIS_CHECK(j.contains("text_config") && j["text_config"].is_object(), "config: text_config is missing");
  IRIS_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), "config: vision_config is missing");
  json t = j["text_config"];
  if (!t.contains("model_type") || !t["model_type"].is_string() || t["model_type"] != "qwen2") t["model_type"] = "llama";
  // The head is tied when the top-level tie_word_embeddings says so (Idefics3ForConditionalGeneration reads it).
  t["tie_word_embeddings"] = j.value("tie_word_embeddings", false);
  c.text = LlamaConfig::from_json(t);
  c.vision = SiglipVisionConfig::from_json(j["vision_config"]);
  get_opt(j, "scale_factor", c.scale_factor);
  get_opt(j, "image_token_id", c.image_token_id);
  check_positive("scale_factor", c.scale_factor);
  IRIS_CHECK(c.vision.grid() % c.scale_factor == 0, "config: a ", c.vision.grid(), "x", c.vision.grid(),
             " patch grid does not split by scale_factor ", c.scale_factor);
  IRIS_CHECK(c.image_token_id >= 0 && c.image_token_id < c.text.vocab_size, "config: image_token_id ",
             c.image_token_id, " is outside the vocabulary [0, ", c.text.vocab_size, ")");
  return c;
}

json Idefics3Config::to_json() const {
  json t = text.to_json();
  json j{{"architectures", {smolvlm ? "SmolVLMForConditionalGeneration" : "Idefics3ForConditionalGeneration"}},
         {"model_type", smolvlm ? "smolvlm" : "idefics3"},
         {"text_config", t},
         {"vision_config", vision.to_json()},
         {"scale_factor", scale_factor},
         {"image_token_id", image_token_id},
         {"tie_word_embeddings", text.tie_word_embeddings},
         {"torch_dtype", "float32"}};
  return j;
}

// ---- the registry -----------------------------------------------------------------------------------------

namespace {

// One row per family: the Hugging Face class names and model_type that select it, and how its config parses.
struct Family {
  Architecture arch;
  const char* class_name;
  const char* model_type;
  void (*parse)(const json& j, ModelConfig& m);
};

const Family kFamilies[] = {
    {Architecture::Llava, "LlavaForConditionalGeneration", "llava",
     [](const json& j, ModelConfig& m) { m.llava = LlavaConfig::from_json(j); }},
    {Architecture::Qwen2VL, "Qwen2VLForConditionalGeneration", "qwen2_vl",
     [](const json& j, ModelConfig& m) { m.qwen2_vl = Qwen2VLConfig::from_json(j, false); }},
    {Architecture::Qwen2_5VL, "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl",
     [](const json& j, ModelConfig& m) { m.qwen2_vl = Qwen2VLConfig::from_json(j, true); }},
    {Architecture::Idefics3, "Idefics3ForConditionalGeneration", "idefics3",
     [](const json& j, ModelConfig& m) { m.idefics3 = Idefics3Config::from_json(j, false); }},
    {Architecture::Idefics3, "SmolVLMForConditionalGeneration", "smolvlm",
     [](const json& j, ModelConfig& m) { m.idefics3 = Idefics3Config::from_json(j, true); }},
    {Architecture::Llama, "LlamaForCausalLM", "llama",
     [](const json& j, ModelConfig& m) { m.llava.text = LlamaConfig::from_json(j); }},
    {Architecture::Llama, "Qwen2ForCausalLM", "qwen2",
     [](const json& j, ModelConfig& m) { m.llava.text = LlamaConfig::from_json(j); }},
};

}  // namespace

std::string ModelConfig::architecture_name() const {
  if (arch == Architecture::Llama) return text().model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  if (arch == Architecture::Idefics3)
    return idefics3.smolvlm ? "SmolVLMForConditionalGeneration" : "Idefics3ForConditionalGeneration";
  for (const Family& f : kFamilies)
    if (f.arch == arch) return f.class_name;
  return "?";
}

json ModelConfig::to_json() const {
  switch (arch) {
    case Architecture::Llava: return llava.to_json();
    case Architecture::Qwen2VL:
    case Architecture::Qwen2_5VL: return qwen2_vl.to_json();
    case Architecture::Idefics3: return idefics3.to_json();
    case Architecture::Llama: break;
  }
  return text().to_json();
}

ModelConfig ModelConfig::from_json(const json& j) {
  IRIS_CHECK(j.is_object(), "config.json must be a JSON object");
  ModelConfig m;
  m.raw = j;
  std::string arch, model_type;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0];
  if (j.contains("model_type") && j["model_type"].is_string()) model_type = j["model_type"];
  for (const Family& f : kFamilies) {
    if (arch.empty() ? model_type != f.model_type : arch != f.class_name) continue;
    m.arch = f.arch;
    f.parse(j, m);
    return m;
  }
  std::string supported;
  for (const Family& f : kFamilies) supported += std::string(supported.empty() ? "" : ", ") + f.class_name;
  throw Error(str_cat("unknown architecture '", arch.empty() ? model_type : arch, "' (supported: ", supported, ")"));
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  try {
    return from_json(io::read_json_file(path));
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.find(path) != std::string::npos) throw;
    throw Error(str_cat(path, ": ", msg));
  }
}

}  // namespace iris::models
