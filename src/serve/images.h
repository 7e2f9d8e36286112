// Where the images of a request come from: data URLs (base64 PNG or JPEG), or local files when the server was
// started with --allow-local-images DIR (confined to that folder). Remote URLs are refused: the server
// fetches nothing. Decoding happens afterwards (vision::decode_image), which checks the pixel count before
// decoding.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace iris::serve {

struct ImageSourceOptions {
  std::string allow_local_dir;         // empty: local files are refused
  size_t max_image_bytes = 20u << 20;  // encoded size of one image
};

// The encoded bytes behind an image_url. `param` names the field in errors. Throws HttpError (400, or 413
// when the image is over max_image_bytes).
std::string load_image_url(const std::string& url, const std::string& param, const ImageSourceOptions& opt);

// Standard base64 (RFC 4648 alphabet; padding optional; ASCII whitespace ignored, as in MIME). Throws
// iris::Error naming the first bad character. max_out: refuse (before decoding) input that would decode to
// more bytes.
std::string base64_decode(std::string_view in, size_t max_out = SIZE_MAX);
std::string base64_encode(std::string_view in);

}  // namespace iris::serve
