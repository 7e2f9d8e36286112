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

// SigLIP vision tower's vision_config (SiglipVisionConfig, Idefics3VisionConfig, SmolVLMVisionConfig): no class
// token, learned position embeddings over the image_size / patch_size grid, gelu_pytorch_tanh by default.
struct SiglipVisionConfig {
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int num_channels = 3;
  int image_size = 224;
  int patch_size = 16;
  std::string hidden_act = "gelu_pytorch_tanh";
  float layer_norm_eps = 1e-6f;
  std::string model_type = "siglip_vision_model";

  int grid() const { return image_size / patch_size; }
  int num_positions() const { return grid() * grid(); }
  static SiglipVisionConfig from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
  void validate() const;
};

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3", "dynamic"
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int original_max_position_embeddings = 8192;           // llama3
};

// LlamaConfig, and the LLaMA-style decoders that share its weight names (Qwen2Config: q/k/v biases, no o_proj
// bias, M-RoPE in Qwen2-VL's text model).
struct LlamaConfig {
  std::string model_type = "llama";  // "llama" or "qwen2" (what config.json says; decides the biases' defaults)
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
  bool attention_bias = false;  // q, k, v (and o for Llama) have biases
  bool mlp_bias = false;
  std::vector<int> mrope_section;  // M-RoPE (Qwen2-VL): frequency pairs per position stream (t, h, w); empty: plain
  // Qwen2's sliding window: with use_sliding_window, the layers that layer_types marks "sliding_attention" (without
  // layer_types: layers >= max_window_layers) attend to the last sliding_window tokens only.
  bool use_sliding_window = false;
  int sliding_window = 4096, max_window_layers = 28;
  std::vector<std::string> layer_types;  // "full_attention" / "sliding_attention" per layer, when the config has it
  bool tie_word_embeddings = false;
  std::optional<int> bos_token_id = 1;
  std::vector<int> eos_token_ids = {2};

  bool o_bias() const { return attention_bias && model_type == "llama"; }  // Qwen2's o_proj has none
  // The attention window of layer il as Hugging Face applies it (0: full causal attention).
  int64_t layer_window(int il) const;
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

// Qwen2-VL's vision_config (Qwen2VLVisionConfig) and Qwen2.5-VL's (Qwen2_5_VLVisionConfig), in one struct:
// `v25` picks the Qwen2.5-VL block (RMSNorm, gated MLP, window attention).
struct Qwen2VLVisionConfig {
  bool v25 = false;
  int depth = 32;
  int embed_dim = 1280;      // the tower's width (Qwen2.5-VL calls it hidden_size)
  int out_dim = 1536;        // the merger's output = the text hidden size (Qwen2-VL: hidden_size; 2.5: out_hidden_size)
  int num_heads = 16;
  int intermediate = 5120;   // MLP width (Qwen2-VL: embed_dim * mlp_ratio; 2.5: intermediate_size)
  int in_chans = 3;
  int patch_size = 14, spatial_merge_size = 2, temporal_patch_size = 2;
  std::string hidden_act = "quick_gelu";
  int window_size = 112;                    // 2.5 only: attention window in pixels
  std::vector<int> fullatt_block_indexes;   // 2.5 only: blocks with full attention
  int head_dim() const { return embed_dim / num_heads; }
  int patch_dim() const { return in_chans * temporal_patch_size * patch_size * patch_size; }
  static Qwen2VLVisionConfig from_json(const nlohmann::json& j, bool v25);
  nlohmann::json to_json() const;
  void validate() const;
};

// Qwen2VLConfig / Qwen2_5_VLConfig: the vision tower with its patch merger, and a Qwen2 decoder with M-RoPE.
struct Qwen2VLConfig {
  Qwen2VLVisionConfig vision;
  LlamaConfig text;  // model_type qwen2, mrope_section set
  int image_token_id = 151655, video_token_id = 151656, vision_start_token_id = 151652, vision_end_token_id = 151653;
  static Qwen2VLConfig from_json(const nlohmann::json& j, bool v25);
  nlohmann::json to_json() const;
};

// Idefics3Config / SmolVLMConfig: a SigLIP-style tower over image tiles, pixel shuffle by scale_factor and a linear
// projection, a Llama decoder (SmolLM2 / Llama 3).
struct Idefics3Config {
  SiglipVisionConfig vision;
  LlamaConfig text;
  int scale_factor = 2;
  int image_token_id = 128257;
  bool smolvlm = false;  // SmolVLMForConditionalGeneration (same tensors; the processor squares unsplit images)
  int64_t image_seq_len() const {  // image tokens per frame
    const int64_t g = vision.grid() / scale_factor;
    return g * g;
  }
  static Idefics3Config from_json(const nlohmann::json& j, bool smolvlm);
  nlohmann::json to_json() const;
};

// What a config.json describes (models/registry.cpp maps its `architectures` / `model_type` to one of these).
enum class Architecture { Llama, Llava, Qwen2VL, Qwen2_5VL, Idefics3 };

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  LlavaConfig llava;       // Llava: every field; Llama: only .text
  Qwen2VLConfig qwen2_vl;  // Qwen2VL, Qwen2_5VL
  Idefics3Config idefics3; // Idefics3 (and SmolVLM)
  nlohmann::json raw;      // the file as read

  // The language model's config, whatever the family.
  const LlamaConfig& text() const;
  LlamaConfig& text();
  bool has_vision() const { return arch != Architecture::Llama; }
  std::string architecture_name() const;  // e.g. "Qwen2VLForConditionalGeneration"
  nlohmann::json to_json() const;         // config.json as Hugging Face writes it

  static ModelConfig from_json(const nlohmann::json& j);
  static ModelConfig from_file(const std::string& path);
};

}  // namespace iris::models
