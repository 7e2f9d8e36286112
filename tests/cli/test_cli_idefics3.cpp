// The command line on Idefics3 / SmolVLM: `iris forward` from the photo (our processor, its outputs written under
// Hugging Face's names) and from the saved pixel values with their pixel_attention_mask, against the shared
// transformers case refcases/idefics3_s.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli/cli_util.h"
#include "test_checks.h"
#include "io/npy.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

double idefics3_npy_diff(const std::string& a, const std::string& b) {
  Tensor x = io::load_npy(a).to(DType::F32), y = io::load_npy(b).to(DType::F32);
  EXPECT_EQ(x.numel(), y.numel()) << a << " vs " << b;
  return test::max_abs_diff(x.data<float>(), y.data<float>(), size_t(std::min(x.numel(), y.numel())));
}

}  // namespace

TEST(CliIdefics3, ForwardFromPhotoAndFromPixelValues) {
  const std::string c = test::shared_dir() + "/refcases/idefics3_s", out = test::temp_dir() + "/idefics3-forward";
  fs::create_directories(out);
  std::string log;
  ASSERT_EQ(test::run_iris("forward -m " + c + " --image " + c + "/photo_cat_451x300.png --input-ids " + c +
                               "/input_ids.npy --save-processor-outputs " + out + "/proc --save-logits " + out +
                               "/l1.npy --generate 8 --save-generated-ids " + out + "/gen.npy -t 1",
                           &log),
            0)
      << log;
  EXPECT_EQ(idefics3_npy_diff(out + "/proc/pixel_values.npy", c + "/pixel_values.npy"), 0.0);
  EXPECT_EQ(idefics3_npy_diff(out + "/proc/pixel_attention_mask.npy", c + "/pixel_attention_mask.npy"), 0.0);
  EXPECT_LE(idefics3_npy_diff(out + "/l1.npy", c + "/logits.npy"), 3e-4);
  EXPECT_EQ(idefics3_npy_diff(out + "/gen.npy", c + "/generated_ids.npy"), 0.0);

  ASSERT_EQ(test::run_iris("forward -m " + c + " --pixel-values " + c + "/pixel_values.npy --pixel-attention-mask " +
                               c + "/pixel_attention_mask.npy --input-ids " + c + "/input_ids.npy --save-logits " +
                               out + "/l2.npy --save-image-features " + out + "/feat.npy -t 1",
                           &log),
            0)
      << log;
  EXPECT_LE(idefics3_npy_diff(out + "/l2.npy", c + "/logits.npy"), 3e-4);
  EXPECT_LE(idefics3_npy_diff(out + "/feat.npy", c + "/connector_output.npy"), 1e-4);
  // A mask that does not match the pixel values is a one-line error.
  EXPECT_EQ(test::run_iris("forward -m " + c + " --pixel-values " + c + "/pixel_values.npy --pixel-attention-mask " +
                               c + "/input_ids.npy --input-ids " + c + "/input_ids.npy -t 1",
                           &log),
            1)
      << log;
}
