// Training-gradient parity for Qwen2-VL and Qwen2.5-VL with an independent reference
// (scripts/ref_qwen2_vl_train.py: torch autograd, in float64, over the plain-torch model of scripts/ref_qwen2_vl.py).
// Each folder tests/data/qwen2_vl_train/<case>/ names its inference case (meta.json "source": the model and the
// inputs) and holds the labels, the summed loss, every parameter's gradient and the summed loss after one SGD step.
//   - stage 3 (vision tower, merger, decoder, embeddings and head all trained), with and without checkpointing: the
//     summed loss within 1e-5 (relative) of torch's; every checkpoint tensor has a gradient on both sides, each within
//     1e-4 of the reference's largest |grad| for that tensor (float32 engine vs float64 reference);
//   - one SGD step (lr 0.1, every parameter, on the summed loss's gradient): the loss after it within 1e-5;
//   - LoRA (rank 4) on the vision tower and the decoder with the merger fully trained: runs, every LoRA gradient is
//     finite and every B gradient nonzero (A's are zero at the start, B being zero).
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "train/trainable.h"
#include "test_util.h"

using namespace iris;

namespace {

std::string qvt_data_dir() { return test::source_dir() + "/tests/data/qwen2_vl_train"; }

struct QvtCase {
  std::string source;  // the inference case folder (model and inputs)
  nlohmann::json meta;
  train::Example ex;
  double loss = 0, loss_after_step = 0;
};

double qvt_scalar(const std::string& path) {
  Tensor t = io::load_npy(path).to(DType::F64);
  EXPECT_EQ(t.numel(), 1) << path;
  return t.data<double>()[0];
}

std::vector<int32_t> qvt_ints(const Tensor& t) {
  Tensor i = t.to(DType::I64);
  std::vector<int32_t> r(size_t(i.numel()));
  for (size_t k = 0; k < r.size(); ++k) r[k] = int32_t(i.data<int64_t>()[k]);
  return r;
}

QvtCase qvt_load(const std::string& name, const models::Vlm& m) {
  QvtCase c;
  const std::string dir = qvt_data_dir() + "/" + name;
  c.meta = nlohmann::json::parse(test::read_file(dir + "/meta.json"));
  c.source = test::source_dir() + "/" + c.meta["source"].get<std::string>();
  c.ex.ids = qvt_ints(io::load_npy(c.source + "/input_ids.npy"));
  c.ex.labels = qvt_ints(io::load_npy(dir + "/labels.npy"));
  Tensor pv = io::load_npy(c.source + "/pixel_values.npy");
  Tensor grid = io::load_npy(c.source + "/image_grid_thw.npy");
  c.ex.images = m.processor().split_pixel_values(pv, grid);
  c.loss = qvt_scalar(dir + "/loss.npy");
  c.loss_after_step = qvt_scalar(dir + "/loss_after_step.npy");
  return c;
}

std::unique_ptr<models::Vlm> qvt_model(const std::string& name) {
  const std::string dir = qvt_data_dir() + "/" + name;
  const auto meta = nlohmann::json::parse(test::read_file(dir + "/meta.json"));
  return models::Vlm::load(test::source_dir() + "/" + meta["source"].get<std::string>(),
                           {models::WeightPrecision::F32, true});
}

// The parameter group of a Hugging Face name, for the report.
std::string qvt_group(const std::string& n) {
  if (n.rfind("visual.merger.", 0) == 0) return "merger";
  if (n.rfind("visual.patch_embed.", 0) == 0) return "vision patch_embed";
  if (n.rfind("visual.", 0) == 0) return "vision blocks";
  if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return "embeddings/head";
  return "decoder";
}

// Every trained tensor's gradient against the reference file: max |diff| / max |ref| per tensor <= tol. Returns the
// worst ratio per group.
std::map<std::string, double> qvt_compare_grads(train::TrainableVlm& tv, const std::string& grads_path,
                                                const std::string& what, double tol) {
  auto ref = io::SafetensorsFile::open(grads_path);
  std::map<std::string, double> worst;
  std::map<std::string, std::string> worst_name;
  int matched = 0;
  for (train::Param* p : tv.params()) {
    if (!ref->has(p->name)) {
      ADD_FAILURE() << what << ": the reference has no gradient for " << p->name;
      continue;
    }
    ++matched;
    Tensor r = ref->get(p->name);
    if (r.shape() != p->grad.shape()) {
      ADD_FAILURE() << what << ": " << p->name << " shape differs from the reference's";
      continue;
    }
    const float* g = p->grad.data<float>();
    const float* rv = r.data<float>();
    double err = 0, mx = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      bad += !std::isfinite(g[i]);
      err = std::max(err, std::fabs(double(g[i]) - double(rv[i])));
      mx = std::max(mx, std::fabs(double(rv[i])));
    }
    EXPECT_EQ(bad, 0) << what << ": " << p->name << " has non-finite gradients";
    const double rel = err / std::max(mx, 1e-30);
    EXPECT_LE(rel, tol) << what << ": " << p->name << " max|diff| " << err << ", max|ref| " << mx;
    const std::string grp = qvt_group(p->name);
    if (rel >= worst[grp]) {
      worst[grp] = rel;
      worst_name[grp] = p->name;
    }
  }
  EXPECT_EQ(matched, int(ref->tensors().size())) << what << ": tensors in the reference without an engine gradient";
  for (const auto& [grp, w] : worst)
    std::cout << "[qwen2-vl train] " << what << ": " << grp << " worst max|diff|/max|ref| " << w << " ("
              << worst_name[grp] << ")\n";
  return worst;
}

void qvt_stage3(const std::string& name, bool checkpointing) {
  const std::string what = name + (checkpointing ? " (checkpointing)" : "");
  auto m = qvt_model(name);
  ASSERT_TRUE(m->has_vision());
  QvtCase c = qvt_load(name, *m);
  train::TrainSpec spec = train::stage_spec(3);
  spec.checkpointing = checkpointing;
  train::TrainableVlm tv(*m, spec);
  auto [loss, count] = tv.forward_backward(c.ex, 1.0f);
  EXPECT_EQ(count, c.meta["supervised"].get<int64_t>()) << what;
  EXPECT_EQ(count, train::supervised_count(c.ex)) << what;
  EXPECT_NEAR(loss, c.loss, 1e-5 * std::fabs(c.loss)) << what;
  std::cout << "[qwen2-vl train] " << what << ": summed loss " << loss << " (torch float64 " << c.loss
            << ", rel diff " << std::fabs(loss - c.loss) / std::fabs(c.loss) << "), " << tv.params().size()
            << " trained tensors\n";
  qvt_compare_grads(tv, qvt_data_dir() + "/" + name + "/grads.safetensors", what, 1e-4);

  // One SGD step on the summed loss's gradient, then the loss again.
  const float lr = c.meta["sgd_lr"].get<float>();
  for (train::Param* p : tv.params())
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data<float>()[i] -= lr * p->grad.data<float>()[i];
  tv.weights_updated();
  int64_t n2 = 0;
  const double after = tv.loss_only(c.ex, &n2);
  EXPECT_EQ(n2, count);
  EXPECT_NEAR(after, c.loss_after_step, 1e-5 * std::fabs(c.loss_after_step)) << what << ": loss after one SGD step";
  tv.zero_grad();
  const double after_fb = tv.forward_backward(c.ex, 1.0f).first;
  EXPECT_NEAR(after_fb, after, 1e-6 * std::fabs(after)) << what << ": training and inference losses after the step";
  std::cout << "[qwen2-vl train] " << what << ": summed loss after one SGD step (lr " << lr << ") " << after
            << " (torch float64 " << c.loss_after_step << ", rel diff "
            << std::fabs(after - c.loss_after_step) / std::fabs(c.loss_after_step) << ")\n";
}

void qvt_lora(const std::string& name) {
  auto m = qvt_model(name);
  QvtCase c = qvt_load(name, *m);
  train::TrainSpec spec = train::stage_spec(1);  // the merger (projector) fully trained
  spec.lora.rank = 4;
  spec.lora.alpha = 8.0f;
  spec.lora.components = {"vision", "llm"};
  spec.seed = 7;
  train::TrainableVlm tv(*m, spec);
  auto [loss, count] = tv.forward_backward(c.ex, 1.0f);
  // B is zero at the start, so the adapted model is the base one: the same loss as the reference's.
  EXPECT_NEAR(loss, c.loss, 1e-5 * std::fabs(c.loss)) << name << " LoRA";
  EXPECT_EQ(count, train::supervised_count(c.ex));
  int lora_a = 0, lora_b = 0, vision_b = 0, llm_b = 0, projector = 0;
  for (train::Param* p : tv.params()) {
    const float* g = p->grad.data<float>();
    double mx = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < p->grad.numel(); ++i) {
      bad += !std::isfinite(g[i]);
      mx = std::max(mx, std::fabs(double(g[i])));
    }
    EXPECT_EQ(bad, 0) << name << ": " << p->name << " has non-finite gradients";
    const bool is_a = p->name.find(".lora_A.") != std::string::npos;
    const bool is_b = p->name.find(".lora_B.") != std::string::npos;
    if (is_a) ++lora_a;
    if (is_b) {
      ++lora_b;
      (p->component == "vision" ? vision_b : llm_b) += 1;
      EXPECT_GT(mx, 0.0) << name << ": " << p->name << " has an all-zero gradient";
    }
    if (!is_a && !is_b) {
      ++projector;
      EXPECT_EQ(p->component, "projector") << p->name;
      EXPECT_GT(mx, 0.0) << p->name;
    }
  }
  EXPECT_EQ(lora_a, lora_b);
  EXPECT_GT(vision_b, 0) << name << ": no LoRA adapter on the vision tower";
  EXPECT_GT(llm_b, 0) << name << ": no LoRA adapter on the decoder";
  EXPECT_GT(projector, 0);
  // The fully trained merger's gradient is the stage-3 one (it does not depend on what else trains).
  auto ref = io::SafetensorsFile::open(qvt_data_dir() + "/" + name + "/grads.safetensors");
  for (train::Param* p : tv.params()) {
    if (p->component != "projector" || p->name.find(".lora_") != std::string::npos) continue;
    ASSERT_TRUE(ref->has(p->name)) << p->name;
    Tensor r = ref->get(p->name);
    double err = 0, mx = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      err = std::max(err, std::fabs(double(p->grad.data<float>()[i]) - double(r.data<float>()[i])));
      mx = std::max(mx, std::fabs(double(r.data<float>()[i])));
    }
    EXPECT_LE(err, 1e-4 * mx) << name << " LoRA: merger gradient " << p->name;
  }
  std::cout << "[qwen2-vl train] " << name << " LoRA rank 4 (vision + llm, merger full): " << lora_b
            << " adapters (" << vision_b << " vision, " << llm_b << " decoder), loss " << loss << "\n";
}

}  // namespace

TEST(Qwen2VlTrainParity, Qwen2VlStage3) { qvt_stage3("qwen2vl_gqa2_mrope233", false); }
TEST(Qwen2VlTrainParity, Qwen2VlStage3Checkpointing) { qvt_stage3("qwen2vl_gqa2_mrope233", true); }
TEST(Qwen2VlTrainParity, Qwen25VlWindowStage3) { qvt_stage3("qwen25vl_window", false); }
TEST(Qwen2VlTrainParity, Qwen25VlWindowStage3Checkpointing) { qvt_stage3("qwen25vl_window", true); }
TEST(Qwen2VlTrainParity, Qwen2VlLora) { qvt_lora("qwen2vl_gqa2_mrope233"); }
TEST(Qwen2VlTrainParity, Qwen25VlWindowLora) { qvt_lora("qwen25vl_window"); }
