// Image basics: construction, format sniffing and dispatch to the JPEG/PNG decoders, file loading, RGB conversion,
// and the crop/pad steps of Hugging Face and LLaVA preprocessing.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "tensor/error.h"
#include "vision/codec.h"
#include "vision/image.h"

namespace iris::vision {

namespace {
// Sizes stay well inside int arithmetic everywhere (x * channels, offsets), whatever the caller asks for.
constexpr int64_t kMaxSide = 1 << 20;
constexpr int64_t kMaxBytes = int64_t(1) << 34;

void check_image(const Image& img, const char* what) {
  IRIS_CHECK(img.width > 0 && img.height > 0, what, ": image is ", img.width, "x", img.height,
             ", expected a non-empty image");
  IRIS_CHECK(img.channels == 1 || img.channels == 3 || img.channels == 4, what, ": image has ", img.channels,
             " channels, expected 1, 3 or 4");
  IRIS_CHECK(img.pixels.size() == size_t(img.width) * size_t(img.height) * size_t(img.channels), what,
             ": image holds ", img.pixels.size(), " bytes, expected ", img.width, "x", img.height, "x", img.channels);
}

int64_t floor_div2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

std::string hex_prefix(const uint8_t* data, size_t size) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < size && i < 8; ++i) {
    if (i) s += ' ';
    s += digits[data[i] >> 4];
    s += digits[data[i] & 15];
  }
  return s;
}

// A friendlier word for formats we recognise but do not decode.
const char* known_other_format(const uint8_t* d, size_t n) {
  if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) return "GIF";
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "BMP";
  if (n >= 4 && (std::memcmp(d, "II*\0", 4) == 0 || std::memcmp(d, "MM\0*", 4) == 0)) return "TIFF";
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
  return nullptr;
}
}  // namespace

Image Image::zeros(int w, int h, int c) {
  IRIS_CHECK(w > 0 && h > 0 && w <= kMaxSide && h <= kMaxSide, "image size ", w, "x", h, " is out of range (1..",
             kMaxSide, " per side)");
  IRIS_CHECK(c == 1 || c == 3 || c == 4, "image channels ", c, ", expected 1, 3 or 4");
  const int64_t bytes = int64_t(w) * h * c;
  IRIS_CHECK(bytes <= kMaxBytes, "image ", w, "x", h, "x", c, " is too large (", bytes, " bytes)");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels.assign(size_t(bytes), 0);
  return img;
}

namespace detail {
void check_header_size(int64_t width, int64_t height, int64_t max_pixels, const std::string& name, const char* format) {
  IRIS_CHECK(width > 0 && height > 0, name, ": ", format, " header gives an empty image (", width, "x", height, ")");
  // Sides first: they bound the product below, which could otherwise overflow for 32-bit PNG sizes.
  IRIS_CHECK(width <= kMaxSide && height <= kMaxSide, name, ": ", format, " image is ", width, "x", height,
             ", above the limit of ", kMaxSide, " pixels per side");
  const int64_t pixels = width * height;
  IRIS_CHECK(pixels <= max_pixels, name, ": ", format, " image is ", width, "x", height, " (", pixels,
             " pixels), above the limit of ", max_pixels, " pixels (DecodeOptions::max_pixels)");
}
}  // namespace detail

Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& opt, const std::string& name) {
  IRIS_CHECK(data || size == 0, name, ": null data pointer");
  IRIS_CHECK(size > 0, name, ": empty file (0 bytes), expected a JPEG or PNG image");
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  detail::Decoded d;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    d = detail::decode_jpeg(data, size, opt, name);
  } else if (size >= 8 && std::memcmp(data, png_sig, 8) == 0) {
    d = detail::decode_png(data, size, opt, name);
  } else {
    const char* other = known_other_format(data, size);
    throw Error(str_cat(name, ": not a JPEG or PNG image (", size, " bytes starting ", hex_prefix(data, size), ")",
                        other ? str_cat("; it looks like ", other, ", which is not supported") : std::string()));
  }
  if (opt.apply_exif_orientation && !d.exif.empty()) {
    const int orientation = exif_orientation(d.exif.data(), d.exif.size());
    if (orientation >= 2) return apply_orientation(d.image, orientation);
  }
  return std::move(d.image);
}

Image load_image(const std::string& path, const DecodeOptions& opt) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  IRIS_CHECK(f.is_open(), path, ": cannot open image file");
  const std::streamoff end = f.tellg();
  IRIS_CHECK(end >= 0, path, ": cannot read the size of the image file");
  // Compressed data bigger than the largest allowed raw image plus slack cannot be a sane image.
  const int64_t max_px = std::clamp<int64_t>(opt.max_pixels, 0, int64_t(1) << 40);
  const int64_t max_file = std::max<int64_t>(int64_t(64) << 20, max_px * 4 + (int64_t(16) << 20));
  IRIS_CHECK(int64_t(end) <= max_file, path, ": image file is ", int64_t(end), " bytes, above the limit of ", max_file);
  std::vector<uint8_t> bytes(static_cast<size_t>(end));
  f.seekg(0);
  if (end > 0) f.read(reinterpret_cast<char*>(bytes.data()), end);
  IRIS_CHECK(f.good() && f.gcount() == end, path, ": read ", int64_t(f.gcount()), " of ", int64_t(end), " bytes");
  return decode_image(bytes.data(), bytes.size(), opt, path);
}

Image to_rgb(const Image& img) {
  check_image(img, "to_rgb");
  if (img.channels == 3) return img;
  Image out = Image::zeros(img.width, img.height, 3);
  const size_t n = size_t(img.width) * size_t(img.height);
  const uint8_t* in = img.pixels.data();
  uint8_t* o = out.pixels.data();
  if (img.channels == 1) {
    for (size_t i = 0; i < n; ++i, o += 3) o[0] = o[1] = o[2] = in[i];
  } else {  // RGBA: keep R, G, B as they are (PIL drops alpha, no compositing)
    for (size_t i = 0; i < n; ++i, o += 3, in += 4) {
      o[0] = in[0];
      o[1] = in[1];
      o[2] = in[2];
    }
  }
  return out;
}

Image center_crop(const Image& img, int width, int height) {
  check_image(img, "center_crop");
  IRIS_CHECK(width > 0 && height > 0, "center_crop: crop size ", width, "x", height, ", expected positive sides");
  // HF slices rows top..top+h with top = (H-h)//2; when the crop is larger it first centres the image on a zero
  // canvas at ceil((h-H)/2), which is the same as reading source row y + (H-h)//2 and padding outside. Likewise for
  // columns.
  const int64_t top = floor_div2(int64_t(img.height) - height), left = floor_div2(int64_t(img.width) - width);
  Image out = Image::zeros(width, height, img.channels);
  const int C = img.channels;
  const int64_t x0 = std::max<int64_t>(0, -left), x1 = std::min<int64_t>(width, int64_t(img.width) - left);
  for (int y = 0; y < height; ++y) {
    const int64_t sy = y + top;
    if (sy < 0 || sy >= img.height || x1 <= x0) continue;
    std::memcpy(out.row(y) + x0 * C, img.row(int(sy)) + (x0 + left) * C, size_t(x1 - x0) * C);
  }
  return out;
}

Image pad_to_square(const Image& img, std::array<uint8_t, 3> fill) {
  check_image(img, "pad_to_square");
  if (img.channels == 1) return pad_to_square(to_rgb(img), fill);
  const int W = img.width, H = img.height, C = img.channels;
  if (W == H) return img;
  const int S = std::max(W, H);
  Image out = Image::zeros(S, S, C);
  for (int y = 0; y < S; ++y) {
    uint8_t* p = out.row(y);
    for (int x = 0; x < S; ++x, p += C) {
      p[0] = fill[0];
      p[1] = fill[1];
      p[2] = fill[2];
      if (C == 4) p[3] = 255;
    }
  }
  const int ox = (S - W) / 2, oy = (S - H) / 2;  // PIL paste offset: ((S-W)//2, (S-H)//2)
  for (int y = 0; y < H; ++y) std::memcpy(out.row(y + oy) + size_t(ox) * C, img.row(y), img.row_bytes());
  return out;
}

}  // namespace iris::vision
