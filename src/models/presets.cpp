// Named model configurations.
#include "models/presets.h"

#include "tensor/error.h"

namespace iris::models {

namespace {

// Qwen2-VL / Qwen2.5-VL shapes: the real ones for the named checkpoints (random weights), a tiny one for tests.
ModelConfig qwen2_vl_preset(const std::string& name) {
  ModelConfig m;
  Qwen2VLConfig& c = m.qwen2_vl;
  LlamaConfig& t = c.text;
  Qwen2VLVisionConfig& v = c.vision;
  t.model_type = "qwen2";
  t.attention_bias = true;
  t.vocab_size = 151936;
  t.rms_norm_eps = 1e-6f;
  t.rope_theta = 1e6;
  t.tie_word_embeddings = true;
  t.bos_token_id = 151643;
  t.eos_token_ids = {151645};
  t.mrope_section = {16, 24, 24};
  t.max_position_embeddings = 32768;
  if (name == "qwen2-vl-tiny") {  // tests: the real vocabulary (Qwen tokenizers fit it), tiny widths
    m.arch = Architecture::Qwen2VL;
    t.hidden_size = 32, t.intermediate_size = 64, t.num_hidden_layers = 2, t.num_attention_heads = 2;
    t.num_key_value_heads = 1;
    t.mrope_section = {2, 3, 3};
    t.max_position_embeddings = 4096;
    v.depth = 2, v.embed_dim = 32, v.num_heads = 2, v.intermediate = 64, v.out_dim = 32;
  } else if (name == "qwen2-vl-2b") {  // Qwen/Qwen2-VL-2B-Instruct
    m.arch = Architecture::Qwen2VL;
    t.hidden_size = 1536, t.intermediate_size = 8960, t.num_hidden_layers = 28, t.num_attention_heads = 12;
    t.num_key_value_heads = 2;
    v.depth = 32, v.embed_dim = 1280, v.num_heads = 16, v.intermediate = 5120, v.out_dim = 1536;
  } else {  // "qwen2.5-vl-3b": Qwen/Qwen2.5-VL-3B-Instruct
    m.arch = Architecture::Qwen2_5VL;
    t.hidden_size = 2048, t.intermediate_size = 11008, t.num_hidden_layers = 36, t.num_attention_heads = 16;
    t.num_key_value_heads = 2;
    t.max_position_embeddings = 128000;
    v.v25 = true;
    v.depth = 32, v.embed_dim = 1280, v.num_heads = 16, v.intermediate = 3420, v.out_dim = 2048;
    v.hidden_act = "silu";
    v.window_size = 112;
    v.fullatt_block_indexes = {7, 15, 23, 31};
  }
  t.head_dim = t.hidden_size / t.num_attention_heads;
  t.validate();
  v.validate();
  return m;
}

// Idefics3 / SmolVLM for tests: a Llama-3 vocabulary (128256 tokens) with Idefics3's added tokens after it
// (<fake_token_around_image> 128256, <image> 128257, <global-img> 128258, <row_1_col_1> .. <row_6_col_6>
// 128259-128294, <end_of_utterance> 128295; eos Llama-3's <|eot_id|>), a 64-pixel tile of 4x4 patches (4 image tokens per frame after the
// 2x2 pixel shuffle) and tiny widths.
ModelConfig smolvlm_tiny_preset() {
  ModelConfig m;
  m.arch = Architecture::Idefics3;
  Idefics3Config& c = m.idefics3;
  c.smolvlm = true;
  c.scale_factor = 2;
  c.image_token_id = 128257;
  SiglipVisionConfig& v = c.vision;
  v.model_type = "smolvlm_vision";
  v.hidden_size = 32, v.intermediate_size = 64, v.num_hidden_layers = 2, v.num_attention_heads = 2;
  v.image_size = 64, v.patch_size = 16;
  LlamaConfig& t = c.text;
  t.vocab_size = 128320;
  t.hidden_size = 32, t.intermediate_size = 64, t.num_hidden_layers = 2, t.num_attention_heads = 2;
  t.num_key_value_heads = 1;
  t.head_dim = 16;
  t.max_position_embeddings = 4096;
  t.rms_norm_eps = 1e-5f;
  t.rope_theta = 100000.0;
  t.bos_token_id = 128000;
  t.eos_token_ids = {128009};  // <|eot_id|> (the real SmolVLM stops at <end_of_utterance>, an added token)
  t.validate();
  v.validate();
  return m;
}

// SmolVLM-256M-Instruct's shapes (random weights, benchmarks): SigLIP base patch-16 at 512 px (768 wide, 12
// layers), pixel shuffle by 4 (64 image tokens per 512-px tile), SmolLM2-135M (576 wide, 30 layers, 9 heads / 3 kv
// heads of 64, MLP 1536, vocabulary 49280), image token 49190.
ModelConfig smolvlm_256m_preset() {
  ModelConfig m;
  m.arch = Architecture::Idefics3;
  Idefics3Config& c = m.idefics3;
  c.scale_factor = 4;
  c.image_token_id = 49190;
  SiglipVisionConfig& v = c.vision;
  v.model_type = "idefics3_vision";
  v.hidden_size = 768, v.intermediate_size = 3072, v.num_hidden_layers = 12, v.num_attention_heads = 12;
  v.image_size = 512, v.patch_size = 16;
  LlamaConfig& t = c.text;
  t.vocab_size = 49280;
  t.hidden_size = 576, t.intermediate_size = 1536, t.num_hidden_layers = 30, t.num_attention_heads = 9;
  t.num_key_value_heads = 3;
  t.head_dim = 64;
  t.max_position_embeddings = 8192;
  t.rms_norm_eps = 1e-5f;
  t.rope_theta = 100000.0;
  t.bos_token_id = 1;
  t.eos_token_ids = {2};
  t.validate();
  v.validate();
  return m;
}

}  // namespace

ModelConfig preset(const std::string& name) {
  if (name == "smolvlm-tiny") return smolvlm_tiny_preset();
  if (name == "smolvlm-256m") return smolvlm_256m_preset();
  if (name == "qwen2-vl-tiny" || name == "qwen2-vl-2b" || name == "qwen2.5-vl-3b") return qwen2_vl_preset(name);
  ModelConfig m;
  m.arch = Architecture::Llava;
  LlavaConfig& c = m.llava;
  ClipVisionConfig& v = c.vision;
  LlamaConfig& t = c.text;
  // LLaVA-1.5 conventions: 336 px / patch 14 CLIP, feature layer -2, MLP projector, image token 32000 in a
  // 32064-entry vocabulary over a 32000-token SentencePiece tokenizer.
  v.image_size = 336;
  v.patch_size = 14;
  v.hidden_act = "quick_gelu";
  t.vocab_size = 32064;
  t.max_position_embeddings = 4096;
  t.rms_norm_eps = 1e-5f;
  c.image_token_index = 32000;
  c.pad_token_id = 32001;
  if (name == "tiny-llava") {  // a few MB: the demo model until iris ships a trained one, and CLI tests
    v.hidden_size = 64, v.intermediate_size = 256, v.num_hidden_layers = 2, v.num_attention_heads = 4;
    t.hidden_size = 128, t.intermediate_size = 344, t.num_hidden_layers = 2, t.num_attention_heads = 4;
    t.num_key_value_heads = 2;
  } else if (name == "llava-1.5-0.5b") {  // real scale for benchmarks: CLIP ViT-L/14-336 + a ~0.5B Llama
    v.hidden_size = 1024, v.intermediate_size = 4096, v.num_hidden_layers = 24, v.num_attention_heads = 16;
    t.hidden_size = 1280, t.intermediate_size = 3456, t.num_hidden_layers = 24, t.num_attention_heads = 20;
    t.num_key_value_heads = 4;
  } else if (name == "iris-shapes") {
    // The built-in model (scripts/train-builtin.sh): 64 px images in 8 px patches (64 image tokens), a
    // 4-layer ViT and a 4-layer Llama over the 1024-token byte-level BPE of `iris data tokenizer` (ids: <s> 0,
    // </s> 1, <pad> 2, <image> 3). The whole tower is used (last layer), as CLIP pretraining trains it. The Llama
    // is 128 wide with 8 heads of 16: answering from a caption in context (text-only, 8000 steps), 128 x 8 heads
    // reached 67.6% where 256 x 4 heads of 64 reached 51.4%, at a quarter of the cost per token.
    v.image_size = 64, v.patch_size = 8, v.hidden_act = "gelu";
    v.hidden_size = 128, v.intermediate_size = 512, v.num_hidden_layers = 4, v.num_attention_heads = 4;
    t.hidden_size = 128, t.intermediate_size = 352, t.num_hidden_layers = 4, t.num_attention_heads = 8;
    t.num_key_value_heads = 8;
    t.vocab_size = 1024;
    t.max_position_embeddings = 512;
    t.bos_token_id = 0;
    t.eos_token_ids = {1};
    c.image_token_index = 3;
    c.pad_token_id = 2;
    c.vision_feature_layer = -1;
  } else {
    throw Error(str_cat("unknown preset '", name, "' (known: tiny-llava, llava-1.5-0.5b, iris-shapes, qwen2-vl-tiny, "
                        "qwen2-vl-2b, qwen2.5-vl-3b)"));
  }
  t.head_dim = t.hidden_size / t.num_attention_heads;
  c.validate();
  return m;
}


}  // namespace iris::models
