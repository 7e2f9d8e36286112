// PNG decoding and encoding with libpng. Pixels come out as PIL's convert("RGB"/"RGBA") would see them: palette
// expanded, gray+alpha as RGBA, 16-bit samples reduced to their high byte (PIL's ";16B" raw modes), 16-bit gray
// clipped to 0..255 (PIL opens it as mode "I" and clips on conversion). libpng reports errors through a callback
// that must not return: we longjmp back to the run_* function and throw iris::Error from its caller.
#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "tensor/error.h"
#include "vision/codec.h"

namespace iris::vision {
namespace detail {
namespace {

void copy_message(char* dst, size_t cap, const char* msg) { std::snprintf(dst, cap, "%s", msg ? msg : "unknown error"); }

struct PngReadJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[256] = {};
  bool pixels_done = false;

  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  const DecodeOptions* opt = nullptr;
  const std::string* name = nullptr;

  Image image;
  std::vector<uint8_t> wide;  // 16-bit gray rows before clipping
  std::vector<png_bytep> rows;
  std::vector<uint8_t> exif;

  PngReadJob() = default;
  PngReadJob(const PngReadJob&) = delete;
  PngReadJob& operator=(const PngReadJob&) = delete;
  ~PngReadJob() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

[[noreturn]] void on_read_error(png_structp png, png_const_charp msg) {
  auto* j = static_cast<PngReadJob*>(png_get_error_ptr(png));
  copy_message(j->message, sizeof j->message, msg);
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}  // benign problems (bad ancillary CRCs, ...): ignored, never printed

void read_bytes(png_structp png, png_bytep out, size_t n) {
  auto* j = static_cast<PngReadJob*>(png_get_io_ptr(png));
  if (n > j->size - j->pos) png_error(png, "truncated PNG (premature end of data)");
  std::memcpy(out, j->data + j->pos, n);
  j->pos += n;
}

// Everything that can longjmp runs here; no object with a destructor lives in this frame. Returns false after a
// libpng error; an error after the last row (in the chunks that follow IDAT) is ignored, as PIL ignores it.
bool run_png_read(PngReadJob* j) {
  if (setjmp(png_jmpbuf(j->png))) return j->pixels_done;

  png_set_read_fn(j->png, j, read_bytes);
  png_read_info(j->png, j->info);

  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(j->png, j->info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  check_header_size(int64_t(width), int64_t(height), j->opt->max_pixels, *j->name, "PNG");  // throws

  const bool gray16 = color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16;
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
      if (bit_depth < 8) png_set_expand_gray_1_2_4_to_8(j->png);  // 1-bit -> 0/255, 2-bit -> *85, 4-bit -> *17
      break;  // a gray tRNS is left alone: PIL keeps mode "L" and convert("RGB") ignores it
    case PNG_COLOR_TYPE_PALETTE:
      png_set_palette_to_rgb(j->png);  // adds alpha when the file has tRNS (PIL: "P" with transparency)
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      png_set_gray_to_rgb(j->png);  // our images have no 2-channel form; RGBA holds the same information
      break;
    default:
      break;  // RGB (a tRNS colour key is ignored, as PIL's "RGB" does) and RGBA
  }
  if (bit_depth == 16 && !gray16) png_set_strip_16(j->png);  // keeps the high byte, as PIL's ";16B" unpackers
  png_set_interlace_handling(j->png);
  png_read_update_info(j->png, j->info);

  const int channels = png_get_channels(j->png, j->info);
  const int out_depth = png_get_bit_depth(j->png, j->info);
  if (!(channels == 1 || channels == 3 || channels == 4) || out_depth != (gray16 ? 16 : 8) ||
      (gray16 && channels != 1))
    throw Error(str_cat(*j->name, ": PNG colour type ", color_type, " depth ", bit_depth, " decoded to ", channels,
                        " channels of ", out_depth, " bits; expected 1, 3 or 4 channels of 8 bits"));
  const size_t row_bytes = size_t(width) * size_t(channels) * (gray16 ? 2 : 1);
  if (png_get_rowbytes(j->png, j->info) != row_bytes)
    throw Error(str_cat(*j->name, ": PNG row size ", png_get_rowbytes(j->png, j->info), " bytes, expected ", row_bytes));

  j->image = Image::zeros(int(width), int(height), channels);
  j->rows.resize(height);
  if (gray16) {
    j->wide.resize(row_bytes * height);
    for (png_uint_32 y = 0; y < height; ++y) j->rows[y] = j->wide.data() + y * row_bytes;
  } else {
    for (png_uint_32 y = 0; y < height; ++y) j->rows[y] = j->image.row(int(y));
  }
  png_read_image(j->png, j->rows.data());
  if (gray16) {
    const uint8_t* in = j->wide.data();
    uint8_t* out = j->image.pixels.data();
    for (size_t i = 0, n = size_t(width) * height; i < n; ++i) {
      const unsigned v = (unsigned(in[2 * i]) << 8) | in[2 * i + 1];  // big-endian samples
      out[i] = uint8_t(v > 255 ? 255 : v);
    }
  }
  j->pixels_done = true;
  png_read_end(j->png, j->info);  // reads chunks after IDAT, where an eXIf chunk may live
  return true;
}

struct PngWriteJob {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[256] = {};
  bool out_of_memory = false;
  const Image* img = nullptr;
  std::string out;

  PngWriteJob() = default;
  PngWriteJob(const PngWriteJob&) = delete;
  PngWriteJob& operator=(const PngWriteJob&) = delete;
  ~PngWriteJob() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

[[noreturn]] void on_write_error(png_structp png, png_const_charp msg) {
  auto* j = static_cast<PngWriteJob*>(png_get_error_ptr(png));
  copy_message(j->message, sizeof j->message, msg);
  png_longjmp(png, 1);
}

void write_bytes(png_structp png, png_bytep data, size_t n) {
  auto* j = static_cast<PngWriteJob*>(png_get_io_ptr(png));
  try {
    j->out.append(reinterpret_cast<const char*>(data), n);
  } catch (...) {  // an exception must not unwind through libpng's C frames
    j->out_of_memory = true;
  }
  if (j->out_of_memory) png_error(png, "out of memory");
}
void flush_bytes(png_structp) {}

bool run_png_write(PngWriteJob* j) {
  if (setjmp(png_jmpbuf(j->png))) return false;
  const Image& img = *j->img;
  png_set_write_fn(j->png, j, write_bytes, flush_bytes);
  const int type = img.channels == 1 ? PNG_COLOR_TYPE_GRAY : img.channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(j->png, j->info, png_uint_32(img.width), png_uint_32(img.height), 8, type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(j->png, j->info);
  for (int y = 0; y < img.height; ++y) png_write_row(j->png, img.row(y));
  png_write_end(j->png, j->info);
  return true;
}

}  // namespace

Decoded decode_png(const uint8_t* data, size_t size, const DecodeOptions& opt, const std::string& name) {
  // Size limit straight from IHDR (always the first chunk), before libpng reads further: a file that claims a huge
  // image is refused for its size even when the rest of it is missing.
  if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    auto be32 = [&](size_t at) {
      return int64_t(uint32_t(data[at]) << 24 | uint32_t(data[at + 1]) << 16 | uint32_t(data[at + 2]) << 8 |
                     uint32_t(data[at + 3]));
    };
    check_header_size(be32(16), be32(20), opt.max_pixels, name, "PNG");
  }
  auto job = std::make_unique<PngReadJob>();
  job->data = data;
  job->size = size;
  job->opt = &opt;
  job->name = &name;
  job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job.get(), on_read_error, on_warning);
  IRIS_CHECK(job->png, name, ": cannot create a PNG decoder (out of memory)");
  job->info = png_create_info_struct(job->png);
  IRIS_CHECK(job->info, name, ": cannot create a PNG decoder (out of memory)");
  if (!run_png_read(job.get())) throw Error(str_cat(name, ": invalid PNG: ", job->message));

  Decoded out;
  if (opt.apply_exif_orientation) {
    png_uint_32 n = 0;
    png_bytep exif = nullptr;
    if (png_get_eXIf_1(job->png, job->info, &n, &exif) && exif && n > 0) out.exif.assign(exif, exif + n);
  }
  out.image = std::move(job->image);
  return out;
}

}  // namespace detail

namespace {
void check_encodable(const Image& img, const char* what) {
  IRIS_CHECK(img.width > 0 && img.height > 0, what, ": image is ", img.width, "x", img.height, ", expected a non-empty image");
  IRIS_CHECK(img.channels == 1 || img.channels == 3 || img.channels == 4, what, ": image has ", img.channels,
             " channels, expected 1, 3 or 4");
  IRIS_CHECK(img.pixels.size() == size_t(img.width) * size_t(img.height) * size_t(img.channels), what,
             ": image holds ", img.pixels.size(), " bytes, expected ", img.width, "x", img.height, "x", img.channels);
}
}  // namespace

std::string encode_png(const Image& img) {
  check_encodable(img, "encode_png");
  auto job = std::make_unique<detail::PngWriteJob>();
  job->img = &img;
  job->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, job.get(), detail::on_write_error, detail::on_warning);
  IRIS_CHECK(job->png, "encode_png: cannot create a PNG encoder (out of memory)");
  job->info = png_create_info_struct(job->png);
  IRIS_CHECK(job->info, "encode_png: cannot create a PNG encoder (out of memory)");
  if (!detail::run_png_write(job.get())) throw Error(str_cat("encode_png: ", job->message));
  return std::move(job->out);
}

void save_png(const std::string& path, const Image& img) {
  const std::string bytes = encode_png(img);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  IRIS_CHECK(f.is_open(), path, ": cannot open for writing (", std::strerror(errno), ")");
  f.write(bytes.data(), std::streamsize(bytes.size()));
  f.close();
  IRIS_CHECK(!f.fail(), path, ": write of ", bytes.size(), " bytes failed");
}

}  // namespace iris::vision
