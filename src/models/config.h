// Model configurations parsed from Hugging Face config.json, with Hugging Face's defaults for absent keys.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace iris::models {

// CLIPVisionConfig (also used for the vision_config of LlavaConfig).
struct ClipVisionConfig {
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int num_channels = 3;
  int image_size = 224;
  int patch_size = 32;
  std::string hidden_act = "quick_gelu";
  float layer_norm_eps = 1e-5f;

  int head_dim() const { return hidden_size / num_attention_heads; }
  int grid() const { return image_size / patch_size; }
  int num_positions() const { return grid() * grid() + 1; }  // patches + class token
  static ClipVisionConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
};

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3", "dynamic"
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int original_max_position_embeddings = 8192;           // llama3
};

// LlamaConfig.
struct LlamaConfig {
  int vocab_size = 32000;
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_hidden_layers = 32;
  int num_attention_heads = 32;
  int num_key_value_heads = 0;  // 0 in JSON means absent: defaults to num_attention_heads
  int head_dim = 0;             // absent: hidden_size / num_attention_heads
  int max_position_embeddings = 2048;
  std::string hidden_act = "silu";
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  std::optional<int> bos_token_id = 1;
  std::vector<int> eos_token_ids = {2};

  static LlamaConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
  // Rotary inverse frequencies (head_dim/2), with rope_scaling applied, as Hugging Face computes them (float32).
  std::vector<float> rope_inv_freq() const;
};

// LlavaConfig: CLIP vision tower + projector + Llama decoder.
struct LlavaConfig {
  ClipVisionConfig vision;
  LlamaConfig text;
  std::string projector_hidden_act = "gelu";
  bool projector_bias = true;                     // multimodal_projector_bias
  int vision_feature_layer = -2;                  // index into hidden_states (0 = embeddings); negative from the end
  std::string vision_feature_select_strategy = "default";  // "default" drops the class token, "full" keeps it
  int image_token_index = 32000;
  std::optional<int> pad_token_id;

  // Resolved hidden_states index in [0, num_hidden_layers]: how many encoder layers run.
  int feature_layer_index() const;
  int image_tokens_per_image() const;  // embeddings one image becomes
  static LlavaConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
};

// What a config.json describes.
enum class Architecture { Llava, Llama };

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  LlavaConfig llava;  // for Llava: all fields; for Llama: only .text is used
  const LlamaConfig& text() const { return llava.text; }
  nlohmann::json raw;  // the file as read

  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig from_file(const std::string& path);
};

}  // namespace iris::models
