// Preprocessing against the Hugging Face reference outputs in shared/refcases/preprocess: decoded pixels against
// PIL's (sha256), the uint8 image before rescale against outputs/*.png, and the float32 pixel_values against the
// manifest's sha256, fp64 sum and probes. All sizes and settings come from the manifest.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "test_util.h"
#include "vision/image.h"
#include "vision/preprocess.h"

using namespace iris;
using namespace iris::vision;
using json = nlohmann::json;

namespace {

// Compact SHA-256 (FIPS 180-4), enough to compare against the manifest's digests.
std::string sha256_hex(const void* data, size_t n) {
  static const uint32_t K[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int r) { return (x >> r) | (x << (32 - r)); };
  std::vector<uint8_t> msg(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + n);
  msg.push_back(0x80);
  while (msg.size() % 64 != 56) msg.push_back(0);
  const uint64_t bits = uint64_t(n) * 8;
  for (int i = 7; i >= 0; --i) msg.push_back(uint8_t(bits >> (8 * i)));
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(msg[off + 4 * i]) << 24 | uint32_t(msg[off + 4 * i + 1]) << 16 |
             uint32_t(msg[off + 4 * i + 2]) << 8 | msg[off + 4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  char out[65];
  for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h[i]);
  return std::string(out, 64);
}

std::string case_dir() { return test::shared_dir() + "/refcases/preprocess"; }

const json& manifest() {
  static const json m = json::parse(test::read_file(case_dir() + "/manifest.json"));
  return m;
}

int channels_of_mode(const std::string& mode) {
  if (mode == "L") return 1;
  if (mode == "RGB") return 3;
  if (mode == "RGBA") return 4;
  ADD_FAILURE() << "unexpected PIL mode " << mode;
  return 0;
}

// The processor settings from the manifest; the LLaVA pad variant is marked by its note (expand2square).
PreprocessConfig config_for(const std::string& processor) {
  const json& p = manifest().at("processors").at(processor);
  PreprocessConfig cfg = PreprocessConfig::from_json(p.at("config"));
  cfg.pad_to_square = p.value("note", std::string()).find("expand2square") != std::string::npos;
  return cfg;
}

// "[0,c,y,x]" -> (c, y, x)
std::array<int, 3> parse_probe(const std::string& key) {
  std::array<int, 4> v{};
  EXPECT_EQ(std::sscanf(key.c_str(), "[%d,%d,%d,%d]", &v[0], &v[1], &v[2], &v[3]), 4) << key;
  return {v[1], v[2], v[3]};
}

}  // namespace

TEST(VisionSha256, KnownDigests) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

// Every input decodes to exactly PIL's pixels (libjpeg-turbo islow + fancy upsampling; libpng).
TEST(VisionRefcases, DecodedPixelsMatchPil) {
  int n = 0;
  for (auto& [file, info] : manifest().at("images").items()) {
    SCOPED_TRACE(file);
    const Image img = load_image(case_dir() + "/images/" + file);
    EXPECT_EQ(img.width, info.at("width").get<int>());
    EXPECT_EQ(img.height, info.at("height").get<int>());
    EXPECT_EQ(img.channels, channels_of_mode(info.at("mode").get<std::string>()));
    EXPECT_EQ(sha256_hex(img.pixels.data(), img.pixels.size()), info.at("decoded_sha256").get<std::string>());
    ++n;
  }
  EXPECT_GE(n, 6);
}

// The manifest's float formula applied to the reference uint8 PNGs reproduces the reference bytes: this checks
// normalize_chw independently of decoding and resizing.
TEST(VisionRefcases, NormalizeOfReferenceU8IsBitExact) {
  for (const json& o : manifest().at("outputs")) {
    SCOPED_TRACE(o.at("uint8_png").get<std::string>());
    const Image ref = load_image(case_dir() + "/" + o.at("uint8_png").get<std::string>());
    const std::vector<float> pv = normalize_chw(ref, config_for(o.at("processor")));
    EXPECT_EQ(sha256_hex(pv.data(), pv.size() * sizeof(float)), o.at("pixel_values_sha256").get<std::string>());
  }
}

// The full pipeline from the input file: uint8 image against the reference PNG, float32 against sha256/sum/probes.
TEST(VisionRefcases, PreprocessMatchesReference) {
  int cases = 0;
  for (const json& o : manifest().at("outputs")) {
    const std::string image_file = o.at("image"), processor = o.at("processor");
    SCOPED_TRACE(image_file + " / " + processor);
    const PreprocessConfig cfg = config_for(processor);
    const Image input = load_image(case_dir() + "/" + image_file);
    const Image ref = load_image(case_dir() + "/" + o.at("uint8_png").get<std::string>());
    const json& shape = o.at("pixel_values_shape");
    const int H = shape.at(2), W = shape.at(3);
    ASSERT_EQ(shape.at(1).get<int>(), 3);
    ASSERT_EQ(ref.width, W);
    ASSERT_EQ(ref.height, H);
    ASSERT_EQ(ref.channels, 3);
    EXPECT_EQ(cfg.out_height(), H);
    EXPECT_EQ(cfg.out_width(), W);

    const Image u8 = preprocess_u8(input, cfg);
    ASSERT_EQ(u8.width, W);
    ASSERT_EQ(u8.height, H);
    ASSERT_EQ(u8.channels, 3);
    int max_diff = 0;
    size_t differing = 0;
    for (size_t i = 0; i < u8.pixels.size(); ++i) {
      const int d = std::abs(int(u8.pixels[i]) - int(ref.pixels[i]));
      max_diff = std::max(max_diff, d);
      differing += d != 0;
    }
    std::printf("  %-32s %-18s max level diff %d (%zu of %zu values differ)\n", image_file.c_str(),
                processor.c_str(), max_diff, differing, u8.pixels.size());
    // The pipeline reproduces Pillow exactly; the README's tolerance (1 level) would hide real rounding bugs.
    EXPECT_EQ(max_diff, 0);

    const std::vector<float> pv = preprocess(input, cfg);
    ASSERT_EQ(pv.size(), size_t(3) * H * W);
    EXPECT_EQ(sha256_hex(pv.data(), pv.size() * sizeof(float)), o.at("pixel_values_sha256").get<std::string>());
    double sum = 0;
    for (float v : pv) sum += v;
    const double ref_sum = o.at("pixel_values_sum_fp64");
    EXPECT_NEAR(sum, ref_sum, 1e-6 * std::max(1.0, std::fabs(ref_sum)));
    for (auto& [key, val] : o.at("pixel_values_probes").items()) {
      const auto [c, y, x] = parse_probe(key);
      ASSERT_TRUE(c >= 0 && c < 3 && y >= 0 && y < H && x >= 0 && x < W) << key;
      EXPECT_EQ(pv[(size_t(c) * H + y) * W + x], val.get<float>()) << key;
    }
    ++cases;
  }
  EXPECT_GE(cases, 18);
}
