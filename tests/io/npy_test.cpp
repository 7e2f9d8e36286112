// Tests for io/npy: the reference arrays (shapes from meta.json, bytes identical to numpy.save), round trips
// of every dtype including 0-d and empty shapes, and malformed files.
#include "io/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/file.h"
#include "test_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using iris::DType;
using iris::Error;
using iris::Shape;
using iris::Tensor;
using namespace iris::io;

using iris::test::bytes_of;
using iris::test::fresh_dir;
using iris::test::pattern;

namespace {

// A v1 file from a literal header dict (padded like numpy) and raw data.
std::string npy_file(const std::string& dict, const std::string& data, int version = 1) {
  std::string h = dict;
  size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out = std::string("\x93NUMPY", 6) + char(version) + '\0';
  for (size_t b = 0; b < prefix - 8; ++b) out += char((h.size() >> (8 * b)) & 0xff);
  return out + h + data;
}

}  // namespace

TEST(Npy, LoadsReferenceArrays) {
  const std::string dir = iris::test::shared_dir() + "/refcases/llama_text";
  auto meta = read_json_file(dir + "/meta.json");
  const auto& files = meta.at("files");
  Tensor ids = load_npy(dir + "/input_ids.npy");
  ASSERT_EQ(ids.dtype(), DType::I64);
  EXPECT_EQ(ids.shape(), files.at("input_ids.npy").at("shape").get<Shape>());
  EXPECT_EQ(ids.data<int64_t>()[0], 1);  // BOS
  for (int64_t i = 0; i < ids.numel(); ++i)
    EXPECT_TRUE(ids.data<int64_t>()[i] >= 0 && ids.data<int64_t>()[i] < 320);
  Tensor logits = load_npy(dir + "/logits.npy");
  ASSERT_EQ(logits.dtype(), DType::F32);
  EXPECT_EQ(logits.shape(), files.at("logits.npy").at("shape").get<Shape>());
  EXPECT_EQ(logits.shape()[1], meta["prompt_length"].get<int64_t>());
}

// Every array of every model case: shape and dtype as meta.json says, and npy_bytes() reproduces the file
// byte for byte (numpy 1.24 wrote them), header padding included.
TEST(Npy, AllReferenceArraysMatchMetaAndBytes) {
  int checked = 0;
  for (const char* c : {"llama_text", "clip_vision", "llava"}) {
    const std::string dir = iris::test::shared_dir() + "/refcases/" + c;
    auto meta = read_json_file(dir + "/meta.json");
    for (const auto& [name, info] : meta.at("files").items()) {
      SCOPED_TRACE(std::string(c) + "/" + name);
      Tensor t = load_npy(dir + "/" + name);
      EXPECT_EQ(t.shape(), info.at("shape").get<Shape>());
      const std::string dt = info.at("dtype").get<std::string>();
      EXPECT_EQ(t.dtype(), dt == "int64" ? DType::I64 : DType::F32) << dt;
      EXPECT_EQ(npy_bytes(t), iris::test::read_file(dir + "/" + name));
      ++checked;
    }
  }
  EXPECT_GE(checked, 15);
}

TEST(Npy, RoundTripEveryDtypeAndShape) {
  std::string d = fresh_dir("roundtrip");
  const std::vector<Shape> shapes = {{}, {0}, {3, 0, 2}, {1}, {7}, {2, 3}, {2, 3, 4, 5}};
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::I64, DType::I32, DType::I16, DType::I8,
                   DType::U8, DType::BOOL}) {
    for (const Shape& s : shapes) {
      SCOPED_TRACE(std::string(iris::dtype_name(dt)) + " " + iris::shape_str(s));
      Tensor t = pattern(s, dt);
      const std::string path = d + "/a.npy";
      save_npy(path, t);
      Tensor r = load_npy(path);
      EXPECT_EQ(r.dtype(), dt);
      EXPECT_EQ(r.shape(), s);
      EXPECT_EQ(bytes_of(r), bytes_of(t));
      const std::string file = iris::test::read_file(path);
      EXPECT_EQ(file, npy_bytes(t));
      EXPECT_EQ((file.size() - t.nbytes()) % 64, 0u) << "data must start 64-byte aligned";
    }
  }
}

TEST(Npy, HeaderText) {
  std::string b = npy_bytes(pattern({2, 3}, DType::F32));
  EXPECT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_NE(b.find("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"), std::string::npos);
  EXPECT_NE(npy_bytes(pattern({5}, DType::I64)).find("'shape': (5,), }"), std::string::npos);
  EXPECT_NE(npy_bytes(pattern({}, DType::U8)).find("'descr': '|u1', 'fortran_order': False, 'shape': (), }"),
            std::string::npos);
  EXPECT_NE(npy_bytes(pattern({1}, DType::BOOL)).find("'|b1'"), std::string::npos);
  EXPECT_NE(npy_bytes(pattern({1}, DType::F16)).find("'<f2'"), std::string::npos);
}

TEST(Npy, Bf16SavedAsF32AndNonContiguous) {
  std::string d = fresh_dir("bf16");
  Tensor bf = pattern({4, 3}, DType::BF16);
  save_npy(d + "/b.npy", bf);
  Tensor r = load_npy(d + "/b.npy");
  EXPECT_EQ(r.dtype(), DType::F32);
  for (int64_t i = 0; i < r.numel(); ++i) EXPECT_EQ(r.data<float>()[i], bf.item_f32(i));

  Tensor t = pattern({4, 3}, DType::F32).transpose(0, 1);
  save_npy(d + "/t.npy", t);
  Tensor rt = load_npy(d + "/t.npy");
  EXPECT_EQ(rt.shape(), (Shape{3, 4}));
  EXPECT_EQ(bytes_of(rt), bytes_of(t));
}

TEST(Npy, ReadsOtherWriters) {
  std::string d = fresh_dir("variants");
  float v[3] = {1.f, 2.f, 3.f};
  std::string data(reinterpret_cast<const char*>(v), sizeof(v));
  // Key order, double quotes, no trailing comma, '=' byte order, version 2 and 3, Python 2 longs.
  const std::vector<std::pair<std::string, int>> ok = {
      {"{'shape': (3,), 'fortran_order': False, 'descr': '<f4'}", 1},
      {"{\"descr\": \"=f4\", \"fortran_order\": False, \"shape\": (3,)}", 1},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3L,), }", 1},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 2},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 3},
  };
  for (const auto& [dict, version] : ok) {
    SCOPED_TRACE(dict);
    iris::test::write_file(d + "/v.npy", npy_file(dict, data, version));
    Tensor t = load_npy(d + "/v.npy");
    EXPECT_EQ(t.shape(), Shape{3});
    EXPECT_EQ(bytes_of(t), data);
  }
  iris::test::write_file(d + "/one.npy",
                         npy_file("{'descr': '>i1', 'fortran_order': False, 'shape': (2,), }", "ab"));
  EXPECT_EQ(load_npy(d + "/one.npy").dtype(), DType::I8);  // byte order is moot for one-byte types
}

TEST(Npy, CorruptFiles) {
  std::string d = fresh_dir("corrupt");
  const std::string f4x2(8, '\0');
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  std::string bad_version = npy_file(good, f4x2);
  bad_version[6] = 4;
  std::string long_header = npy_file(good, f4x2);
  long_header[8] = '\xff';
  long_header[9] = '\x7f';
  struct Case {
    const char* label;
    std::string bytes;
    std::vector<std::string> hints;
  };
  const std::vector<Case> cases = {
      {"empty", "", {"bad magic"}},
      {"magic", "PK\x03\x04 this is a zip file", {"bad magic"}},
      {"version", bad_version, {"version 4"}},
      {"header_len", long_header, {"header length", "larger than the file"}},
      {"fortran",
       npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", f4x2),
       {"fortran_order"}},
      {"big_endian",
       npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f4x2),
       {"big-endian", "'>f4'"}},
      {"u4",
       npy_file("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", f4x2),
       {"unsupported", "'<u4'"}},
      {"complex", npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", f4x2), {"'<c8'"}},
      {"object", npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", f4x2), {"'|O'"}},
      {"structured",
       npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", f4x2),
       {"structured"}},
      {"short_data", npy_file(good, std::string(7, '\0')), {"data size mismatch", "needs 8", "holds 7"}},
      {"long_data", npy_file(good, std::string(9, '\0')), {"data size mismatch"}},
      {"missing_shape", npy_file("{'descr': '<f4', 'fortran_order': False}", f4x2), {"missing 'shape'"}},
      {"negative_dim",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", f4x2),
       {"negative"}},
      {"float_dim",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }", f4x2),
       {"expected"}},
      {"huge_dim",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", f4x2),
       {"too large"}},
      {"overflow",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", f4x2),
       {"overflows"}},
      {"not_a_dict", npy_file("['descr', '<f4']", f4x2), {"invalid .npy header"}},
      {"unterminated", npy_file("{'descr': '<f4", f4x2), {"unterminated"}},
      {"unknown_key",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", f4x2),
       {"unexpected key 'x'"}},
      {"junk_after", npy_file(good + " junk", f4x2), {"trailing"}},
      {"bad_bool",
       npy_file("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", f4x2),
       {"True or False"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = d + "/" + c.label + ".npy";
    iris::test::write_file(path, c.bytes);
    try {
      load_npy(path);
      ADD_FAILURE() << "loaded without error";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      for (const auto& h : c.hints) EXPECT_NE(msg.find(h), std::string::npos) << msg << "\n  missing: " << h;
    }
  }
  EXPECT_THROW(load_npy(d + "/does_not_exist.npy"), Error);
}

TEST(Npy, TruncationNeverCrashes) {
  const std::string full = npy_bytes(pattern({3, 5}, DType::F64));
  int opened = 0;
  for (size_t len = 0; len <= full.size(); ++len) {
    try {
      parse_npy(reinterpret_cast<const uint8_t*>(full.data()), len, "t.npy");
      ++opened;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("t.npy"), std::string::npos);
    }
  }
  EXPECT_EQ(opened, 1);
}

TEST(Npy, HeaderByteChangesNeverCrash) {
  const std::string full = npy_bytes(pattern({2, 3}, DType::I32));
  const char repl[] = {'(', ')', ',', '\'', '"', '{', '}', '9', '0', 'L', ' ', '\0', '\xff', 'T', '>', '['};
  for (size_t pos = 0; pos < full.size() - 24; ++pos) {
    for (char c : repl) {
      std::string bad = full;
      bad[pos] = c;
      try {
        Tensor t = parse_npy(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), "f.npy");
        EXPECT_EQ(t.nbytes(), 24u);
      } catch (const Error&) {
      }
    }
  }
}
