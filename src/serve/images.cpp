// Image sources of chat requests: data URLs and confined local files (see images.h).
#include "serve/images.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "serve/errors.h"
#include "serve/net_util.h"
#include "tensor/error.h"

namespace iris::serve {

namespace fs = std::filesystem;

namespace {

constexpr std::array<int8_t, 256> make_base64_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int i = 0; i < 64; ++i) t[uint8_t(a[i])] = int8_t(i);
  return t;
}
constexpr std::array<int8_t, 256> kBase64 = make_base64_table();

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(uint8_t(s[i])) != std::tolower(uint8_t(prefix[i]))) return false;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, const std::string& param) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1, lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      throw HttpError(400, "Invalid percent-encoding in the file URL of '" + param + "'.", param);
    out += char(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// data:[<mediatype>][;param=value]*[;base64],<data>
std::string load_data_url(const std::string& url, const std::string& param, const ImageSourceOptions& opt) {
  size_t comma = url.find(',');
  if (comma == std::string::npos)
    throw HttpError(400, "Invalid data URL in '" + param + "': no ',' before the data.", param,
                    "invalid_image_url");
  std::string_view meta(url.data() + 5, comma - 5);
  std::string media(meta.substr(0, meta.find(';')));
  bool is_base64 = false;
  for (size_t p = meta.find(';'); p != std::string_view::npos;) {
    size_t q = meta.find(';', p + 1);
    std::string_view attr =
        meta.substr(p + 1, q == std::string_view::npos ? std::string_view::npos : q - p - 1);
    if (ascii_lower(std::string(attr)) == "base64") is_base64 = true;
    p = q;
  }
  media = ascii_lower(media);
  if (!media.empty() && media.rfind("image/", 0) != 0)
    throw HttpError(400,
                    "Invalid data URL in '" + param + "': media type '" + media +
                        "' is not an image (send image/png or image/jpeg).",
                    param, "invalid_image_format");
  if (!is_base64)
    throw HttpError(
        400,
        "Invalid data URL in '" + param + "': the image must be base64-encoded (data:image/png;base64,...).",
        param, "invalid_image_url");
  std::string_view b64(url.data() + comma + 1, url.size() - comma - 1);
  try {
    return base64_decode(b64, opt.max_image_bytes);
  } catch (const Error& e) {
    std::string msg = e.what();
    if (msg.find("larger than") != std::string::npos)
      throw HttpError(413, "Image in '" + param + "' is too large: " + msg, param, "image_too_large");
    throw HttpError(400, "Invalid base64 in the data URL of '" + param + "': " + msg, param,
                    "invalid_image_url");
  }
}

std::string load_local_file(const std::string& url, const std::string& param, const ImageSourceOptions& opt) {
  if (opt.allow_local_dir.empty())
    throw HttpError(
        400,
        "Invalid image URL in '" + param +
            "': local files are not served (start the server with --allow-local-images DIR), send "
            "the image as a data URL (data:image/png;base64,...).",
        param, "invalid_image_url");
  std::string path = url;
  if (starts_with_nocase(url, "file://")) {
    std::string rest = url.substr(7);
    if (starts_with_nocase(rest, "localhost/")) rest = rest.substr(9);
    if (rest.empty() || rest[0] != '/')
      throw HttpError(400, "Invalid file URL in '" + param + "': expected file:///absolute/path.", param,
                      "invalid_image_url");
    path = percent_decode(rest, param);
  }
  if (path.empty() || path.find('\0') != std::string::npos)
    throw HttpError(400, "Invalid image path in '" + param + "'.", param, "invalid_image_url");
  std::error_code ec;
  fs::path root = fs::canonical(opt.allow_local_dir, ec);
  if (ec) throw HttpError(500, "The --allow-local-images folder is not readable: " + ec.message());
  fs::path p(path);
  if (p.is_relative()) p = root / p;
  // canonical() resolves '..' and symbolic links, so the prefix test below sees where the file really is.
  fs::path real = fs::canonical(p, ec);
  const std::string denied = "Image path in '" + param +
                             "' is not a readable file inside the folder allowed by --allow-local-images.";
  if (ec) throw HttpError(400, denied, param, "invalid_image_url");
  auto [root_end, real_it] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
  if (root_end != root.end() || !fs::is_regular_file(real, ec))
    throw HttpError(400, denied, param, "invalid_image_url");
  uintmax_t size = fs::file_size(real, ec);
  if (ec) throw HttpError(400, denied, param, "invalid_image_url");
  if (size > opt.max_image_bytes)
    throw HttpError(413,
                    "Image file in '" + param + "' is too large: " + std::to_string(size) +
                        " bytes (at most " + std::to_string(opt.max_image_bytes) + ").",
                    param, "image_too_large");
  std::ifstream f(real, std::ios::binary);
  std::string bytes(size_t(size), '\0');
  if (!f.read(bytes.data(), std::streamsize(size))) throw HttpError(400, denied, param, "invalid_image_url");
  return bytes;
}

}  // namespace

std::string base64_decode(std::string_view in, size_t max_out) {
  // An upper bound first, so a huge payload is refused before anything is allocated for it.
  size_t bound = in.size() / 4 * 3 + 3;
  if (bound > max_out) {
    size_t chars = 0;
    for (char c : in) chars += kBase64[uint8_t(c)] >= 0;
    IRIS_CHECK(chars / 4 * 3 + (chars % 4 ? chars % 4 - 1 : 0) <= max_out,
               "the decoded data would be larger than ", max_out, " bytes");
  }
  std::string out;
  out.reserve(std::min(bound, max_out));
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0, pos = 0;
  for (char ch : in) {
    ++pos;
    uint8_t c = uint8_t(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (c == '=') {
      ++pad;
      IRIS_CHECK(pad <= 2, "too much '=' padding at character ", pos);
      continue;
    }
    IRIS_CHECK(pad == 0, "data after '=' padding at character ", pos);
    int v = kBase64[c];
    IRIS_CHECK(v >= 0, "character ", pos, " (byte 0x", "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15],
               ") is not in the base64 alphabet");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  IRIS_CHECK(bits < 6, "the data ends in the middle of a byte (its length is not valid base64)");
  IRIS_CHECK(out.size() <= max_out, "the decoded data would be larger than ", max_out, " bytes");
  return out;
}

std::string base64_encode(std::string_view in) {
  const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    out += a[(v >> 6) & 63];
    out += a[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | (i + 1 < in.size() ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    out += i + 1 < in.size() ? a[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string load_image_url(const std::string& url, const std::string& param, const ImageSourceOptions& opt) {
  if (starts_with_nocase(url, "data:")) return load_data_url(url, param, opt);
  if (starts_with_nocase(url, "http://") || starts_with_nocase(url, "https://"))
    throw HttpError(400,
                    "Invalid image URL in '" + param +
                        "': this server does not fetch remote URLs; send the image as a data URL "
                        "(data:image/png;base64,... or data:image/jpeg;base64,...).",
                    param, "invalid_image_url");
  size_t colon = url.find(':');
  bool has_scheme = colon != std::string::npos && colon > 1 &&
                    std::all_of(url.begin(), url.begin() + long(colon), [](char c) {
                      return std::isalpha(uint8_t(c)) || c == '+' || c == '-' || c == '.';
                    });
  if (has_scheme && !starts_with_nocase(url, "file:"))
    throw HttpError(400,
                    "Invalid image URL in '" + param + "': unsupported scheme '" + url.substr(0, colon) +
                        "' (send a data URL: data:image/png;base64,...).",
                    param, "invalid_image_url");
  return load_local_file(url, param, opt);
}

}  // namespace iris::serve
