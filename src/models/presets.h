// Named model configurations for iris init-model, tests and benchmarks.
#pragma once
#include "models/config.h"

namespace iris::models {

// "tiny-llava": a few MB, LLaVA-1.5-shaped (CLIP 336/14, MLP projector, 32064-entry vocabulary); the demo model
// and CLI tests. "llava-1.5-0.5b": CLIP ViT-L/14-336 + a ~0.5B Llama, for benchmarks at real scale.
// "qwen2-vl-tiny": Qwen2-VL with tiny widths over the real 151936-entry vocabulary (tests); "qwen2-vl-2b",
// "qwen2.5-vl-3b": the shapes of Qwen2-VL-2B-Instruct and Qwen2.5-VL-3B-Instruct (benchmarks). "smolvlm-tiny":
// SmolVLM (Idefics3) with tiny widths over a Llama-3 vocabulary plus Idefics3's added tokens (tests);
// "smolvlm-256m": the shapes of SmolVLM-256M-Instruct (benchmarks).
ModelConfig preset(const std::string& name);

}  // namespace iris::models
