// Resampling, cropping and padding on small synthetic images: resize against a naive double-precision version of
// Pillow's algorithm (same filters, support widening, per-pass rounding; no fixed point), and the HF/LLaVA crop and
// pad offsets on odd sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "tensor/error.h"
#include "vision/image.h"

using namespace iris;
using namespace iris::vision;

namespace {

Image random_image(int w, int h, int c, uint32_t seed, int alpha_min = 0) {
  Image img = Image::zeros(w, h, c);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < img.pixels.size(); ++i) {
    const bool alpha = c == 4 && i % 4 == 3;
    img.pixels[i] = uint8_t(alpha ? alpha_min + int(rng() % uint32_t(256 - alpha_min)) : int(rng() % 256));
  }
  return img;
}

double ref_filter(Resample r, double x) {
  const double pi = 3.14159265358979323846;
  auto sinc = [&](double v) { return v == 0.0 ? 1.0 : std::sin(v * pi) / (v * pi); };
  const double ax = std::fabs(x);
  switch (r) {
    case Resample::Box: return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case Resample::Bilinear: return ax < 1.0 ? 1.0 - ax : 0.0;
    case Resample::Hamming: return ax >= 1.0 ? 0.0 : sinc(ax) * (0.54 + 0.46 * std::cos(ax * pi));
    case Resample::Bicubic:
      if (ax < 1.0) return 1.5 * ax * ax * ax - 2.5 * ax * ax + 1.0;
      if (ax < 2.0) return -0.5 * ax * ax * ax + 2.5 * ax * ax - 4.0 * ax + 2.0;
      return 0.0;
    case Resample::Lanczos: return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
    case Resample::Nearest: break;
  }
  return 0.0;
}

double ref_support(Resample r) {
  switch (r) {
    case Resample::Box: return 0.5;
    case Resample::Bilinear: case Resample::Hamming: return 1.0;
    case Resample::Bicubic: return 2.0;
    case Resample::Lanczos: return 3.0;
    case Resample::Nearest: break;
  }
  return 0.0;
}

// One 1-D pass of Pillow's convolution in double: `line(i)` reads input sample i; returns rounded, clipped values.
struct RefWeights {
  std::vector<int> first;
  std::vector<std::vector<double>> w;
};
RefWeights ref_weights(int in, int out, Resample r) {
  const double scale = double(in) / out, fs = std::max(1.0, scale), support = ref_support(r) * fs;
  RefWeights rw;
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(0, int(center - support + 0.5)), hi = std::min(in, int(center + support + 0.5));
    std::vector<double> w;
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      w.push_back(ref_filter(r, (i - center + 0.5) / fs));
      sum += w.back();
    }
    for (double& v : w) v /= sum;
    rw.first.push_back(lo);
    rw.w.push_back(w);
  }
  return rw;
}

bool on_integer(double v) { return std::fabs(v - std::round(v)) < 1e-9; }

uint8_t round_clip(double v) { return uint8_t(std::clamp(std::floor(v + 0.5), 0.0, 255.0)); }

Image naive_resize(const Image& img, int W, int H, Resample r) {
  if (W == img.width && H == img.height) return img;
  const int C = img.channels;
  if (r == Resample::Nearest) {
    Image out = Image::zeros(W, H, C);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int sx = int((x + 0.5) * img.width / W), sy = int((y + 0.5) * img.height / H);
        for (int c = 0; c < C; ++c) out.row(y)[x * C + c] = img.row(sy)[sx * C + c];
      }
    return out;
  }
  Image src = img;
  if (C == 4)  // premultiplied alpha, as Pillow resizes RGBA
    for (size_t i = 0; i < src.pixels.size(); i += 4)
      for (int c = 0; c < 3; ++c) {
        const unsigned t = src.pixels[i + c] * src.pixels[i + 3] + 128;
        src.pixels[i + c] = uint8_t(((t >> 8) + t) >> 8);
      }
  Image tmp = src;
  if (W != img.width) {
    tmp = Image::zeros(W, img.height, C);
    const RefWeights rw = ref_weights(img.width, W, r);
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < W; ++x)
        for (int c = 0; c < C; ++c) {
          double s = 0;
          for (size_t t = 0; t < rw.w[size_t(x)].size(); ++t)
            s += rw.w[size_t(x)][t] * src.row(y)[(rw.first[size_t(x)] + int(t)) * C + c];
          tmp.row(y)[x * C + c] = round_clip(s);
        }
  }
  Image out = tmp;
  if (H != img.height) {
    out = Image::zeros(W, H, C);
    const RefWeights rw = ref_weights(img.height, H, r);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W * C; ++x) {
        double s = 0;
        for (size_t t = 0; t < rw.w[size_t(y)].size(); ++t)
          s += rw.w[size_t(y)][t] * tmp.row(rw.first[size_t(y)] + int(t))[x];
        out.row(y)[x] = round_clip(s);
      }
  }
  if (C == 4)
    for (size_t i = 0; i < out.pixels.size(); i += 4) {
      const unsigned a = out.pixels[i + 3];
      if (a == 0 || a == 255) continue;
      for (int c = 0; c < 3; ++c) out.pixels[i + c] = uint8_t(std::min(255u, 255u * out.pixels[i + c] / a));
    }
  return out;
}

const Resample kAll[] = {Resample::Nearest, Resample::Bilinear, Resample::Bicubic,
                         Resample::Lanczos, Resample::Box,      Resample::Hamming};

}  // namespace

TEST(VisionResize, MatchesNaiveDoubleReference) {
  struct Case { int w, h, W, H; };
  const Case cases[] = {
      {7, 5, 19, 13},   // upscale both ways
      {37, 23, 8, 5},   // downscale (support widens)
      {30, 7, 9, 20},   // down in x, up in y
      {3, 40, 11, 6},   // up in x, down in y
      {300, 2, 3, 1},   // large factor, tiny output
      {16, 16, 16, 9},  // vertical only
      {13, 16, 21, 16}, // horizontal only
      {1, 1, 5, 3},     // single pixel
      {64, 48, 33, 25}, // non-integer factor
  };
  int compared = 0;
  for (const Case& k : cases)
    for (int C : {1, 3, 4})
      for (Resample r : kAll) {
        SCOPED_TRACE(testing::Message() << k.w << "x" << k.h << "x" << C << " -> " << k.W << "x" << k.H << " "
                                        << resample_name(r));
        const Image in = random_image(k.w, k.h, C, uint32_t(k.w * 131 + k.h * 7 + C), C == 4 ? 200 : 0);
        const Image got = resize(in, k.W, k.H, r);
        const Image want = naive_resize(in, k.W, k.H, r);
        ASSERT_EQ(got.width, k.W);
        ASSERT_EQ(got.height, k.H);
        ASSERT_EQ(got.channels, C);
        int max_diff = 0;
        for (int y = 0; y < k.H; ++y)
          for (int x = 0; x < k.W; ++x) {
            // Pillow's nearest walks the source position by repeated addition, so where the exact position is an
            // integer it may land one pixel lower; the reference computes the position directly, so skip those.
            if (r == Resample::Nearest && (on_integer((x + 0.5) * k.w / k.W) || on_integer((y + 0.5) * k.h / k.H)))
              continue;
            for (int c = 0; c < C; ++c)
              max_diff = std::max(max_diff, std::abs(int(got.row(y)[x * C + c]) - int(want.row(y)[x * C + c])));
          }
        // Fixed point (22-bit coefficients) may move a value that sits on a .5 boundary by one level; with alpha
        // >= 200 the un-premultiply can stretch that to 2.
        EXPECT_LE(max_diff, r == Resample::Nearest ? 0 : C == 4 ? 2 : 1);
        ++compared;
      }
  EXPECT_EQ(compared, 9 * 3 * 6);
}

// A constant image stays constant under every filter (normalised weights, exact rounding).
TEST(VisionResize, ConstantImageStaysConstant) {
  Image in = Image::zeros(23, 17, 3);
  for (size_t i = 0; i < in.pixels.size(); ++i) in.pixels[i] = uint8_t(i % 3 == 0 ? 200 : i % 3 == 1 ? 3 : 128);
  for (Resample r : kAll)
    for (auto [W, H] : {std::pair{5, 4}, std::pair{50, 41}, std::pair{23, 3}}) {
      const Image out = resize(in, W, H, r);
      for (size_t i = 0; i < out.pixels.size(); ++i)
        ASSERT_EQ(out.pixels[i], in.pixels[i % 3]) << resample_name(r) << " " << W << "x" << H << " at " << i;
    }
}

// Downscaling must antialias: a 1-pixel checkerboard averages to grey instead of aliasing to black or white.
TEST(VisionResize, DownscaleAntialiases) {
  Image in = Image::zeros(64, 64, 1);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) in.row(y)[x] = uint8_t((x + y) % 2 ? 255 : 0);
  for (Resample r : {Resample::Bilinear, Resample::Bicubic, Resample::Lanczos, Resample::Box, Resample::Hamming}) {
    const Image out = resize(in, 8, 8, r);
    for (int y = 1; y < 7; ++y)
      for (int x = 1; x < 7; ++x) EXPECT_NEAR(out.row(y)[x], 127.5, 2.0) << resample_name(r);
  }
}

TEST(VisionResize, SameSizeIsCopyAndBadSizesThrow) {
  const Image in = random_image(9, 4, 3, 1);
  EXPECT_EQ(resize(in, 9, 4, Resample::Bicubic).pixels, in.pixels);
  EXPECT_THROW(resize(in, 0, 4, Resample::Bicubic), Error);
  EXPECT_THROW(resize(in, 4, -1, Resample::Bilinear), Error);
  EXPECT_THROW(resize(Image(), 4, 4, Resample::Bilinear), Error);
  Image broken = in;
  broken.pixels.resize(5);
  EXPECT_THROW(resize(broken, 4, 4, Resample::Bicubic), Error);
}

TEST(VisionResize, PilFilterIds) {
  EXPECT_EQ(resample_from_pil(0), Resample::Nearest);
  EXPECT_EQ(resample_from_pil(1), Resample::Lanczos);
  EXPECT_EQ(resample_from_pil(2), Resample::Bilinear);
  EXPECT_EQ(resample_from_pil(3), Resample::Bicubic);
  EXPECT_EQ(resample_from_pil(4), Resample::Box);
  EXPECT_EQ(resample_from_pil(5), Resample::Hamming);
  for (Resample r : kAll) EXPECT_EQ(resample_from_pil(resample_to_pil(r)), r);
  EXPECT_THROW(resample_from_pil(6), Error);
  EXPECT_THROW(resample_from_pil(-1), Error);
}

namespace {
// Image whose pixel (x, y) holds (x, y, 7) so offsets can be read back.
Image coords(int w, int h) {
  Image img = Image::zeros(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.row(y)[3 * x] = uint8_t(x);
      img.row(y)[3 * x + 1] = uint8_t(y);
      img.row(y)[3 * x + 2] = 7;
    }
  return img;
}
}  // namespace

TEST(VisionCrop, OffsetsOnOddSizes) {
  // Crop inside: top = (H-h)//2, left = (W-w)//2.
  const Image c = center_crop(coords(7, 6), 4, 3);
  ASSERT_EQ(c.width, 4);
  ASSERT_EQ(c.height, 3);
  EXPECT_EQ(c.row(0)[0], 1);  // left = (7-4)//2 = 1
  EXPECT_EQ(c.row(0)[1], 1);  // top = (6-3)//2 = 1
  EXPECT_EQ(c.row(2)[3 * 3], 4);
  EXPECT_EQ(c.row(2)[3 * 3 + 1], 3);
  // Crop larger than the image: HF centres the image at ceil((h-H)/2) on zeros.
  const Image p = center_crop(coords(2, 3), 5, 6);  // left pad ceil(3/2) = 2, top pad ceil(3/2) = 2
  ASSERT_EQ(p.width, 5);
  ASSERT_EQ(p.height, 6);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 5; ++x) {
      const bool inside = x >= 2 && x < 4 && y >= 2 && y < 5;
      EXPECT_EQ(p.row(y)[3 * x + 2], inside ? 7 : 0) << x << "," << y;
      if (inside) {
        EXPECT_EQ(p.row(y)[3 * x], x - 2);
        EXPECT_EQ(p.row(y)[3 * x + 1], y - 2);
      }
    }
  // Mixed: wider than the image, shorter than it.
  const Image m = center_crop(coords(3, 9), 4, 4);  // columns: pad ceil(1/2) = 1; rows: top = (9-4)//2 = 2
  EXPECT_EQ(m.row(0)[2], 0);                       // column 0 is padding
  EXPECT_EQ(m.row(0)[3 * 1 + 2], 7);
  EXPECT_EQ(m.row(0)[3 * 1 + 1], 2);
  EXPECT_EQ(m.row(3)[3 * 3 + 0], 2);
  EXPECT_THROW(center_crop(coords(3, 3), 0, 2), Error);
}

TEST(VisionPad, ExpandToSquareOffsets) {
  const std::array<uint8_t, 3> fill{122, 116, 104};
  // Landscape 5x2: S = 5, pasted at (0, (5-2)//2 = 1).
  const Image a = pad_to_square(coords(5, 2), fill);
  ASSERT_EQ(a.width, 5);
  ASSERT_EQ(a.height, 5);
  EXPECT_EQ(a.row(0)[0], 122);
  EXPECT_EQ(a.row(0)[2], 104);
  EXPECT_EQ(a.row(1)[2], 7);
  EXPECT_EQ(a.row(1)[3 * 4], 4);
  EXPECT_EQ(a.row(2)[3 * 4 + 1], 1);
  EXPECT_EQ(a.row(3)[1], 116);
  EXPECT_EQ(a.row(4)[1], 116);
  // Portrait 2x5: pasted at ((5-2)//2 = 1, 0).
  const Image b = pad_to_square(coords(2, 5), fill);
  EXPECT_EQ(b.row(0)[0], 122);
  EXPECT_EQ(b.row(0)[3 + 2], 7);
  EXPECT_EQ(b.row(4)[3 * 2], 1);
  EXPECT_EQ(b.row(4)[3 * 3], 122);
  // Even difference 4x2: pasted at row 1 of 4.
  const Image c = pad_to_square(coords(4, 2), fill);
  EXPECT_EQ(c.row(0)[2], 104);
  EXPECT_EQ(c.row(1)[2], 7);
  EXPECT_EQ(c.row(2)[2], 7);
  EXPECT_EQ(c.row(3)[2], 104);
  // Square input is unchanged; gray becomes RGB; RGBA gets an opaque fill.
  EXPECT_EQ(pad_to_square(coords(3, 3), fill).pixels, coords(3, 3).pixels);
  Image g = Image::zeros(1, 3, 1);
  g.pixels = {10, 20, 30};
  const Image gp = pad_to_square(g, fill);
  EXPECT_EQ(gp.channels, 3);
  EXPECT_EQ(gp.row(1)[3 * 1 + 0], 20);
  EXPECT_EQ(gp.row(1)[0], 122);
  Image rgba = Image::zeros(2, 1, 4);
  rgba.pixels = {1, 2, 3, 4, 5, 6, 7, 8};
  const Image rp = pad_to_square(rgba, fill);
  EXPECT_EQ(rp.channels, 4);
  EXPECT_EQ(rp.pixels, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8,  // S = 2: pasted at row (2-1)//2 = 0
                                             122, 116, 104, 255, 122, 116, 104, 255}));
}

TEST(VisionConvert, ToRgbDropsAlphaAndReplicatesGray) {
  Image rgba = Image::zeros(2, 1, 4);
  rgba.pixels = {10, 20, 30, 0, 40, 50, 60, 128};
  const Image a = to_rgb(rgba);
  EXPECT_EQ(a.channels, 3);
  EXPECT_EQ(a.pixels, (std::vector<uint8_t>{10, 20, 30, 40, 50, 60}));
  Image g = Image::zeros(3, 1, 1);
  g.pixels = {0, 77, 255};
  EXPECT_EQ(to_rgb(g).pixels, (std::vector<uint8_t>{0, 0, 0, 77, 77, 77, 255, 255, 255}));
  const Image rgb = coords(3, 2);
  EXPECT_EQ(to_rgb(rgb).pixels, rgb.pixels);
  EXPECT_THROW(to_rgb(Image()), Error);
}

TEST(VisionOrientation, AllEightValuesLikePil) {
  // a b c
  // d e f   as gray values 1..6
  Image img = Image::zeros(3, 2, 1);
  img.pixels = {1, 2, 3, 4, 5, 6};
  const std::vector<std::vector<uint8_t>> want = {
      {},                  // 0 (unused)
      {1, 2, 3, 4, 5, 6},  // 1 identity
      {3, 2, 1, 6, 5, 4},  // 2 FLIP_LEFT_RIGHT
      {6, 5, 4, 3, 2, 1},  // 3 ROTATE_180
      {4, 5, 6, 1, 2, 3},  // 4 FLIP_TOP_BOTTOM
      {1, 4, 2, 5, 3, 6},  // 5 TRANSPOSE
      {4, 1, 5, 2, 6, 3},  // 6 ROTATE_270 (90 clockwise)
      {6, 3, 5, 2, 4, 1},  // 7 TRANSVERSE
      {3, 6, 2, 5, 1, 4},  // 8 ROTATE_90 (90 counter-clockwise)
  };
  for (int o = 1; o <= 8; ++o) {
    const Image out = apply_orientation(img, o);
    EXPECT_EQ(out.width, o >= 5 ? 2 : 3) << o;
    EXPECT_EQ(out.height, o >= 5 ? 3 : 2) << o;
    EXPECT_EQ(out.pixels, want[size_t(o)]) << "orientation " << o;
  }
  EXPECT_EQ(apply_orientation(img, 0).pixels, img.pixels);
  EXPECT_EQ(apply_orientation(img, 9).pixels, img.pixels);
}
