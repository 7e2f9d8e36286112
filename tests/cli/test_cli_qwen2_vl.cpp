// The command line on the Qwen2-VL family: `iris forward` with the processor's outputs under Hugging Face's names
// against the shared transformers case, `iris run` and `iris eval` on a created qwen2-vl-tiny with a real Qwen
// tokenizer, training
// (stage 1 moves only the merger; LoRA on the vision tower and the LLM, then run and merge-lora agree) on the
// generated shapes data, and bad input (images too small or too elongated, pixel bounds, grids that disagree with
// the pixel values, more image tokens than the context) as one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "cli/cli_util.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "test_checks.h"
#include "test_util.h"
#include "vision/image.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

struct QwenFixture {
  std::string dir, model, data;
};

const QwenFixture& qwen_fixture() {
  static QwenFixture f = [] {
    QwenFixture x;
    x.dir = test::temp_dir() + "/qwen-cli";
    x.model = x.dir + "/model";
    x.data = x.dir + "/data";
    std::string out;
    EXPECT_EQ(test::run_iris("data shapes --out " + x.data + " --n 12 --seed 3", &out), 0) << out;
    EXPECT_EQ(test::run_iris("init-model --preset qwen2-vl-tiny --seed 4 --std 0.1 --tokenizer " + test::shared_dir() +
                                 "/tokenizers/qwen2 --out " + x.model,
                             &out),
              0)
        << out;
    return x;
  }();
  return f;
}

std::string qcase() { return test::shared_dir() + "/refcases/qwen2_vl_s"; }

double npy_max_diff(const std::string& a, const std::string& b) {
  Tensor x = io::load_npy(a).to(DType::F32), y = io::load_npy(b).to(DType::F32);
  EXPECT_EQ(x.numel(), y.numel()) << a << " vs " << b;
  return test::max_abs_diff(x.data<float>(), y.data<float>(), size_t(std::min(x.numel(), y.numel())));
}

}  // namespace

// From the photos (our processor) and from the saved pixel values: the case's processor outputs and logits.
TEST(CliQwen2VL, ForwardWritesProcessorOutputsAndMatchesReference) {
  const std::string c = qcase(), out = test::temp_dir() + "/qwen-forward";
  fs::create_directories(out);
  std::string log;
  ASSERT_EQ(test::run_iris("forward -m " + c + " --image " + c + "/photo_cat_451x300.png --image " + c +
                               "/photo_hopper_512x600_420.jpg --input-ids " + c + "/input_ids.npy " +
                               "--save-processor-outputs " + out + "/proc --save-logits " + out + "/l1.npy " +
                               "--save-position-ids " + out + "/pos.npy --generate 8 --save-generated-ids " + out +
                               "/gen.npy -t 1",
                           &log),
            0)
      << log;
  EXPECT_LE(npy_max_diff(out + "/proc/pixel_values.npy", c + "/pixel_values.npy"), 1e-5);
  EXPECT_EQ(npy_max_diff(out + "/proc/image_grid_thw.npy", c + "/image_grid_thw.npy"), 0.0);
  EXPECT_EQ(npy_max_diff(out + "/proc/input_ids.npy", c + "/input_ids.npy"), 0.0);
  EXPECT_EQ(npy_max_diff(out + "/pos.npy", c + "/mrope_position_ids.npy"), 0.0);
  EXPECT_LE(npy_max_diff(out + "/l1.npy", c + "/logits.npy"), 3e-4);
  EXPECT_EQ(npy_max_diff(out + "/gen.npy", c + "/generated_ids.npy"), 0.0);

  ASSERT_EQ(test::run_iris("forward -m " + c + " --pixel-values " + c + "/pixel_values.npy --image-grid-thw " + c +
                               "/image_grid_thw.npy --input-ids " + c + "/input_ids.npy --save-logits " + out +
                               "/l2.npy --save-image-features " + out + "/feat.npy --save-vision-hidden " + out +
                               "/hid.npy -t 1",
                           &log),
            0)
      << log;
  EXPECT_LE(npy_max_diff(out + "/l2.npy", c + "/logits.npy"), 3e-4);
  EXPECT_LE(npy_max_diff(out + "/feat.npy", c + "/vision_output.npy"), 1e-4);
  EXPECT_LE(npy_max_diff(out + "/hid.npy", c + "/vision_pre_merger.npy"), 1e-4);
}

TEST(CliQwen2VL, RunAndPixelBounds) {
  const QwenFixture& f = qwen_fixture();
  std::string a, b;
  const std::string img = f.data + "/images/000000.png";
  ASSERT_EQ(test::run_iris("run -m " + f.model + " --image " + img + " -p 'What is it?' -n 4 -t 1 --verbose-prompt", &a), 0)
      << a;
  EXPECT_NE(a.find("<|vision_start|><|image_pad|><|vision_end|>"), std::string::npos) << a;
  EXPECT_NE(a.find("<|im_start|>assistant"), std::string::npos) << a;
  // A larger pixel budget makes more image tokens (64x64 -> 56x56 by default; min 12544 -> 112x112).
  ASSERT_EQ(test::run_iris("run -m " + f.model + " --image " + img + " -p 'What is it?' -n 4 -t 1 --verbose-prompt "
                               "--min-pixels 12544",
                           &b),
            0)
      << b;
  auto tokens = [](const std::string& s) { return std::stoi(s.substr(s.find("prompt (") + 8)); };
  EXPECT_EQ(tokens(b) - tokens(a), 16 - 4) << a << b;
  test::expect_cli_error(test::iris_cli("run -m " + f.model + " --image " + img + " -p hi --min-pixels 5000 "
                                        "--max-pixels 4000"),
                         "--min-pixels");
}

// iris eval runs the family's prompts (VQA, captions, POPE) through the same prompt builder.
TEST(CliQwen2VL, EvalRuns) {
  const QwenFixture& f = qwen_fixture();
  std::string log;
  ASSERT_EQ(test::run_iris("eval -m " + f.model + " --data " + f.data + "/llava.json --images " + f.data + " --pope " +
                               f.data + "/pope.jsonl --captions " + f.data + "/captions.jsonl --limit 3 -t 1",
                           &log),
            0)
      << log;
  EXPECT_NE(log.find("overall"), std::string::npos) << log;
  EXPECT_NE(log.find("POPE"), std::string::npos) << log;
}

TEST(CliQwen2VL, BadImagesAndInputs) {
  const QwenFixture& f = qwen_fixture();
  const std::string d = test::temp_dir() + "/qwen-bad";
  fs::create_directories(d);
  vision::save_png(d + "/small.png", vision::Image::zeros(20, 20, 3));
  vision::save_png(d + "/long.png", vision::Image::zeros(28 * 210, 28, 3));
  test::expect_cli_error(test::iris_cli("run -m " + f.model + " --image " + d + "/small.png -p hi"), "factor");
  test::expect_cli_error(test::iris_cli("run -m " + f.model + " --image " + d + "/long.png -p hi"), "aspect");
  // More image tokens than the context.
  test::expect_cli_error(test::iris_cli("run -m " + f.model + " --image " + f.data + "/images/000000.png -p hi -c 40 "
                                        "--min-pixels 200000"),
                         "context");
  // A grid that disagrees with the pixel values.
  const std::string c = qcase();
  Tensor g = io::load_npy(c + "/image_grid_thw.npy").to(DType::I64);
  g.data<int64_t>()[1] = 4;
  io::save_npy(d + "/grid.npy", g);
  test::expect_cli_error(test::iris_cli("forward -m " + c + " --pixel-values " + c + "/pixel_values.npy "
                                        "--image-grid-thw " + d + "/grid.npy --input-ids " + c + "/input_ids.npy"),
                         "image_grid_thw");
  test::expect_cli_error(test::iris_cli("forward -m " + c + " --pixel-values " + c + "/pixel_values.npy --input-ids " +
                                        c + "/input_ids.npy"),
                         "image_grid_thw");
}

TEST(CliQwen2VL, TrainStage1MovesOnlyTheMergerAndLoraRunsAndMerges) {
  const QwenFixture& f = qwen_fixture();
  const std::string base = "train -m " + f.model + " --data " + f.data + "/llava.json --images " + f.data +
                           " -t 1 --workers 1 ";
  const std::string out1 = f.dir + "/run-stage1", out3 = f.dir + "/run-lora", merged = f.dir + "/merged";
  std::string log;
  ASSERT_EQ(test::run_iris(base + "--out " + out1 + " --stage 1 --lr 1e-2 --max-steps 3 --batch-size 2", &log), 0)
      << log;
  io::Checkpoint before = io::Checkpoint::open(f.model), after = io::Checkpoint::open(out1 + "/final");
  int changed = 0;
  for (const std::string& name : before.names()) {
    const bool merger = name.rfind("visual.merger.", 0) == 0;
    const bool same = test::same_bytes(before.get(name), after.get(name));
    if (!merger) {
      EXPECT_TRUE(same) << name << " changed in stage 1";
    }
    changed += merger && !same;
  }
  EXPECT_GT(changed, 0) << "the merger did not train";
  std::vector<double> l = test::run_losses(out1);
  ASSERT_EQ(l.size(), 3u);
  for (double v : l) EXPECT_TRUE(std::isfinite(v));

  // Stage 3 with LoRA: adapters on the vision tower and the LLM, the merger trained fully; the training images
  // resized up to 112x112 (16 tokens each) by --min-pixels.
  ASSERT_EQ(test::run_iris(base + "--out " + out3 + " --stage 3 --lora-rank 4 --lr 2e-2 --max-steps 4 --batch-size 2 "
                                  "--seed 3 --min-pixels 12544",
                           &log),
            0)
      << log;
  ASSERT_TRUE(fs::exists(out3 + "/adapter/adapter_config.json"));
  io::Checkpoint adapter = io::Checkpoint::open(out3 + "/adapter");
  bool vision_adapter = false;
  for (const std::string& n : adapter.names()) vision_adapter |= n.find("visual.blocks.") != std::string::npos;
  EXPECT_TRUE(vision_adapter) << "no LoRA tensor on the vision tower";
  ASSERT_EQ(test::run_iris("merge-lora -m " + f.model + " --lora " + out3 + "/adapter --out " + merged, &log), 0) << log;
  const std::string q = " --image " + f.data + "/images/000001.png -p 'What shape is it?' -n 6 -t 1";
  std::string with_adapter, with_merged;
  ASSERT_EQ(test::run_iris("run -m " + f.model + " --lora " + out3 + "/adapter" + q, &with_adapter), 0) << with_adapter;
  ASSERT_EQ(test::run_iris("run -m " + merged + q, &with_merged), 0) << with_merged;
  EXPECT_EQ(with_adapter, with_merged);
}
