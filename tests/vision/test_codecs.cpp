// JPEG and PNG decoding on files generated here with libjpeg and libpng: every PNG colour type and depth, gray,
// progressive and CMYK JPEGs, EXIF orientation (JPEG APP1 and PNG eXIf, both byte orders, all 8 values, malformed
// blocks), PNG round trips, and bad input (empty, random, truncated, corrupted, absurd or zero sizes), each of
// which must end in iris::Error, never a crash or output on stderr.
#include <gtest/gtest.h>

#include <chrono>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>

#include <jpeglib.h>
#include <png.h>

#include "tensor/error.h"
#include "test_util.h"
#include "vision/image.h"
#include "vision/preprocess.h"

using namespace iris;
using namespace iris::vision;
using Bytes = std::vector<uint8_t>;

namespace {

// ---- JPEG writing (libjpeg's default error handler exits; inputs here are always valid) ----
struct JpegOpts {
  int quality = 95;
  bool progressive = false;
  bool ycck = false;  // for 4-channel input: store as YCCK instead of plain CMYK
  bool subsample_420 = false;
  const std::vector<jpeg_scan_info>* script = nullptr;  // custom progressive scan script
};

Bytes encode_jpeg(const Image& img, const JpegOpts& o = {}) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = JDIMENSION(img.width);
  c.image_height = JDIMENSION(img.height);
  c.input_components = img.channels;
  c.in_color_space = img.channels == 1 ? JCS_GRAYSCALE : img.channels == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  if (img.channels == 4 && o.ycck) jpeg_set_colorspace(&c, JCS_YCCK);
  jpeg_set_quality(&c, o.quality, TRUE);
  if (img.channels == 3 && !o.subsample_420)
    for (int i = 0; i < 3; ++i) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
  if (o.progressive) jpeg_simple_progression(&c);
  if (o.script) {
    c.scan_info = o.script->data();
    c.num_scans = int(o.script->size());
  }
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(img.row(int(c.next_scanline)));
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  Bytes out(buf, buf + size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

// Inserts an APP1 segment right after SOI.
Bytes with_app1(const Bytes& jpeg, const Bytes& payload) {
  Bytes out(jpeg.begin(), jpeg.begin() + 2);
  const size_t len = payload.size() + 2;
  out.insert(out.end(), {0xFF, 0xE1, uint8_t(len >> 8), uint8_t(len & 0xFF)});
  out.insert(out.end(), payload.begin(), payload.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

// A TIFF block with IFD0 holding one entry (tag, type, count, value); `exif_prefix` adds "Exif\0\0".
Bytes tiff_block(bool little, uint32_t value, uint16_t type = 3, uint32_t count = 1, uint16_t tag = 0x0112,
                 bool exif_prefix = true) {
  Bytes b;
  if (exif_prefix) b = {'E', 'x', 'i', 'f', 0, 0};
  auto put16 = [&](uint32_t v) {
    if (little) b.insert(b.end(), {uint8_t(v), uint8_t(v >> 8)});
    else b.insert(b.end(), {uint8_t(v >> 8), uint8_t(v)});
  };
  auto put32 = [&](uint32_t v) {
    if (little) { put16(v & 0xFFFF); put16(v >> 16); }
    else { put16(v >> 16); put16(v & 0xFFFF); }
  };
  if (little) b.insert(b.end(), {'I', 'I', 0x2A, 0});
  else b.insert(b.end(), {'M', 'M', 0, 0x2A});
  put32(8);  // IFD0 right after the header
  put16(2);  // two entries: an unrelated tag first, then ours
  put16(0x010F); put16(2); put32(4); b.insert(b.end(), {'A', 'B', 'C', 0});  // Make = "ABC"
  put16(tag); put16(type); put32(count);
  if (type == 3 || type == 8) { put16(value); put16(0); }
  else if (type == 1) { b.insert(b.end(), {uint8_t(value), 0, 0, 0}); }
  else put32(value);
  put32(0);  // no next IFD
  return b;
}

// Random-ish photo-like content: smooth gradients plus noise, so JPEG keeps it recognisable.
Image test_picture(int w, int h, int c, uint32_t seed) {
  Image img = Image::zeros(w, h, c);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch)
        img.row(y)[x * c + ch] = uint8_t((x * 255 / std::max(1, w - 1) + y * 97 / std::max(1, h - 1) + ch * 60 +
                                          int(rng() % 9)) % 256);
  return img;
}

// ---- PNG writing with any colour type / depth / interlace, palette, tRNS, eXIf ----
struct PngSpec {
  int width = 0, height = 0, bit_depth = 8, color_type = PNG_COLOR_TYPE_RGB;
  bool interlace = false;
  std::vector<png_color> palette;
  std::vector<uint8_t> trns_alpha;  // palette alpha entries
  bool gray_trns = false;
  Bytes exif;              // TIFF bytes without "Exif\0\0"
  std::vector<Bytes> rows;  // packed rows as PNG stores them (big-endian 16-bit samples)
};

struct PngWriter {
  std::string out;
  static void write(png_structp p, png_bytep d, size_t n) {
    static_cast<PngWriter*>(png_get_io_ptr(p))->out.append(reinterpret_cast<char*>(d), n);
  }
  static void flush(png_structp) {}
};

bool write_png_impl(png_structp png, png_infop info, const PngSpec& s, PngWriter* w) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, w, PngWriter::write, PngWriter::flush);
  png_set_IHDR(png, info, png_uint_32(s.width), png_uint_32(s.height), s.bit_depth, s.color_type,
               s.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s.palette.empty()) png_set_PLTE(png, info, s.palette.data(), int(s.palette.size()));
  if (!s.trns_alpha.empty()) png_set_tRNS(png, info, s.trns_alpha.data(), int(s.trns_alpha.size()), nullptr);
  png_color_16 key{};
  key.gray = 0;
  if (s.gray_trns) png_set_tRNS(png, info, nullptr, 0, &key);
  if (!s.exif.empty()) png_set_eXIf_1(png, info, png_uint_32(s.exif.size()), const_cast<png_bytep>(s.exif.data()));
  png_write_info(png, info);
  std::vector<png_bytep> rows;
  for (const Bytes& r : s.rows) rows.push_back(const_cast<png_bytep>(r.data()));
  png_set_interlace_handling(png);
  png_write_image(png, rows.data());
  png_write_end(png, info);
  return true;
}

Bytes write_png(const PngSpec& s) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  auto w = std::make_unique<PngWriter>();
  const bool ok = write_png_impl(png, info, s, w.get());
  png_destroy_write_struct(&png, &info);
  EXPECT_TRUE(ok);
  return Bytes(w->out.begin(), w->out.end());
}

uint32_t crc32_of(const uint8_t* d, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= d[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A PNG made of the signature and an IHDR only (with a valid CRC), for header-level checks.
Bytes png_header_only(uint32_t w, uint32_t h) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  auto put32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
  };
  put32(w);
  put32(h);
  for (uint8_t v : {8, 2, 0, 0, 0}) b.push_back(v);  // 8-bit RGB, deflate, no filter, no interlace
  put32(crc32_of(b.data() + 12, 17));
  return b;
}

// Offset of the first SOF0/SOF2 segment's height field.
size_t jpeg_sof_offset(const Bytes& j) {
  for (size_t i = 2; i + 9 < j.size();) {
    if (j[i] != 0xFF) return 0;
    const uint8_t m = j[i + 1];
    const size_t len = size_t(j[i + 2]) << 8 | j[i + 3];
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) return i + 5;  // FF Cx len(2) precision(1) height(2) width(2)
    i += 2 + len;
  }
  return 0;
}

Image decode(const Bytes& b, const DecodeOptions& o = {}) { return decode_image(b.data(), b.size(), o, "test"); }

// Runs decode and classifies: true = decoded, false = iris::Error. Anything else fails the test.
bool decodes(const Bytes& b, const DecodeOptions& o = {}) {
  try {
    const Image img = decode(b, o);
    EXPECT_EQ(img.pixels.size(), size_t(img.width) * img.height * img.channels);
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return false;
  }
}

std::string error_of(const Bytes& b, const DecodeOptions& o = {}) {
  try {
    decode(b, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---------------------------------------------------------------- JPEG

TEST(VisionJpeg, GrayStaysOneChannel) {
  const Image g = test_picture(40, 24, 1, 3);
  const Image d = decode(encode_jpeg(g, {.quality = 100}));
  ASSERT_EQ(d.channels, 1);
  ASSERT_EQ(d.width, 40);
  ASSERT_EQ(d.height, 24);
  int max_diff = 0;
  for (size_t i = 0; i < d.pixels.size(); ++i) max_diff = std::max(max_diff, std::abs(d.pixels[i] - g.pixels[i]));
  EXPECT_LE(max_diff, 3);
  EXPECT_EQ(to_rgb(d).channels, 3);
}

// Progressive scans carry the same coefficients, so the decoded pixels equal the baseline file's.
TEST(VisionJpeg, ProgressiveEqualsBaseline) {
  const Image img = test_picture(67, 45, 3, 5);
  for (bool s420 : {false, true}) {
    const Image base = decode(encode_jpeg(img, {.quality = 90, .subsample_420 = s420}));
    const Image prog = decode(encode_jpeg(img, {.quality = 90, .progressive = true, .subsample_420 = s420}));
    ASSERT_EQ(prog.width, 67);
    ASSERT_EQ(prog.channels, 3);
    EXPECT_EQ(prog.pixels, base.pixels) << "4:2:0 " << s420;
  }
}

// CMYK and YCCK: PIL reads Adobe (inverted) CMYK and converts with R = K*C/255 in raw values (MULDIV255).
TEST(VisionJpeg, CmykAndYcckConvertedAsPil) {
  Image cmyk = Image::zeros(16, 16, 4);
  for (size_t i = 0; i < cmyk.pixels.size(); i += 4) {
    cmyk.pixels[i] = 200;
    cmyk.pixels[i + 1] = 100;
    cmyk.pixels[i + 2] = 30;
    cmyk.pixels[i + 3] = 180;
  }
  for (bool ycck : {false, true}) {
    const Image d = decode(encode_jpeg(cmyk, {.quality = 100, .ycck = ycck}));
    ASSERT_EQ(d.channels, 3);
    const double want[3] = {200.0 * 180 / 255, 100.0 * 180 / 255, 30.0 * 180 / 255};
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(d.pixels[size_t(8 * 16 + 8) * 3 + c], want[c], ycck ? 3.0 : 1.0) << c;
  }
}

// Recoverable corruption (stray bytes before a marker) decodes quietly, as in PIL: nothing on stderr.
TEST(VisionJpeg, WarningsAreSilent) {
  const Bytes good = encode_jpeg(test_picture(32, 32, 3, 9));
  Bytes bad = good;
  const size_t sof = jpeg_sof_offset(bad) - 5;
  bad.insert(bad.begin() + long(sof), {0x12, 0x34, 0x56});  // extraneous bytes before the SOF marker
  testing::internal::CaptureStderr();
  const bool ok = decodes(bad);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(ok);
  EXPECT_EQ(err, "");
}

TEST(VisionJpeg, TruncatedIsAnError) {
  const Bytes good = encode_jpeg(test_picture(48, 40, 3, 11));
  ASSERT_TRUE(decodes(good));
  const std::string msg = error_of(Bytes(good.begin(), good.begin() + long(good.size() / 2)));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  // Every cut that loses scan data fails cleanly; the very end (EOI) is lenient either way.
  testing::internal::CaptureStderr();
  for (size_t cut = 0; cut + 2 < good.size(); ++cut)
    EXPECT_FALSE(decodes(Bytes(good.begin(), good.begin() + long(cut)))) << "cut at " << cut << " of " << good.size();
  for (size_t cut = good.size() - 2; cut < good.size(); ++cut) decodes(Bytes(good.begin(), good.begin() + long(cut)));
  const Bytes prog = encode_jpeg(test_picture(48, 40, 3, 12), {.progressive = true});
  for (size_t cut = 0; cut + 2 < prog.size(); cut += 7) EXPECT_FALSE(decodes(Bytes(prog.begin(), prog.begin() + long(cut))));
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

// A valid progressive file with hundreds of scans (one AC coefficient per band, many refinement passes) is refused
// above 500 scans: each scan is a pass over all coefficients, the classic slow-decode attack.
TEST(VisionJpeg, TooManyScansRefused) {
  auto script = [](int refinements) {
    std::vector<jpeg_scan_info> s;
    jpeg_scan_info dc{};
    dc.comps_in_scan = 1;
    s.push_back(dc);  // DC, full precision
    for (int k = 1; k < 64; ++k)
      for (int al = refinements; al >= 0; --al) {
        jpeg_scan_info ac{};
        ac.comps_in_scan = 1;
        ac.Ss = k;
        ac.Se = k;
        ac.Ah = al == refinements ? 0 : al + 1;
        ac.Al = al;
        s.push_back(ac);
      }
    return s;
  };
  const Image pic = test_picture(32, 24, 1, 14);
  const std::vector<jpeg_scan_info> few = script(5), many = script(9);  // 379 and 631 scans
  const Image ok = decode(encode_jpeg(pic, {.quality = 90, .script = &few}));
  EXPECT_EQ(ok.width, 32);
  const std::string msg = error_of(encode_jpeg(pic, {.quality = 90, .script = &many}));
  EXPECT_NE(msg.find("scans"), std::string::npos) << msg;
}

TEST(VisionJpeg, HeaderSizesCheckedBeforeDecoding) {
  Bytes j = encode_jpeg(test_picture(16, 16, 3, 13));
  const size_t sof = jpeg_sof_offset(j);
  ASSERT_GT(sof, 0u);
  Bytes big = j;  // claim 60000 x 60000 = 3.6e9 pixels
  big[sof] = big[sof + 2] = 0xEA;
  big[sof + 1] = big[sof + 3] = 0x60;
  std::string msg = error_of(big);
  EXPECT_NE(msg.find("60000x60000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("50000000"), std::string::npos) << msg;
  msg = error_of(Bytes(big.begin(), big.begin() + long(sof) + 12));  // the file ends inside the frame header
  EXPECT_NE(msg.find("60000x60000"), std::string::npos) << msg;
  Bytes zero = j;  // height 0
  zero[sof] = zero[sof + 1] = 0;
  EXPECT_FALSE(decodes(zero));
  DecodeOptions tiny;
  tiny.max_pixels = 255;
  msg = error_of(j, tiny);
  EXPECT_NE(msg.find("16x16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("255"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- EXIF

TEST(VisionExif, JpegOrientationAllValuesBothByteOrders) {
  const Image pic = test_picture(24, 16, 3, 21);
  const Bytes plain = encode_jpeg(pic);
  const Image base = decode(plain);
  for (bool little : {true, false})
    for (int o = 1; o <= 8; ++o) {
      SCOPED_TRACE(testing::Message() << (little ? "II" : "MM") << " orientation " << o);
      const Bytes j = with_app1(plain, tiff_block(little, uint32_t(o)));
      const Image got = decode(j);
      const Image want = apply_orientation(base, o);
      EXPECT_EQ(got.width, o >= 5 ? 16 : 24);
      EXPECT_EQ(got.height, o >= 5 ? 24 : 16);
      EXPECT_EQ(got.pixels, want.pixels);
      DecodeOptions keep;
      keep.apply_exif_orientation = false;
      EXPECT_EQ(decode(j, keep).pixels, base.pixels);
    }
  // A LONG-typed orientation is read too (PIL does not check the type).
  EXPECT_EQ(decode(with_app1(plain, tiff_block(true, 6, 4))).width, 16);
}

TEST(VisionExif, MalformedBlocksAreIgnored) {
  const Bytes plain = encode_jpeg(test_picture(24, 16, 3, 22));
  const Image base = decode(plain);
  std::vector<Bytes> bad = {
      tiff_block(true, 9),                           // out of range
      tiff_block(true, 0),                           // out of range
      tiff_block(true, 6, 2),                        // ASCII type
      tiff_block(true, 6, 3, 2),                     // count 2: PIL reads a tuple
      tiff_block(false, 6, 3, 1, 0x0111),            // another tag
      {'E', 'x', 'i', 'f', 0, 0},                    // empty TIFF
      {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 0x2A, 0, 0xFF, 0xFF, 0xFF, 0xFF},  // IFD offset past the end
      {'E', 'x', 'i', 'f', 0, 0, 'X', 'X', 0x2A, 0, 8, 0, 0, 0},              // not TIFF
  };
  Bytes truncated = tiff_block(true, 6);
  truncated.erase(truncated.end() - 14, truncated.end());  // the orientation entry is cut short
  bad.push_back(truncated);
  for (const Bytes& b : bad) {
    EXPECT_EQ(exif_orientation(b.data(), b.size()) == 6, false);
    const Image got = decode(with_app1(plain, b));
    EXPECT_EQ(got.pixels, base.pixels);
  }
  // An entry count far beyond the data: the entries that are present still count (PIL keeps what it read).
  Bytes many = tiff_block(true, 6);
  many[6 + 8] = 0xFF;
  many[6 + 9] = 0xFF;
  EXPECT_EQ(exif_orientation(many.data(), many.size()), 6);
  EXPECT_EQ(decode(with_app1(plain, many)).pixels, apply_orientation(base, 6).pixels);
  // Random blocks: never a crash, always a value in 0..8.
  std::mt19937 rng(5);
  for (int i = 0; i < 3000; ++i) {
    Bytes b = tiff_block(rng() % 2, rng() % 12, uint16_t(rng() % 10), rng() % 3);
    const size_t n = rng() % (b.size() + 1);
    b.resize(n);
    for (int k = 0; k < 3 && !b.empty(); ++k) b[rng() % b.size()] = uint8_t(rng());
    const int o = exif_orientation(b.data(), b.size());
    ASSERT_TRUE(o >= 0 && o <= 8);
  }
  EXPECT_EQ(exif_orientation(nullptr, 0), 0);
}

// ---------------------------------------------------------------- PNG

namespace {
PngSpec spec(int w, int h, int depth, int type) {
  PngSpec s;
  s.width = w;
  s.height = h;
  s.bit_depth = depth;
  s.color_type = type;
  return s;
}
// Packs samples (one per entry) into a PNG row of `depth` bits each.
Bytes pack(const std::vector<unsigned>& samples, int depth) {
  Bytes r;
  if (depth == 16) {
    for (unsigned v : samples) r.insert(r.end(), {uint8_t(v >> 8), uint8_t(v)});
    return r;
  }
  if (depth == 8) return Bytes(samples.begin(), samples.end());
  const int per = 8 / depth;
  r.assign((samples.size() + size_t(per) - 1) / size_t(per), 0);
  for (size_t i = 0; i < samples.size(); ++i)
    r[i / size_t(per)] |= uint8_t(samples[i] << (8 - depth * int(i % size_t(per) + 1)));
  return r;
}
}  // namespace

TEST(VisionPng, GrayDepthsExpandLikePil) {
  for (int depth : {1, 2, 4, 8}) {
    PngSpec s = spec(5, 2, depth, PNG_COLOR_TYPE_GRAY);
    const unsigned maxv = (1u << depth) - 1;
    std::vector<unsigned> row = {0, maxv, maxv / 2, 1 % (maxv + 1), maxv};
    s.rows = {pack(row, depth), pack(row, depth)};
    const Image d = decode(write_png(s));
    ASSERT_EQ(d.channels, 1) << depth;
    for (int x = 0; x < 5; ++x) EXPECT_EQ(d.row(1)[x], row[size_t(x)] * (255 / maxv)) << "depth " << depth;
  }
  // A gray tRNS key does not add alpha (PIL keeps mode "L").
  PngSpec t = spec(2, 1, 8, PNG_COLOR_TYPE_GRAY);
  t.gray_trns = true;
  t.rows = {{0, 9}};
  const Image dt = decode(write_png(t));
  EXPECT_EQ(dt.channels, 1);
  EXPECT_EQ(dt.pixels, (Bytes{0, 9}));
}

TEST(VisionPng, SixteenBitAsPil) {
  // 16-bit gray is PIL mode "I": converting clips to 0..255 (no scaling).
  PngSpec g = spec(5, 1, 16, PNG_COLOR_TYPE_GRAY);
  g.rows = {pack({0, 100, 255, 256, 65535}, 16)};
  EXPECT_EQ(decode(write_png(g)).pixels, (Bytes{0, 100, 255, 255, 255}));
  // Other 16-bit types keep the high byte.
  PngSpec rgb = spec(2, 1, 16, PNG_COLOR_TYPE_RGB);
  rgb.rows = {pack({0x1234, 0xFFFF, 0x00FF, 0x8000, 0x7FFF, 0x0100}, 16)};
  EXPECT_EQ(decode(write_png(rgb)).pixels, (Bytes{0x12, 0xFF, 0x00, 0x80, 0x7F, 0x01}));
  PngSpec rgba = spec(1, 1, 16, PNG_COLOR_TYPE_RGB_ALPHA);
  rgba.rows = {pack({0xAB00, 0xCDFF, 0x0001, 0x8080}, 16)};
  const Image d = decode(write_png(rgba));
  EXPECT_EQ(d.channels, 4);
  EXPECT_EQ(d.pixels, (Bytes{0xAB, 0xCD, 0x00, 0x80}));
  PngSpec la = spec(1, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA);
  la.rows = {pack({0x4321, 0x9988}, 16)};
  EXPECT_EQ(decode(write_png(la)).pixels, (Bytes{0x43, 0x43, 0x43, 0x99}));
}

TEST(VisionPng, GrayAlphaAndPalette) {
  PngSpec la = spec(2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA);
  la.rows = {{10, 20, 30, 40}};
  const Image d = decode(write_png(la));
  EXPECT_EQ(d.channels, 4);
  EXPECT_EQ(d.pixels, (Bytes{10, 10, 10, 20, 30, 30, 30, 40}));
  EXPECT_EQ(to_rgb(d).pixels, (Bytes{10, 10, 10, 30, 30, 30}));

  std::vector<png_color> pal = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 8, 7}};
  for (int depth : {2, 4, 8}) {
    PngSpec p = spec(4, 1, depth, PNG_COLOR_TYPE_PALETTE);
    p.palette = pal;
    p.rows = {pack({3, 2, 1, 0}, depth)};
    const Image dp = decode(write_png(p));
    EXPECT_EQ(dp.channels, 3) << depth;
    EXPECT_EQ(dp.pixels, (Bytes{9, 8, 7, 0, 0, 255, 0, 255, 0, 255, 0, 0})) << depth;
  }
  // With tRNS the palette carries alpha (entries past the tRNS list are opaque); RGB drops it again.
  PngSpec t = spec(3, 1, 8, PNG_COLOR_TYPE_PALETTE);
  t.palette = pal;
  t.trns_alpha = {0, 128};
  t.rows = {{0, 1, 2}};
  const Image dt = decode(write_png(t));
  EXPECT_EQ(dt.channels, 4);
  EXPECT_EQ(dt.pixels, (Bytes{255, 0, 0, 0, 0, 255, 0, 128, 0, 0, 255, 255}));
  EXPECT_EQ(to_rgb(dt).pixels, (Bytes{255, 0, 0, 0, 255, 0, 0, 0, 255}));
}

TEST(VisionPng, InterlacedEqualsPlain) {
  const Image pic = test_picture(13, 11, 3, 31);
  PngSpec s = spec(13, 11, 8, PNG_COLOR_TYPE_RGB);
  for (int y = 0; y < 11; ++y) s.rows.push_back(Bytes(pic.row(y), pic.row(y) + pic.row_bytes()));
  const Image plain = decode(write_png(s));
  s.interlace = true;
  const Image inter = decode(write_png(s));
  EXPECT_EQ(plain.pixels, pic.pixels);
  EXPECT_EQ(inter.pixels, pic.pixels);
}

TEST(VisionPng, ExifChunkOrientation) {
  const Image pic = test_picture(6, 4, 3, 41);
  PngSpec s = spec(6, 4, 8, PNG_COLOR_TYPE_RGB);
  for (int y = 0; y < 4; ++y) s.rows.push_back(Bytes(pic.row(y), pic.row(y) + pic.row_bytes()));
  for (int o : {3, 6, 8}) {
    s.exif = tiff_block(o % 2 == 0, uint32_t(o), 3, 1, 0x0112, /*exif_prefix=*/false);
    const Image d = decode(write_png(s));
    EXPECT_EQ(d.pixels, apply_orientation(pic, o).pixels) << o;
    EXPECT_EQ(d.width, o >= 5 ? 4 : 6);
  }
}

TEST(VisionPng, RoundTrip) {
  for (int c : {1, 3, 4}) {
    const Image img = test_picture(17, 9, c, uint32_t(50 + c));
    const std::string bytes = encode_png(img);
    const Image back = decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    EXPECT_EQ(back.channels, c);
    EXPECT_EQ(back.width, 17);
    EXPECT_EQ(back.pixels, img.pixels);
    const std::string path = test::temp_dir() + "/rt" + std::to_string(c) + ".png";
    save_png(path, img);
    EXPECT_EQ(load_image(path).pixels, img.pixels);
  }
  EXPECT_THROW(save_png(test::temp_dir() + "/no/such/dir/x.png", test_picture(2, 2, 3, 1)), Error);
  EXPECT_THROW(encode_png(Image()), Error);
  Image wrong = test_picture(4, 4, 3, 1);
  wrong.channels = 2;
  EXPECT_THROW(encode_png(wrong), Error);
}

TEST(VisionPng, HeaderSizesCheckedBeforeDecoding) {
  const std::string msg = error_of(png_header_only(100000, 100000));
  EXPECT_NE(msg.find("100000x100000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("50000000"), std::string::npos) << msg;
  EXPECT_FALSE(decodes(png_header_only(0, 10)));   // zero width
  EXPECT_FALSE(decodes(png_header_only(10, 0)));   // zero height
  EXPECT_FALSE(decodes(png_header_only(10, 10)));  // valid header, no data: truncated
}

TEST(VisionPng, TruncatedIsAnError) {
  const std::string enc = encode_png(test_picture(40, 30, 3, 61));
  const Bytes good(enc.begin(), enc.end());
  ASSERT_TRUE(decodes(good));
  const std::string msg = error_of(Bytes(good.begin(), good.begin() + long(good.size() / 2)));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  testing::internal::CaptureStderr();
  // Cutting anywhere before the IEND chunk (the last 12 bytes) loses data and must fail.
  for (size_t cut = 0; cut + 12 < good.size(); ++cut)
    EXPECT_FALSE(decodes(Bytes(good.begin(), good.begin() + long(cut)))) << "cut at " << cut;
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

// ---------------------------------------------------------------- bad input in general

TEST(VisionDecode, BadInputIsAnError) {
  EXPECT_NE(error_of({}).find("empty"), std::string::npos);
  std::mt19937 rng(7);
  Bytes noise(1000);
  for (auto& b : noise) b = uint8_t(rng());
  noise[0] = 0x00;
  EXPECT_NE(error_of(noise).find("not a JPEG or PNG"), std::string::npos);
  EXPECT_NE(error_of({'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0}).find("GIF"), std::string::npos);
  EXPECT_FALSE(decodes({0xFF, 0xD8, 0xFF}));                           // JPEG magic only
  EXPECT_FALSE(decodes({0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'}));  // PNG signature only
  // Magic bytes followed by garbage.
  Bytes fake_jpeg = noise;
  fake_jpeg[0] = 0xFF, fake_jpeg[1] = 0xD8, fake_jpeg[2] = 0xFF;
  EXPECT_FALSE(decodes(fake_jpeg));
  Bytes fake_png = noise;
  std::memcpy(fake_png.data(), "\x89PNG\r\n\x1a\n", 8);
  EXPECT_FALSE(decodes(fake_png));
  EXPECT_THROW(load_image(test::temp_dir() + "/does_not_exist.jpg"), Error);
  EXPECT_THROW(Image::zeros(0, 5, 3), Error);
  EXPECT_THROW(Image::zeros(5, 5, 2), Error);
}

// Random byte corruption: every variant either decodes or throws iris::Error; nothing reaches stderr.
TEST(VisionDecode, CorruptedFilesNeverCrash) {
  const Bytes jpeg = encode_jpeg(test_picture(40, 32, 3, 71), {.subsample_420 = true});
  const Bytes prog = encode_jpeg(test_picture(40, 32, 3, 72), {.progressive = true});
  const std::string png_s = encode_png(test_picture(40, 32, 4, 73));
  const Bytes png(png_s.begin(), png_s.end());
  std::mt19937 rng(11);
  int decoded = 0, failed = 0;
  testing::internal::CaptureStderr();
  for (const Bytes* src : {&jpeg, &prog, &png})
    for (int i = 0; i < 300; ++i) {
      Bytes b = *src;
      const int flips = 1 + int(rng() % 4);
      for (int k = 0; k < flips; ++k) b[3 + rng() % (b.size() - 3)] = uint8_t(rng());
      (decodes(b) ? decoded : failed)++;
    }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(decoded + failed, 900);
  std::printf("  corrupted files: %d decoded, %d rejected\n", decoded, failed);
}

// ---------------------------------------------------------------- speed

TEST(VisionPerf, Large4000x3000JpegTo336) {
  const Image pic = test_picture(4000, 3000, 3, 81);
  const Bytes jpeg = encode_jpeg(pic, {.quality = 90, .subsample_420 = true});
  PreprocessConfig clip;  // CLIP defaults, LLaVA-1.5 size
  clip.shortest_edge = 336;
  clip.crop_height = clip.crop_width = 336;
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  double best_decode = 1e9, best_pre = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = now();
    const Image img = decode(jpeg);
    const auto t1 = now();
    const std::vector<float> pv = preprocess(img, clip);
    const auto t2 = now();
    ASSERT_EQ(pv.size(), size_t(3 * 336 * 336));
    best_decode = std::min(best_decode, ms(t0, t1));
    best_pre = std::min(best_pre, ms(t1, t2));
  }
  std::printf("  4000x3000 JPEG (4:2:0): decode %.1f ms, preprocess to 336x336 %.1f ms, total %.1f ms\n", best_decode,
              best_pre, best_decode + best_pre);
  EXPECT_LT(best_decode + best_pre, 10000.0);  // sanity only (sanitizer builds are slow); the number is reported
}
