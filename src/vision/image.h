// Images for the vision front end: decoding JPEG/PNG exactly as PIL does (libjpeg-turbo, libpng), EXIF orientation,
// PNG encoding, and the uint8 geometry steps of Hugging Face image processors (Pillow 9.4 resize, center crop,
// LLaVA's pad-to-square). All images are 8-bit, interleaved, row-major (HWC).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace iris::vision {

struct Image {  // 8-bit, interleaved, row-major (HWC)
  int width = 0, height = 0, channels = 3;  // 1 (gray), 3 (RGB) or 4 (RGBA)
  std::vector<uint8_t> pixels;               // height * width * channels bytes

  static Image zeros(int w, int h, int c);  // zero-filled; checks the size and channel count
  size_t row_bytes() const { return size_t(width) * size_t(channels); }
  uint8_t* row(int y) { return pixels.data() + size_t(y) * row_bytes(); }
  const uint8_t* row(int y) const { return pixels.data() + size_t(y) * row_bytes(); }
};

struct DecodeOptions {
  int64_t max_pixels = 50'000'000;      // refused from the header, before any pixel is decoded
  bool apply_exif_orientation = true;   // as transformers' load_image (PIL.ImageOps.exif_transpose)
};

// Sniffs JPEG/PNG by magic bytes; anything else is refused ("not a JPEG or PNG image"). `name` only labels errors.
// JPEG: islow IDCT + fancy upsampling (libjpeg-turbo defaults, as PIL); gray stays 1 channel; CMYK/YCCK become RGB
// as PIL's convert("RGB") does (Adobe inverted CMYK). PNG: every colour type and depth; palette -> RGB (RGBA when it
// has tRNS), gray+alpha -> RGBA, 16-bit samples keep their high byte except 16-bit gray, which PIL holds as mode
// "I" and clips to 0..255 on conversion. A truncated file is an error.
Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& opt = {}, const std::string& name = "image");
Image load_image(const std::string& path, const DecodeOptions& opt = {});

// EXIF orientation (TIFF tag 0x0112) from an APP1 payload or PNG eXIf chunk, with or without the "Exif\0\0" prefix.
// Returns 1..8, or 0 when absent or malformed (never throws).
int exif_orientation(const uint8_t* data, size_t size);
// Applies an EXIF orientation value like PIL.ImageOps.exif_transpose (values outside 2..8 return a copy).
Image apply_orientation(const Image& img, int orientation);

Image to_rgb(const Image& img);  // PIL convert("RGB"): alpha dropped (no compositing), gray replicated

void save_png(const std::string& path, const Image& img);
std::string encode_png(const Image& img);  // PNG bytes in memory

// PIL numbering in preprocessor configs: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming.
enum class Resample { Nearest, Bilinear, Bicubic, Lanczos, Box, Hamming };
Resample resample_from_pil(int pil_id);  // throws on an unknown id
int resample_to_pil(Resample r);
const char* resample_name(Resample r);

// Pillow 9.4 Image.resize, number for number: separable (horizontal pass first), filter support widened by the
// scale when downscaling, 22-bit fixed-point coefficients, rounding and clipping to uint8 after each pass. RGBA is
// premultiplied around the resize as Pillow does; nearest uses Pillow's affine-scale path.
Image resize(const Image& img, int width, int height, Resample r);

// Hugging Face center_crop: top = (H-h)//2, left = (W-w)//2 (floor division); zero padding where the crop is larger.
Image center_crop(const Image& img, int width, int height);
// LLaVA expand2square: an SxS canvas (S = max(W, H)) filled with `fill`, the image pasted at ((S-W)//2, (S-H)//2).
// Gray input is converted to RGB first; RGBA keeps its alpha and the fill gets alpha 255.
Image pad_to_square(const Image& img, std::array<uint8_t, 3> fill);

}  // namespace iris::vision
