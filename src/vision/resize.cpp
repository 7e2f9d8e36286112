// PIL-exact resampling: Pillow 9.4's Image.resize for 8-bit images (libImaging/Resample.c for the convolution
// filters, Geometry.c's affine-scale path for nearest). Exactness needs the same order of operations: coefficients
// in double, normalised per output pixel, converted to 22-bit fixed point with round-half-away; the horizontal
// pass first, over only the rows the vertical pass will read; each pass rounds (+half, arithmetic shift) and clips
// to uint8. RGBA is premultiplied around the resize with PIL's integer formulas.
#include <cmath>
#include <cstring>
#include <vector>

#include "tensor/error.h"
#include "vision/image.h"

namespace iris::vision {

Resample resample_from_pil(int pil_id) {
  switch (pil_id) {
    case 0: return Resample::Nearest;
    case 1: return Resample::Lanczos;
    case 2: return Resample::Bilinear;
    case 3: return Resample::Bicubic;
    case 4: return Resample::Box;
    case 5: return Resample::Hamming;
  }
  throw Error(str_cat("resample ", pil_id, " is not a PIL filter (expected 0 nearest, 1 lanczos, 2 bilinear, ",
                      "3 bicubic, 4 box or 5 hamming)"));
}

int resample_to_pil(Resample r) {
  switch (r) {
    case Resample::Nearest: return 0;
    case Resample::Lanczos: return 1;
    case Resample::Bilinear: return 2;
    case Resample::Bicubic: return 3;
    case Resample::Box: return 4;
    case Resample::Hamming: return 5;
  }
  return -1;
}

const char* resample_name(Resample r) {
  switch (r) {
    case Resample::Nearest: return "nearest";
    case Resample::Bilinear: return "bilinear";
    case Resample::Bicubic: return "bicubic";
    case Resample::Lanczos: return "lanczos";
    case Resample::Box: return "box";
    case Resample::Hamming: return "hamming";
  }
  return "?";
}

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // 8 bits of result, 2 of headroom for negative lobes and overshoot

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
// The polynomial filters are written one operation per statement: a fused multiply-add would round differently
// from Pillow's separate multiply and add (built without FMA) and could move a coefficient by one fixed-point unit.
// Clang contracts only within an expression and GCC in ISO mode not at all, so separate statements keep them apart.
double hamming_filter(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  const double lobe = 0.46f * std::cos(x);  // float constants, as Pillow writes them
  const double window = 0.54f + lobe;
  return std::sin(x) / x * window;
}
double bicubic_filter(double x) {  // Keys cubic, a = -0.5
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) {
    const double p = (a + 2.0) * x;
    const double q = p - (a + 3.0);
    const double r = q * x * x;
    return r + 1;
  }
  if (x < 2.0) {
    const double p = (x - 5) * x;
    const double q = p + 8;
    const double r = q * x;
    const double s = r - 4;
    return s * a;
  }
  return 0.0;
}
double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}
double lanczos_filter(double x) {  // truncated sinc, 3 lobes
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  switch (r) {
    case Resample::Box: return {box_filter, 0.5};
    case Resample::Bilinear: return {bilinear_filter, 1.0};
    case Resample::Hamming: return {hamming_filter, 1.0};
    case Resample::Bicubic: return {bicubic_filter, 2.0};
    case Resample::Lanczos: return {lanczos_filter, 3.0};
    case Resample::Nearest: break;
  }
  throw Error("resize: no convolution filter for nearest");
}

// Coefficients of one pass: output i reads inputs start[i] .. start[i]+count[i]-1 with weights k[i*ksize ..].
struct Kernel {
  int ksize = 0;
  std::vector<int> start, count;
  std::vector<int32_t> k;
};

Kernel make_kernel(int in_size, int out_size, const Filter& f) {
  // Pillow takes the source box as floats (0, in_size) and works in double from there.
  const float in0 = 0.0f, in1 = float(in_size);
  const double scale = double(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // downscaling widens the filter (antialiasing)
  const double support = f.support * filterscale;
  Kernel kn;
  kn.ksize = int(std::ceil(support)) * 2 + 1;
  IRIS_CHECK(double(kn.ksize) * out_size < 1e9, "resize: ", in_size, " -> ", out_size, " needs too many coefficients");
  kn.start.resize(size_t(out_size));
  kn.count.resize(size_t(out_size));
  kn.k.assign(size_t(out_size) * size_t(kn.ksize), 0);
  std::vector<double> w(size_t(kn.ksize));
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = int(center - support + 0.5);  // (int) truncates, as in C; negatives clamp to 0 anyway
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    if (xmax > kn.ksize) xmax = kn.ksize;  // cannot happen by construction; keeps the buffer safe regardless
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double v = f.fn((x + xmin - center + 0.5) * ss);
      w[size_t(x)] = v;
      ww += v;
    }
    int32_t* kf = &kn.k[size_t(xx) * size_t(kn.ksize)];
    for (int x = 0; x < xmax; ++x) {
      double v = w[size_t(x)];
      if (ww != 0.0) v /= ww;
      // round half away from zero, then truncate: Pillow's normalize_coeffs_8bpc
      kf[x] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    kn.start[size_t(xx)] = xmin;
    kn.count[size_t(xx)] = xmax;
  }
  return kn;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift: floor, as Pillow's lookup index
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over `rows` rows. C is the channel count; the taps of one output pixel are contiguous in memory.
template <int C>
void horizontal_pass(const uint8_t* in, size_t in_stride, int rows, uint8_t* out, size_t out_stride, int out_w,
                     const Kernel& kn) {
  constexpr int32_t half = 1 << (kPrecisionBits - 1);
  // Two rows at a time share the coefficient loads and give the CPU independent accumulator chains.
  int y = 0;
  for (; y + 1 < rows; y += 2) {
    const uint8_t* s0 = in + size_t(y) * in_stride;
    const uint8_t* s1 = s0 + in_stride;
    uint8_t* d0 = out + size_t(y) * out_stride;
    uint8_t* d1 = d0 + out_stride;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &kn.k[size_t(xx) * size_t(kn.ksize)];
      const int n = kn.count[size_t(xx)];
      const uint8_t* p0 = s0 + size_t(kn.start[size_t(xx)]) * C;
      const uint8_t* p1 = s1 + size_t(kn.start[size_t(xx)]) * C;
      int32_t a0[C], a1[C];
      for (int c = 0; c < C; ++c) a0[c] = a1[c] = half;
      for (int t = 0; t < n; ++t) {
        const int32_t kv = k[t];
        for (int c = 0; c < C; ++c) {
          a0[c] += int32_t(p0[t * C + c]) * kv;
          a1[c] += int32_t(p1[t * C + c]) * kv;
        }
      }
      for (int c = 0; c < C; ++c) {
        d0[xx * C + c] = clip8(a0[c]);
        d1[xx * C + c] = clip8(a1[c]);
      }
    }
  }
  for (; y < rows; ++y) {
    const uint8_t* s0 = in + size_t(y) * in_stride;
    uint8_t* d0 = out + size_t(y) * out_stride;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &kn.k[size_t(xx) * size_t(kn.ksize)];
      const int n = kn.count[size_t(xx)];
      const uint8_t* p0 = s0 + size_t(kn.start[size_t(xx)]) * C;
      int32_t a0[C];
      for (int c = 0; c < C; ++c) a0[c] = half;
      for (int t = 0; t < n; ++t)
        for (int c = 0; c < C; ++c) a0[c] += int32_t(p0[t * C + c]) * k[t];
      for (int c = 0; c < C; ++c) d0[xx * C + c] = clip8(a0[c]);
    }
  }
}

// Vertical pass: output row yy is a weighted sum of input rows start[yy] + t; the inner loop runs along a whole
// row, which vectorises.
void vertical_pass(const uint8_t* in, size_t stride, uint8_t* out, int out_h, size_t row_len, const Kernel& kn,
                   int row_offset) {
  constexpr int32_t half = 1 << (kPrecisionBits - 1);
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &kn.k[size_t(yy) * size_t(kn.ksize)];
    const int n = kn.count[size_t(yy)];
    const int y0 = kn.start[size_t(yy)] - row_offset;
    int32_t* a = acc.data();
    for (size_t i = 0; i < row_len; ++i) a[i] = half;
    for (int t = 0; t < n; ++t) {
      const uint8_t* s = in + size_t(y0 + t) * stride;
      const int32_t kv = k[t];
      for (size_t i = 0; i < row_len; ++i) a[i] += int32_t(s[i]) * kv;
    }
    uint8_t* d = out + size_t(yy) * row_len;
    for (size_t i = 0; i < row_len; ++i) d[i] = clip8(a[i]);
  }
}

void run_horizontal(const Image& in, int first_row, int rows, Image& out, const Kernel& kn) {
  const uint8_t* src = in.row(first_row);
  switch (in.channels) {
    case 1: horizontal_pass<1>(src, in.row_bytes(), rows, out.pixels.data(), out.row_bytes(), out.width, kn); break;
    case 3: horizontal_pass<3>(src, in.row_bytes(), rows, out.pixels.data(), out.row_bytes(), out.width, kn); break;
    case 4: horizontal_pass<4>(src, in.row_bytes(), rows, out.pixels.data(), out.row_bytes(), out.width, kn); break;
    default: IRIS_ASSERT(false);
  }
}

// Pillow's ImagingResampleInner: vertical coefficients first (to know which rows matter), then the two passes.
Image resample_convolution(const Image& img, int width, int height, const Filter& f) {
  const bool need_h = width != img.width, need_v = height != img.height;
  const Kernel kv = make_kernel(img.height, height, f);
  const int ybox_first = kv.start.front();
  const int ybox_last = kv.start.back() + kv.count.back();

  if (need_h) {
    const Kernel kh = make_kernel(img.width, width, f);
    Image tmp = Image::zeros(width, ybox_last - ybox_first, img.channels);
    run_horizontal(img, ybox_first, ybox_last - ybox_first, tmp, kh);
    if (!need_v) return tmp;  // then the rows are all of them: ybox covers the whole height
    Image out = Image::zeros(width, height, img.channels);
    vertical_pass(tmp.pixels.data(), tmp.row_bytes(), out.pixels.data(), height, out.row_bytes(), kv, ybox_first);
    return out;
  }
  if (need_v) {
    Image out = Image::zeros(img.width, height, img.channels);
    vertical_pass(img.pixels.data(), img.row_bytes(), out.pixels.data(), height, out.row_bytes(), kv, 0);
    return out;
  }
  return img;
}

// Pillow's nearest resize: ImagingTransform affine with a = (sx, 0, 0, 0, sy, 0) -> ImagingScaleAffine, which walks
// the source position by repeated addition (so its rounding is reproduced, not recomputed) and fills pixels that
// fall outside the source with 0.
Image resample_nearest(const Image& img, int width, int height) {
  const float bw = float(img.width), bh = float(img.height);
  const double a0 = double(bw - 0.0f) / width, a4 = double(bh - 0.0f) / height;
  std::vector<int> xin(size_t(width), -1);
  double xo = 0.0 + a0 * 0.5;
  for (int x = 0; x < width; ++x) {
    const int xi = xo < 0.0 ? -1 : int(xo);
    if (xi >= 0 && xi < img.width) xin[size_t(x)] = xi;
    xo += a0;
  }
  Image out = Image::zeros(width, height, img.channels);  // zero-filled: Pillow's fill=1
  const int C = img.channels;
  double yo = 0.0 + a4 * 0.5;
  for (int y = 0; y < height; ++y) {
    const int yi = yo < 0.0 ? -1 : int(yo);
    yo += a4;
    if (yi < 0 || yi >= img.height) continue;
    const uint8_t* src = img.row(yi);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < width; ++x)
      if (xin[size_t(x)] >= 0) std::memcpy(dst + size_t(x) * C, src + size_t(xin[size_t(x)]) * C, size_t(C));
  }
  return out;
}

// PIL's RGBA -> RGBa: c * a / 255 with MULDIV255 rounding.
Image premultiply(const Image& img) {
  Image out = img;
  uint8_t* p = out.pixels.data();
  for (size_t i = 0, n = size_t(img.width) * img.height; i < n; ++i, p += 4) {
    const unsigned a = p[3];
    for (int c = 0; c < 3; ++c) {
      const unsigned t = p[c] * a + 128;
      p[c] = uint8_t(((t >> 8) + t) >> 8);
    }
  }
  return out;
}

// PIL's RGBa -> RGBA: 255 * c / a (integer division, clipped); alpha 0 and 255 leave colours as they are.
void unpremultiply(Image& img) {
  uint8_t* p = img.pixels.data();
  for (size_t i = 0, n = size_t(img.width) * img.height; i < n; ++i, p += 4) {
    const unsigned a = p[3];
    if (a == 0 || a == 255) continue;
    for (int c = 0; c < 3; ++c) {
      const unsigned v = 255u * p[c] / a;
      p[c] = uint8_t(v > 255 ? 255 : v);
    }
  }
}

}  // namespace

Image resize(const Image& img, int width, int height, Resample r) {
  IRIS_CHECK(img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3 || img.channels == 4) &&
                 img.pixels.size() == size_t(img.width) * size_t(img.height) * size_t(img.channels),
             "resize: invalid input image ", img.width, "x", img.height, "x", img.channels, " holding ",
             img.pixels.size(), " bytes");
  IRIS_CHECK(width > 0 && height > 0, "resize: target size ", width, "x", height, ", expected positive sides");
  if (width == img.width && height == img.height) return img;  // Pillow returns a copy, unfiltered
  if (r == Resample::Nearest) return resample_nearest(img, width, height);
  const Filter f = filter_for(r);
  if (img.channels == 4) {  // Pillow resizes RGBA as premultiplied RGBa
    Image out = resample_convolution(premultiply(img), width, height, f);
    unpremultiply(out);
    return out;
  }
  return resample_convolution(img, width, height, f);
}

}  // namespace iris::vision
