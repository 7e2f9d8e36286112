// The iris command end to end: parity through `iris forward`, tokenization through `iris tokenize`, generation
// through `iris run` on a model made by `iris init-model`, tokenizer training through `iris data tokenizer`, and
// bad input: each a clear one-line error and a non-zero exit, never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include <cmath>
#include <cstring>
#include "cli/cli_util.h"
#include "test_checks.h"
#include "test_util.h"

using namespace iris;
namespace fs = std::filesystem;

namespace {

using Result = test::CliResult;
Result iris_cmd(const std::string& args) { return test::iris_cli(args); }

std::string refcase(const std::string& n) { return test::shared_dir() + "/refcases/" + n; }

// A tiny random LLaVA with the real Mistral tokenizer, made once per test process.
const std::string& tiny_model() {
  static std::string dir = [] {
    std::string d = test::temp_dir() + "/tiny-llava";
    Result r = iris_cmd("init-model --preset tiny-llava --seed 3 --tokenizer " + test::shared_dir() +
                        "/tokenizers/mistral --out " + d);
    EXPECT_EQ(r.code, 0) << r.out;
    return d;
  }();
  return dir;
}


}  // namespace

TEST(Cli, ForwardMatchesLlavaReference) {
  const std::string dir = refcase("llava"), tmp = test::temp_dir();
  Result r = iris_cmd("forward -m " + dir + " --pixel-values " + dir + "/pixel_values.npy --input-ids " + dir +
                      "/input_ids.npy --save-logits " + tmp + "/logits.npy --save-vision-hidden " + tmp +
                      "/vh.npy --save-image-features " + tmp + "/feat.npy --generate 8 --save-generated-ids " + tmp +
                      "/gen.npy");
  ASSERT_EQ(r.code, 0) << r.out;
  auto cmp = [&](const std::string& mine, const std::string& ref, double tol) {
    Tensor a = io::load_npy(tmp + "/" + mine), b = io::load_npy(dir + "/" + ref);
    ASSERT_EQ(a.shape(), b.shape()) << mine;
    EXPECT_LE(test::max_abs_diff(a.data<float>(), b.data<float>(), size_t(a.numel())), tol) << mine;
  };
  cmp("logits.npy", "logits.npy", 3e-4);
  cmp("vh.npy", "vision_selected_layer.npy", 1e-4);
  cmp("feat.npy", "projector_output.npy", 1e-4);
  Tensor g = io::load_npy(tmp + "/gen.npy"), gr = io::load_npy(dir + "/generated_ids.npy");
  ASSERT_EQ(g.shape(), gr.shape());
  for (int64_t i = 0; i < g.numel(); ++i) EXPECT_EQ(g.data<int64_t>()[i], gr.data<int64_t>()[i]);
}

TEST(Cli, TokenizeJsonlMatchesGolden) {
  for (const char* name : {"mistral", "llama3", "qwen2"}) {
    const std::string dir = test::shared_dir() + "/tokenizers/" + name;
    Result r = iris_cmd("tokenize --tokenizer " + dir + "/tokenizer.json --jsonl < " + dir + "/golden.jsonl");
    ASSERT_EQ(r.code, 0) << r.out.substr(0, 500);
    std::ifstream golden(dir + "/golden.jsonl");
    std::istringstream out(r.out);
    std::string gl, ol;
    int n = 0;
    while (std::getline(golden, gl)) {
      if (gl.empty()) continue;
      ASSERT_TRUE(std::getline(out, ol)) << name << " line " << n;
      EXPECT_EQ(nlohmann::json::parse(ol)["ids"], nlohmann::json::parse(gl)["ids"]) << name << " line " << n;
      ++n;
    }
    EXPECT_GT(n, 10);
  }
}

TEST(Cli, DataTokenizerTrainsAndLoads) {
  const std::string tmp = test::temp_dir() + "/tok-cli";
  fs::create_directories(tmp);
  std::string captions;
  for (int i = 0; i < 30; ++i)
    captions += "{\"caption\": \"A red circle and a blue square number " + std::to_string(i) +
                ".\", \"image\": \"i.png\"}\n";
  test::write_file(tmp + "/captions.jsonl", captions);
  test::write_file(tmp + "/notes", "Plain text about circles and squares.\n\nAnother paragraph.\n");
  const std::string args =
      "data tokenizer --input " + tmp + "/captions.jsonl --input " + tmp + "/notes --vocab-size 280 ";
  Result r = iris_cmd(args + "--out " + tmp + "/a");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("20 merges, vocabulary 280"), std::string::npos) << r.out;
  ASSERT_EQ(iris_cmd(args + "--out " + tmp + "/b").code, 0);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_EQ(test::read_file(tmp + "/a/" + f), test::read_file(tmp + "/b/" + f)) << f;
  Result t = iris_cmd("tokenize --tokenizer " + tmp + "/a -p '<image>A red circle'");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_EQ(t.out.rfind("[0,3,", 0), 0u) << t.out;  // BOS, then <image> as one token

  test::expect_cli_error(iris_cmd("data tokenizer --input " + tmp + "/notes --vocab-size 100 --out " + tmp + "/c"),
               "at least 260");
  test::expect_cli_error(iris_cmd("data tokenizer --input " + tmp + "/missing.txt --vocab-size 300 --out " + tmp + "/c"),
               "missing.txt");
  test::write_file(tmp + "/bad.json", "[{\"conversations\": [");
  test::expect_cli_error(iris_cmd("data tokenizer --input " + tmp + "/bad.json --vocab-size 300 --out " + tmp + "/c"),
               "bad.json");
  EXPECT_FALSE(fs::exists(tmp + "/c"));
}

TEST(Cli, RunGeneratesDeterministically) {
  const std::string& m = tiny_model();
  const std::string img = test::source_dir() + "/examples/scene1.png";
  Result a = iris_cmd("run -m " + m + " --image " + img + " -p 'What is in this image?' -n 8 --timings");
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(a.out.find("prefill:"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("decode:"), std::string::npos) << a.out;
  Result b = iris_cmd("run -m " + m + " --image " + img + " -p 'What is in this image?' -n 8 --timings");
  // Same greedy tokens: the text before the timings is identical.
  EXPECT_EQ(a.out.substr(0, a.out.find("image encode")), b.out.substr(0, b.out.find("image encode")));
  Result s = iris_cmd("run -m " + m + " --image " + img + " -p 'hi' -n 8 --temp 0.8 --seed 5");
  EXPECT_EQ(s.code, 0) << s.out;
  Result bf = iris_cmd("run -m " + m + " --image " + img + " -p 'hi' -n 4 --dtype bf16 -t 1");
  EXPECT_EQ(bf.code, 0) << bf.out;
}

// --vision-positions sincos: the same random draws, so every other tensor is byte-identical to the default's; the
// position table is the 2-D sine-cosine one, checked here against the formula written out per element.
TEST(Cli, InitModelSincosVisionPositions) {
  const std::string& m = tiny_model();
  const std::string d = test::temp_dir() + "/tiny-llava-sincos";
  Result r = iris_cmd("init-model --preset tiny-llava --seed 3 --vision-positions sincos --tokenizer " +
                      test::shared_dir() + "/tokenizers/mistral --out " + d);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string pos = "vision_tower.vision_model.embeddings.position_embedding.weight";
  io::Checkpoint a = io::Checkpoint::open(m), b = io::Checkpoint::open(d);
  ASSERT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    if (name == pos) continue;
    EXPECT_TRUE(test::same_bytes(a.get(name), b.get(name))) << name;
  }
  nlohmann::json vc = nlohmann::json::parse(std::ifstream(d + "/config.json"))["vision_config"];
  const int64_t D = vc["hidden_size"], g = int64_t(vc["image_size"]) / int64_t(vc["patch_size"]), q = D / 4;
  Tensor t = b.get(pos);
  ASSERT_EQ(t.shape(), (Shape{g * g + 1, D}));
  const float* p = t.data<float>();
  for (int64_t j = 0; j < D; ++j) EXPECT_EQ(p[j], 0.0f) << "class token, dim " << j;
  for (int64_t k = 0; k < g * g; ++k) {
    const double row = double(k / g), col = double(k % g);
    for (int64_t j = 0; j < D; ++j) {
      const int64_t part = j / q, i = j % q;  // sin(row), cos(row), sin(col), cos(col)
      const double w = std::pow(10000.0, -double(i) / double(q)), x = (part < 2 ? row : col) * w;
      EXPECT_NEAR(p[(k + 1) * D + j], part % 2 == 0 ? std::sin(x) : std::cos(x), 1e-6) << "patch " << k << " dim " << j;
    }
  }
  // --vision-positions-scale multiplies the table.
  Result h = iris_cmd("init-model --preset tiny-llava --seed 3 --vision-positions sincos --vision-positions-scale 0.25 "
                      "--out " + d + "-quarter");
  ASSERT_EQ(h.code, 0) << h.out;
  Tensor tq = io::Checkpoint::open(d + "-quarter").get(pos);
  ASSERT_EQ(tq.shape(), t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(tq.data<float>()[i], float(0.25 * double(p[i]))) << i;
  for (const char* args : {"--vision-positions zeros", "--vision-positions-scale 2"}) {
    Result bad = iris_cmd("init-model --preset tiny-llava " + std::string(args) + " --out " + d + "-bad");
    EXPECT_NE(bad.code, 0) << args;
    EXPECT_NE(bad.out.find("vision-positions"), std::string::npos) << bad.out;
    EXPECT_FALSE(fs::exists(d + "-bad")) << args;
  }
}

TEST(Cli, BadModelFolders) {
  const std::string tmp = test::temp_dir();
  test::expect_cli_error(iris_cmd("run -m " + tmp + "/does-not-exist -p hi"), "does-not-exist");
  // Unknown architecture.
  fs::create_directories(tmp + "/unknown");
  test::write_file(tmp + "/unknown/config.json", R"({"architectures": ["BertModel"], "model_type": "bert"})");
  test::expect_cli_error(iris_cmd("run -m " + tmp + "/unknown -p hi"), "unknown architecture 'BertModel'");
  // Malformed config.json.
  fs::create_directories(tmp + "/badjson");
  test::write_file(tmp + "/badjson/config.json", "{\"architectures\": [");
  test::expect_cli_error(iris_cmd("run -m " + tmp + "/badjson -p hi"), "config.json");
  // Truncated and corrupted safetensors.
  const std::string& m = tiny_model();
  std::string weights = test::read_file(m + "/model.safetensors");
  for (const char* what : {"truncated", "corrupt"}) {
    std::string d = tmp + "/" + what;
    fs::create_directories(d);
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"})
      fs::copy_file(m + "/" + f, d + "/" + f, fs::copy_options::overwrite_existing);
    std::string w = weights;
    if (std::string(what) == "truncated")
      w.resize(w.size() / 2);
    else
      w[9] = '#';  // breaks the JSON header
    test::write_file(d + "/model.safetensors", w);
    Result r = iris_cmd("run -m " + d + " -p hi");
    test::expect_cli_error(r, "model.safetensors");
  }
  // A wrong shape: a config that disagrees with the weights.
  std::string d = tmp + "/wrongshape";
  fs::create_directories(d);
  fs::copy(m, d, fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  auto cfg = nlohmann::json::parse(test::read_file(m + "/config.json"));
  cfg["text_config"]["intermediate_size"] = 100;
  test::write_file(d + "/config.json", cfg.dump());
  test::expect_cli_error(iris_cmd("run -m " + d + " -p hi"), "has shape");
}

TEST(Cli, BadImagesAndPrompts) {
  const std::string& m = tiny_model();
  const std::string tmp = test::temp_dir();
  test::expect_cli_error(iris_cmd("run -m " + m + " --image " + tmp + "/missing.png -p hi"), "missing.png");
  test::write_file(tmp + "/noise.jpg", std::string(1000, 'x'));
  test::expect_cli_error(iris_cmd("run -m " + m + " --image " + tmp + "/noise.jpg -p hi"), "noise.jpg");
  // A PNG whose header claims 100000 x 100000 pixels: refused before decoding.
  std::string png = test::read_file(test::source_dir() + "/examples/scene1.png");
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + size_t(i)] = char((v >> (24 - 8 * i)) & 0xff);
  };
  put32(16, 100000);
  put32(20, 100000);
  test::write_file(tmp + "/huge.png", png);
  test::expect_cli_error(iris_cmd("run -m " + m + " --image " + tmp + "/huge.png -p hi"), "pixels");
  // Truncated PNG.
  std::string good = test::read_file(test::source_dir() + "/examples/scene1.png");
  test::write_file(tmp + "/trunc.png", good.substr(0, good.size() / 2));
  test::expect_cli_error(iris_cmd("run -m " + m + " --image " + tmp + "/trunc.png -p hi"), "trunc.png");
  // A prompt longer than the context (the image alone is 576 tokens).
  const std::string img = test::source_dir() + "/examples/scene1.png";
  test::expect_cli_error(iris_cmd("run -m " + m + " --image " + img + " -p hi -c 64"), "context");
  // Bad flags: CLI11 reports them and exits non-zero.
  Result r = iris_cmd("run -m " + m + " -p hi --dtype f64");
  EXPECT_NE(r.code, 0);
  // Forward with malformed inputs.
  const std::string dir = refcase("llava");
  test::expect_cli_error(iris_cmd("forward -m " + dir + " --pixel-values " + dir + "/input_ids.npy --input-ids " + dir +
                        "/input_ids.npy"),
               "pixel values");
}

// `iris train` parity entry point against the independent torch reference (scripts/ref_train.py outputs in
// tests/data/train): one SGD step (stages 1 and 2) and three AdamW steps (stage 1) on the shared llava case with
// its last 8 prompt tokens supervised; frozen weights byte-identical on disk.
TEST(Cli, TrainParityWithTorchReference) {
  const std::string dir = refcase("llava"), tmp = test::temp_dir(), data = test::source_dir() + "/tests/data/train";
  auto meta = nlohmann::json::parse(test::read_file(data + "/meta.json"));
  std::vector<int64_t> labels = meta["labels"].get<std::vector<int64_t>>();
  io::save_npy(tmp + "/labels.npy", Tensor::from_vector(labels, {1, int64_t(labels.size())}));
  const std::string common = "train -m " + dir + " --pixel-values " + dir + "/pixel_values.npy --input-ids " + dir +
                             "/input_ids.npy --labels " + tmp + "/labels.npy -t 1 ";
  struct Case {
    std::string name, args;
  };
  const std::vector<Case> cases = {
      {"llava_sgd_stage1", "--stage 1 --optimizer sgd --lr 0.5 --steps 1"},
      {"llava_sgd_stage2", "--stage 2 --optimizer sgd --lr 0.5 --steps 1"},
      {"llava_adamw_stage1",
       "--stage 1 --optimizer adamw --lr 0.01 --betas 0.9 0.999 --eps 1e-8 --weight-decay 0.01 --decay-all --steps 3"}};
  io::Checkpoint base = io::Checkpoint::open(dir);
  for (const Case& c : cases) {
    const std::string out = tmp + "/" + c.name;
    Result r = iris_cmd(common + c.args + " --out " + out + " --save-losses " + out + "-losses.npy");
    ASSERT_EQ(r.code, 0) << r.out;
    io::Checkpoint ref = io::Checkpoint::open(data + "/" + c.name + ".safetensors");
    io::Checkpoint mine = io::Checkpoint::open(out);
    for (const std::string& name : ref.names()) {
      Tensor a = mine.get(name).to(DType::F32), b = ref.get(name).to(DType::F32);
      ASSERT_EQ(a.shape(), b.shape()) << name;
      double scale = 0;
      for (int64_t i = 0; i < b.numel(); ++i) scale = std::max(scale, double(std::fabs(b.data<float>()[i])));
      EXPECT_LE(test::max_abs_diff(a.data<float>(), b.data<float>(), size_t(a.numel())), 1e-5 * scale)
          << c.name << " " << name;
    }
    // Everything not trained is byte-identical to the input checkpoint.
    for (const std::string& name : base.names()) {
      if (ref.has(name)) continue;
      Tensor a = mine.get(name), b = base.get(name);
      ASSERT_EQ(a.nbytes(), b.nbytes()) << name;
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << c.name << ": frozen " << name << " changed";
    }
    Tensor losses = io::load_npy(out + "-losses.npy");
    auto ref_losses = meta["cases"][c.name]["losses"].get<std::vector<double>>();
    ASSERT_EQ(size_t(losses.numel()), ref_losses.size());
    for (size_t i = 0; i < ref_losses.size(); ++i)
      EXPECT_NEAR(losses.data<float>()[i], ref_losses[i], 1e-5 * std::fabs(ref_losses[i])) << c.name << " step " << i;
  }
  // Bad input: labels of the wrong length.
  io::save_npy(tmp + "/short.npy", Tensor::from_vector(std::vector<int64_t>{-100, 5}, {1, 2}));
  test::expect_cli_error(iris_cmd("train -m " + dir + " --pixel-values " + dir + "/pixel_values.npy --input-ids " + dir +
                        "/input_ids.npy --labels " + tmp + "/short.npy --stage 1"),
               "differ in length");
}
