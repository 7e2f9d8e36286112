// Internal to src/vision: the JPEG and PNG decoders behind decode_image, and shared checks. Not a public header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vision/image.h"

namespace iris::vision::detail {

// Pixels plus the raw EXIF payload found in the file (empty when none or not asked for).
struct Decoded {
  Image image;
  std::vector<uint8_t> exif;
};

Decoded decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& opt, const std::string& name);
Decoded decode_png(const uint8_t* data, size_t size, const DecodeOptions& opt, const std::string& name);

// Throws when a header's size is empty or above the pixel limit, naming the file, the size and the limit.
void check_header_size(int64_t width, int64_t height, int64_t max_pixels, const std::string& name, const char* format);

}  // namespace iris::vision::detail
