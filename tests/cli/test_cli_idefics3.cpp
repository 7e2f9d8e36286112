// The command line on Idefics3 / SmolVLM: `iris forward` from the photo (our processor, its outputs written under
// Hugging Face's names) and from the saved pixel values with their pixel_attention_mask, against the shared
// transformers case refcases/idefics3_s.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "test_checks.h"
#include "io/file.h"
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

// A SmolVLM-shaped model made by init-model (preset smolvlm-tiny) with the Llama-3 tokenizer, first without and
// then with Idefics3's added tokens, and the generated shapes data for eval.
namespace {

struct SmolFixture {
  std::string dir, model, data, no_markers_log;
  int no_markers_rc = -1;
};

const SmolFixture& smol_fixture() {
  static SmolFixture f = [] {
    SmolFixture x;
    x.dir = test::temp_dir() + "/smolvlm-cli";
    x.model = x.dir + "/model";
    x.data = x.dir + "/data";
    std::string log;
    EXPECT_EQ(test::run_iris("data shapes --out " + x.data + " --n 8 --seed 3", &log), 0) << log;
    EXPECT_EQ(test::run_iris("init-model --preset smolvlm-tiny --seed 5 --std 0.1 --tokenizer " + test::shared_dir() +
                                 "/tokenizers/llama3 --out " + x.model,
                             &log),
              0)
        << log;
    // The Llama-3 tokenizer's chat template knows no images: use the processor's default (SmolVLM's) instead.
    nlohmann::json tc = io::read_json_file(x.model + "/tokenizer_config.json");
    tc.erase("chat_template");
    io::write_file_atomic(x.model + "/tokenizer_config.json", tc.dump(2));
    const std::string photo = test::shared_dir() + "/refcases/idefics3_s/photo_cat_451x300.png";
    x.no_markers_rc = test::run_iris("forward -m " + x.model + " --image " + photo + " -p 'What is it?' -t 1",
                                     &x.no_markers_log);
    // Idefics3's added tokens, as SmolVLM's tokenizer has them.
    nlohmann::json tj = io::read_json_file(x.model + "/tokenizer.json");
    std::vector<std::string> added{"<fake_token_around_image>", "<image>", "<global-img>"};
    for (int r = 1; r <= 6; ++r)
      for (int c = 1; c <= 6; ++c) added.push_back("<row_" + std::to_string(r) + "_col_" + std::to_string(c) + ">");
    added.push_back("<end_of_utterance>");
    for (size_t i = 0; i < added.size(); ++i)
      tj["added_tokens"].push_back({{"id", 128256 + int(i)}, {"content", added[i]}, {"single_word", false},
                                    {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
    io::write_file_atomic(x.model + "/tokenizer.json", tj.dump());
    return x;
  }();
  return f;
}

}  // namespace

// `iris forward -p` expands the image as the Hugging Face processor does (451x300 photo -> 256x170 -> 256x192:
// 3 rows x 4 tiles of 64 + the global view, 4 image tokens each, <row_r_col_c> before each tile) and `iris run`
// answers; a tokenizer without the markers is a clear error.
TEST(CliIdefics3, RunExpandsTheImagePrompt) {
  const SmolFixture& f = smol_fixture();
  EXPECT_EQ(f.no_markers_rc, 1) << f.no_markers_log;
  EXPECT_NE(f.no_markers_log.find("<fake_token_around_image>"), std::string::npos) << f.no_markers_log;
  const std::string photo = test::shared_dir() + "/refcases/idefics3_s/photo_cat_451x300.png", out = f.dir + "/out";
  std::string log;
  ASSERT_EQ(test::run_iris("forward -m " + f.model + " --image " + photo +
                               " -p 'What is it?' --save-processor-outputs " + out + " -t 1",
                           &log),
            0)
      << log;
  Tensor ids = io::load_npy(out + "/input_ids.npy").to(DType::I64);
  std::vector<int64_t> v(ids.data<int64_t>(), ids.data<int64_t>() + ids.numel());
  EXPECT_EQ(std::count(v.begin(), v.end(), 128257), 13 * 4) << "image tokens: 12 tiles + the global view, 4 each";
  EXPECT_EQ(std::count(v.begin(), v.end(), 128256), 12 + 2) << "<fake_token_around_image>";
  EXPECT_EQ(std::count(v.begin(), v.end(), 128258), 1) << "<global-img>";
  // The tiles in row-major order: <row_1_col_1> .. <row_3_col_4>, each followed by its 4 image tokens.
  std::vector<int64_t> rows;
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] >= 128259 && v[i] < 128295) {
      rows.push_back(v[i]);
      ASSERT_LT(i + 4, v.size());
      for (int k = 1; k <= 4; ++k) EXPECT_EQ(v[i + size_t(k)], 128257);
    }
  std::vector<int64_t> want;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) want.push_back(128259 + r * 6 + c);
  EXPECT_EQ(rows, want);
  Tensor pv = io::load_npy(out + "/pixel_values.npy");
  EXPECT_EQ(pv.shape(), (Shape{1, 13, 3, 64, 64}));

  ASSERT_EQ(test::run_iris("run -m " + f.model + " --image " + photo + " -p 'What is it?' -n 4 -t 1 --timings", &log),
            0)
      << log;
  EXPECT_NE(log.find("52 image tokens"), std::string::npos) << log;
  // --max-tiles 4: 256x170 -> 2 x 2 tiles at a longest edge of 128 -> 5 frames, 20 image tokens.
  ASSERT_EQ(test::run_iris("run -m " + f.model + " --image " + photo +
                               " -p 'What is it?' -n 2 -t 1 --timings --max-tiles 4",
                           &log),
            0)
      << log;
  EXPECT_NE(log.find("20 image tokens"), std::string::npos) << log;
}

// iris eval (VQA, POPE, captions) runs on the family: each record's image expanded with its own tiles.
TEST(CliIdefics3, EvalRuns) {
  const SmolFixture& f = smol_fixture();
  std::string log;
  ASSERT_EQ(test::run_iris("eval -m " + f.model + " --data " + f.data + "/llava.json --images " + f.data + " --pope " +
                               f.data + "/pope.jsonl --captions " + f.data + "/captions.jsonl --limit 2 -t 1",
                           &log),
            0)
      << log;
  EXPECT_NE(log.find("overall"), std::string::npos) << log;
  EXPECT_NE(log.find("POPE"), std::string::npos) << log;
}
