// Named model configurations for iris init-model, tests and benchmarks.
#pragma once
#include "models/config.h"

namespace iris::models {

// "tiny-llava": a few MB, LLaVA-1.5-shaped (CLIP 336/14, MLP projector, 32064-entry vocabulary); the demo model
// and CLI tests. "llava-1.5-0.5b": CLIP ViT-L/14-336 + a ~0.5B Llama, for benchmarks at real scale.
ModelConfig preset(const std::string& name);

}  // namespace iris::models
