// EXIF orientation: reading TIFF tag 0x0112 from IFD0 of an EXIF block (JPEG APP1 or PNG eXIf), and applying it
// like PIL.ImageOps.exif_transpose, which transformers' load_image calls. Any malformed block reads as "no
// orientation": a bad EXIF must never stop an image from loading.
#include <cstddef>
#include <cstring>

#include "tensor/error.h"
#include "vision/image.h"

namespace iris::vision {

int exif_orientation(const uint8_t* data, size_t size) {
  if (!data) return 0;
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8) return 0;
  bool little;
  if (std::memcmp(data, "II*\0", 4) == 0) little = true;
  else if (std::memcmp(data, "MM\0*", 4) == 0) little = false;
  else return 0;
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? uint32_t(data[at]) | uint32_t(data[at + 1]) << 8 : uint32_t(data[at]) << 8 | uint32_t(data[at + 1]);
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2);
  };
  const size_t ifd = u32(4);
  if (ifd > size || size - ifd < 2) return 0;
  const size_t count = u16(ifd);
  // Entries are read until the block ends (PIL keeps the entries it could read from a truncated IFD).
  for (size_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e > size || size - e < 12) break;
    if (u16(e) != 0x0112) continue;
    const uint32_t type = u16(e + 2), n = u32(e + 4);
    if (n != 1) return 0;  // PIL reads a tuple then, which exif_transpose does not recognise
    uint32_t v;
    switch (type) {
      case 1: case 6: v = data[e + 8]; break;   // BYTE, SBYTE
      case 3: case 8: v = u16(e + 8); break;    // SHORT, SSHORT (the standard type)
      case 4: case 9: v = u32(e + 8); break;    // LONG, SLONG
      default: return 0;
    }
    return v >= 1 && v <= 8 ? int(v) : 0;
  }
  return 0;
}

Image apply_orientation(const Image& img, int orientation) {
  IRIS_CHECK(img.pixels.size() == size_t(img.width) * size_t(img.height) * size_t(img.channels),
             "apply_orientation: image holds ", img.pixels.size(), " bytes, expected ", img.width, "x", img.height, "x",
             img.channels);
  if (orientation < 2 || orientation > 8) return img;
  const int W = img.width, H = img.height, C = img.channels;
  // PIL: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270 (90 clockwise),
  // 7 TRANSVERSE, 8 ROTATE_90 (90 counter-clockwise). 5..8 swap width and height.
  const bool swap = orientation >= 5;
  Image out = Image::zeros(swap ? H : W, swap ? W : H, C);
  // Output row y is a straight walk through the source: a start pixel and a byte step per output pixel.
  const ptrdiff_t px = C, line = ptrdiff_t(img.row_bytes());
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = nullptr;
    ptrdiff_t step = 0;
    switch (orientation) {
      case 2: src = img.row(y) + (W - 1) * px; step = -px; break;                // (W-1-x, y)
      case 3: src = img.row(H - 1 - y) + (W - 1) * px; step = -px; break;        // (W-1-x, H-1-y)
      case 4: src = img.row(H - 1 - y); step = px; break;                        // (x, H-1-y)
      case 5: src = img.row(0) + y * px; step = line; break;                     // (y, x)
      case 6: src = img.row(H - 1) + y * px; step = -line; break;                // (y, H-1-x)
      case 7: src = img.row(H - 1) + (W - 1 - y) * px; step = -line; break;      // (W-1-y, H-1-x)
      default: src = img.row(0) + (W - 1 - y) * px; step = line; break;          // 8: (W-1-y, x)
    }
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out.width; ++x, dst += C) {
      const uint8_t* p = src + x * step;  // indexed, never stepped past either end of the buffer
      for (int c = 0; c < C; ++c) dst[c] = p[c];
    }
  }
  return out;
}

}  // namespace iris::vision
