// The registry from a config.json's architecture to the parts that make the model, with each family's weight-name
// prefixes (the names inside a part are the part's own). A new family adds its parts' files and one case here.
#include <filesystem>

#include "models/idefics3.h"
#include "models/patch_merger.h"
#include "models/processor_clip.h"
#include "models/processor_qwen2_vl.h"
#include "models/projector_mlp.h"
#include "models/qwen2_vit.h"
#include "models/vit_clip.h"
#include "models/vlm.h"

namespace iris::models {

struct Registry {
  static void build(Vlm& m, WeightLoader& w, bool full_vision_tower, const std::string& dir);
};

namespace {

bool stored(const WeightLoader& w, const std::string& name) { return !w.creating() && w.has(name); }

// Hugging Face moved LLaVA's weights between versions: <= 4.51 "language_model.model.*", "vision_tower.*",
// "multi_modal_projector.*", "language_model.lm_head.weight"; newer: "model.language_model.*",
// "model.vision_tower.*", "model.multi_modal_projector.*", "lm_head.weight".
void build_llava(Vlm& m, WeightLoader& w, bool full_vision_tower, const std::string& dir,
                 std::unique_ptr<ImageProcessor>& proc, std::unique_ptr<VisionEncoder>& vis,
                 std::unique_ptr<Connector>& conn, Llama& text) {
  const LlavaConfig& c = m.config().llava;
  const bool v452 = stored(w, "model.language_model.embed_tokens.weight");
  auto enc = std::make_unique<ClipEncoder>();
  w.set_component("vision");
  enc->load(w, v452 ? "model.vision_tower.vision_model." : "vision_tower.vision_model.", c, full_vision_tower);
  auto proj = std::make_unique<MlpProjector>();
  w.set_component("projector");
  proj->load(w, v452 ? "model.multi_modal_projector." : "multi_modal_projector.", c.vision.hidden_size,
             c.text.hidden_size, c.projector_hidden_act, c.projector_bias);
  w.set_component("llm");
  text.load(w, v452 ? "model.language_model." : "language_model.model.",
            v452 ? "lm_head.weight" : "language_model.lm_head.weight", c.text);
  proc = std::make_unique<ClipProcessor>(c, dir);
  vis = std::move(enc);
  conn = std::move(proj);
}

// Qwen2-VL / Qwen2.5-VL: "visual.*", "model.*", "lm_head.weight" (transformers <= 4.51); newer:
// "model.visual.*", "model.language_model.*", "lm_head.weight".
void build_qwen2_vl(Vlm& m, WeightLoader& w, const std::string& dir, std::unique_ptr<ImageProcessor>& proc,
                    std::unique_ptr<VisionEncoder>& vis, std::unique_ptr<Connector>& conn, Llama& text) {
  const Qwen2VLConfig& c = m.config().qwen2_vl;
  const bool v452 = stored(w, "model.visual.patch_embed.proj.weight");
  const std::string vp = v452 ? "model.visual." : "visual.";
  auto enc = std::make_unique<Qwen2Vit>();
  w.set_component("vision");
  enc->load(w, vp, c.vision);
  auto merger = std::make_unique<PatchMerger>();
  w.set_component("projector");
  merger->load(w, vp + "merger.", c.vision);
  w.set_component("llm");
  text.load(w, v452 ? "model.language_model." : "model.", "lm_head.weight", c.text);
  proc = std::make_unique<Qwen2VLProcessor>(c, dir);
  vis = std::move(enc);
  conn = std::move(merger);
}

// Idefics3 / SmolVLM: "model.vision_model.*", "model.connector.*", "model.text_model.*", "lm_head.weight".
void build_idefics3(Vlm& m, WeightLoader& w, const std::string& dir, std::unique_ptr<ImageProcessor>& proc,
                    std::unique_ptr<VisionEncoder>& vis, std::unique_ptr<Connector>& conn, Llama& text) {
  const Idefics3Config& c = m.config().idefics3;
  auto enc = std::make_unique<Idefics3Vision>();
  w.set_component("vision");
  enc->load(w, "model.vision_model.", c);
  auto connector = std::make_unique<Idefics3Connector>();
  w.set_component("projector");
  connector->load(w, "model.connector.", c);
  w.set_component("llm");
  text.load(w, "model.text_model.", "lm_head.weight", c.text);
  proc = std::make_unique<Idefics3Processor>(c, dir);
  vis = std::move(enc);
  conn = std::move(connector);
}

}  // namespace

void Registry::build(Vlm& m, WeightLoader& w, bool full_vision_tower, const std::string& dir) {
  switch (m.cfg_.arch) {
    case Architecture::Llava:
      build_llava(m, w, full_vision_tower, dir, m.processor_, m.vision_, m.connector_, m.text_);
      break;
    case Architecture::Qwen2VL:
    case Architecture::Qwen2_5VL:
      build_qwen2_vl(m, w, dir, m.processor_, m.vision_, m.connector_, m.text_);
      break;
    case Architecture::Idefics3:
      build_idefics3(m, w, dir, m.processor_, m.vision_, m.connector_, m.text_);
      break;
    case Architecture::Llama:
      w.set_component("llm");
      m.text_.load(w, "model.", "lm_head.weight", m.cfg_.text());
      break;
  }
  m.slots_ = w.take_record();
}

void Vlm::build(WeightLoader& w, bool full_vision_tower, const std::string& dir) {
  Registry::build(*this, w, full_vision_tower, dir);
}

}  // namespace iris::models
