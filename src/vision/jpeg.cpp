// JPEG decoding with libjpeg-turbo, configured as PIL configures it (islow IDCT, fancy upsampling, the library's
// colour-space guess), so decoded pixels equal PIL's bit for bit. libjpeg reports errors by calling error_exit,
// which must not return: we longjmp back to run_jpeg() and turn the message into iris::Error there. Warnings
// (recoverable corrupt-data notes) are dropped silently, as PIL does; running out of data is an error.
#include <csetjmp>
#include <cstddef>
#include <cstdio>  // jpeglib.h needs size_t and FILE declared first
#include <cstring>
#include <memory>

#include <jpeglib.h>

#include "tensor/error.h"
#include "vision/codec.h"

namespace iris::vision::detail {
namespace {

// A progressive file may hold any number of scans; each costs a pass over the coefficients, so a small file could
// keep the decoder busy for minutes. 500 is TurboJPEG's own limit (TJFLAG_LIMITSCANS); real files use about 10.
constexpr int kMaxScans = 500;

struct JpegJob {
  // libjpeg state; err.pub must stay the first member of err (libjpeg hands back a pointer to it).
  struct Err {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX + 64];
  } err;
  jpeg_decompress_struct cinfo;
  jpeg_source_mgr src;
  jpeg_progress_mgr progress;
  bool created = false;

  // inputs
  const uint8_t* data = nullptr;
  size_t size = 0;
  const DecodeOptions* opt = nullptr;
  const std::string* name = nullptr;

  // outputs
  Image image;
  std::vector<uint8_t> exif;
  std::vector<uint8_t> cmyk_row;

  JpegJob() {
    std::memset(&err, 0, sizeof err);
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&src, 0, sizeof src);
    std::memset(&progress, 0, sizeof progress);
  }
  ~JpegJob() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  JpegJob(const JpegJob&) = delete;
  JpegJob& operator=(const JpegJob&) = delete;
};

JpegJob::Err* err_of(j_common_ptr cinfo) { return reinterpret_cast<JpegJob::Err*>(cinfo->err); }

[[noreturn]] void on_error_exit(j_common_ptr cinfo) {
  auto* e = err_of(cinfo);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}
void on_emit_message(j_common_ptr, int) {}  // warnings and trace messages: ignored, never printed
void on_output_message(j_common_ptr) {}

[[noreturn]] void fail_truncated(j_decompress_ptr cinfo) {
  auto* e = err_of(reinterpret_cast<j_common_ptr>(cinfo));
  std::snprintf(e->message, sizeof e->message, "truncated JPEG (premature end of data)");
  std::longjmp(e->jump, 1);
}

// Memory source: the whole file is in the buffer from the start, so any request for more data means the file
// ended early (libjpeg's own memory source would insert a fake EOI and decode grey instead).
void src_init(j_decompress_ptr) {}
boolean src_fill(j_decompress_ptr cinfo) { fail_truncated(cinfo); }
void src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  if (size_t(n) > cinfo->src->bytes_in_buffer) fail_truncated(cinfo);
  cinfo->src->next_input_byte += n;
  cinfo->src->bytes_in_buffer -= size_t(n);
}
void src_term(j_decompress_ptr) {}

void on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxScans) {
    auto* e = err_of(cinfo);
    std::snprintf(e->message, sizeof e->message, "JPEG has more than %d scans (refused: decoding would be too slow)",
                  kMaxScans);
    std::longjmp(e->jump, 1);
  }
}

// PIL opens 4-component JPEGs as "CMYK;I" (Adobe's inverted CMYK) and converts to RGB with
// R = nk - nk*C/255 (nk = 255 - K, MULDIV255 rounding) on the inverted values.
inline uint8_t muldiv255(unsigned a, unsigned b) {
  unsigned t = a * b + 128;
  return uint8_t(((t >> 8) + t) >> 8);
}
void cmyk_inverted_to_rgb(const uint8_t* in, uint8_t* out, int width) {
  for (int x = 0; x < width; ++x, in += 4, out += 3) {
    const unsigned nk = in[3];  // 255 - K, with K = 255 - raw
    for (int c = 0; c < 3; ++c) {
      const int v = int(nk) - int(muldiv255(255u - in[c], nk));
      out[c] = uint8_t(v < 0 ? 0 : v);
    }
  }
}

// Everything that can longjmp runs here. No object with a destructor lives in this frame (longjmp would skip it);
// the state is in *j, which the caller owns. Returns false after a libjpeg error (message in j->err).
bool run_jpeg(JpegJob* j) {
  if (setjmp(j->err.jump)) return false;

  j->cinfo.err = jpeg_std_error(&j->err.pub);
  j->err.pub.error_exit = on_error_exit;
  j->err.pub.emit_message = on_emit_message;
  j->err.pub.output_message = on_output_message;
  j->created = true;  // jpeg_destroy_decompress copes with a half-created object
  jpeg_create_decompress(&j->cinfo);

  j->src.next_input_byte = j->data;
  j->src.bytes_in_buffer = j->size;
  j->src.init_source = src_init;
  j->src.fill_input_buffer = src_fill;
  j->src.skip_input_data = src_skip;
  j->src.resync_to_restart = jpeg_resync_to_restart;
  j->src.term_source = src_term;
  j->cinfo.src = &j->src;
  j->progress.progress_monitor = on_progress;
  j->cinfo.progress = &j->progress;

  if (j->opt->apply_exif_orientation) jpeg_save_markers(&j->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&j->cinfo, TRUE);

  const int width = int(j->cinfo.image_width), height = int(j->cinfo.image_height);
  check_header_size(width, height, j->opt->max_pixels, *j->name, "JPEG");  // throws: no libjpeg frame is active

  int channels = 0;
  switch (j->cinfo.num_components) {
    case 1: j->cinfo.out_color_space = JCS_GRAYSCALE; channels = 1; break;
    case 3: j->cinfo.out_color_space = JCS_RGB; channels = 3; break;
    case 4: j->cinfo.out_color_space = JCS_CMYK; channels = 3; break;  // converted to RGB below
    default:
      throw Error(str_cat(*j->name, ": JPEG with ", j->cinfo.num_components,
                          " components is not supported (expected 1, 3 or 4)"));
  }
  // PIL's settings are libjpeg's defaults; set them anyway so a changed default cannot move our numbers.
  j->cinfo.dct_method = JDCT_ISLOW;
  j->cinfo.do_fancy_upsampling = TRUE;

  for (jpeg_saved_marker_ptr m = j->cinfo.marker_list; m; m = m->next) {
    // PIL keeps the first APP1 starting "Exif\0" (5 bytes); a block that is not TIFF after it yields no orientation.
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 5 && std::memcmp(m->data, "Exif\0", 5) == 0) {
      j->exif.assign(m->data, m->data + m->data_length);
      break;
    }
  }

  jpeg_start_decompress(&j->cinfo);
  const bool cmyk = j->cinfo.out_color_space == JCS_CMYK;
  if (int(j->cinfo.output_width) != width || int(j->cinfo.output_height) != height ||
      j->cinfo.output_components != (cmyk ? 4 : channels))
    throw Error(str_cat(*j->name, ": JPEG decoder output ", j->cinfo.output_width, "x", j->cinfo.output_height, "x",
                        j->cinfo.output_components, " does not match the header"));

  j->image = Image::zeros(width, height, channels);
  if (cmyk) j->cmyk_row.resize(size_t(width) * 4);
  while (j->cinfo.output_scanline < j->cinfo.output_height) {
    const int y = int(j->cinfo.output_scanline);
    JSAMPROW row = cmyk ? j->cmyk_row.data() : j->image.row(y);
    if (jpeg_read_scanlines(&j->cinfo, &row, 1) != 1)
      throw Error(str_cat(*j->name, ": JPEG decoder made no progress at row ", y));
    if (cmyk) cmyk_inverted_to_rgb(j->cmyk_row.data(), j->image.row(y), width);
  }
  // No jpeg_finish_decompress: every row is decoded, and nothing after the last scan changes the pixels. The
  // destructor releases libjpeg's memory.
  return true;
}

// Finds the frame header (SOFn) by walking the marker segments, so the size limit applies even to a file whose
// data is missing. Anything unusual is left for libjpeg to report.
void precheck_jpeg_size(const uint8_t* d, size_t n, const DecodeOptions& opt, const std::string& name) {
  size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return;
    const uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // markers without a length
      i += 2;
      continue;
    }
    if (m == 0xDA || m == 0xD9) return;  // start of scan / end of image: no frame header before it
    const size_t len = size_t(d[i + 2]) << 8 | d[i + 3];
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (i + 9 > n) return;
      const int64_t h = int64_t(d[i + 5]) << 8 | d[i + 6], w = int64_t(d[i + 7]) << 8 | d[i + 8];
      if (h > 0) check_header_size(w, h, opt.max_pixels, name, "JPEG");  // height 0 (DNL): libjpeg refuses it
      return;
    }
    if (len < 2) return;
    i += 2 + len;
  }
}

}  // namespace

Decoded decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& opt, const std::string& name) {
  precheck_jpeg_size(data, size, opt, name);
  auto job = std::make_unique<JpegJob>();
  job->data = data;
  job->size = size;
  job->opt = &opt;
  job->name = &name;
  if (!run_jpeg(job.get())) throw Error(str_cat(name, ": invalid JPEG: ", job->err.message));
  return Decoded{std::move(job->image), std::move(job->exif)};
}

}  // namespace iris::vision::detail
