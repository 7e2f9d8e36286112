// NumPy .npy reading and writing. The header is a Python dict literal; only the small subset that numpy.save
// writes is parsed (strings, True/False, tuples of integers), with every read checked against the header's
// end.
#include "io/npy.h"

#include <bit>
#include <cstring>
#include <optional>
#include <string_view>

#include "io/file.h"

namespace iris::io {

static_assert(std::endian::native == std::endian::little, ".npy data is read as little-endian");

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes, then major, minor version bytes
constexpr size_t kNpyMaxDims = 64;      // NumPy's own limit (NPY_MAXDIMS is 32 or 64)

struct Descr {
  const char* code;  // without the byte-order character
  DType dtype;
};
constexpr Descr kDescrs[] = {{"f4", DType::F32}, {"f8", DType::F64}, {"f2", DType::F16},
                             {"i8", DType::I64}, {"i4", DType::I32}, {"i2", DType::I16},
                             {"i1", DType::I8},  {"u1", DType::U8},  {"b1", DType::BOOL}};

// A cursor over the header's Python literal.
class LiteralParser {
 public:
  LiteralParser(std::string_view s, const std::string& name) : s_(s), name_(name) {}

  template <typename... A>
  [[noreturn]] void fail(const A&... a) const {
    std::string shown(s_.substr(0, 200));  // printable, so a binary header cannot garble the message
    for (char& c : shown)
      if (c < 0x20 || c > 0x7e) c = '?';
    throw Error(str_cat(name_, ": invalid .npy header: ", a..., " (header: ", shown, ")"));
  }

  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool peek(char c) {
    skip_ws();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!peek(c)) fail("expected '", c, "' at byte ", i_);
    ++i_;
  }
  bool at_end() {
    skip_ws();
    return i_ == s_.size();
  }

  std::string string() {
    skip_ws();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) fail("expected a quoted string at byte ", i_);
    char q = s_[i_++];
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\') fail("escapes in strings are not supported");
      ++i_;
    }
    if (i_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(start, i_++ - start));
  }

  bool boolean() {
    skip_ws();
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    fail("expected True or False at byte ", i_);
  }

  // "()", "(5,)", "(3, 4)" and Python 2's "(3L, 4L)".
  Shape tuple() {
    expect('(');
    Shape shape;
    while (!peek(')')) {
      skip_ws();
      if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9')
        fail("shape holds a non-integer or negative value");
      int64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9')
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s_[i_++] - '0', &v))
          fail("shape dimension too large");
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;
      if (shape.size() >= kNpyMaxDims) fail("shape has more than ", kNpyMaxDims, " dimensions");
      shape.push_back(v);
      if (!peek(',')) break;
      ++i_;
    }
    expect(')');
    return shape;
  }

  char next_char() {
    skip_ws();
    return i_ < s_.size() ? s_[i_] : '\0';
  }

 private:
  std::string_view s_;
  const std::string& name_;
  size_t i_ = 0;
};

DType parse_descr(const std::string& descr, const std::string& name) {
  std::string_view code = descr;
  char order = '=';
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) {
    order = code[0];
    code.remove_prefix(1);
  }
  for (const Descr& d : kDescrs) {
    if (code != d.code) continue;
    if (order == '>' && dtype_size(d.dtype) > 1)
      throw Error(
          str_cat(name, ": big-endian .npy data ('", descr, "') is not supported; save it little-endian"));
    return d.dtype;
  }
  throw Error(str_cat(name, ": unsupported .npy dtype '", descr,
                      "' (supported: <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1)"));
}

const char* descr_of(DType t) {
  switch (t) {
    case DType::F32:
      return "<f4";
    case DType::F64:
      return "<f8";
    case DType::F16:
      return "<f2";
    case DType::I64:
      return "<i8";
    case DType::I32:
      return "<i4";
    case DType::I16:
      return "<i2";
    case DType::I8:
      return "|i1";
    case DType::U8:
      return "|u1";
    case DType::BOOL:
      return "|b1";
    case DType::BF16:
      break;  // converted to F32 before this is asked
  }
  throw Error(str_cat("no .npy dtype for ", dtype_name(t)));
}

// Magic, version and header length, then the padded dict, exactly as numpy.save writes them (numpy 1.24:
// sorted keys, trailing ", ", spare spaces for growing axis 0, padding so the data starts 64-byte aligned).
std::string header_bytes(DType dtype, const Shape& shape) {
  std::string shape_repr = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) shape_repr += ", ";
    shape_repr += std::to_string(shape[i]);
  }
  shape_repr += shape.size() == 1 ? ",)" : ")";
  std::string dict =
      str_cat("{'descr': '", descr_of(dtype), "', 'fortran_order': False, 'shape': ", shape_repr, ", }");
  if (!shape.empty())
    dict.append(21 - std::to_string(shape[0]).size(), ' ');  // numpy's GROWTH_AXIS_MAX_DIGITS
  for (int version : {1, 2}) {
    size_t len_bytes = version == 1 ? 2 : 4;
    size_t hlen = dict.size() + 1;  // + '\n'
    size_t pad = 64 - (8 + len_bytes + hlen) % 64;
    size_t total = hlen + pad;
    if (version == 1 && total > 0xffff) continue;
    std::string out(kMagic, 6);
    out += char(version);
    out += '\0';
    for (size_t b = 0; b < len_bytes; ++b) out += char((total >> (8 * b)) & 0xff);
    out += dict;
    out.append(pad, ' ');
    out += '\n';
    return out;
  }
  throw Error("unreachable");
}

}  // namespace

Tensor parse_npy(const uint8_t* data, size_t size, const std::string& name) {
  IRIS_CHECK(size >= 10 && std::memcmp(data, kMagic, 6) == 0, name, ": not a .npy file (bad magic; ", size,
             " bytes)");
  const int major = data[6], minor = data[7];
  IRIS_CHECK((major == 1 || major == 2 || major == 3) && minor == 0, name,
             ": unsupported .npy format version ", major, ".", minor);
  size_t hlen, start;
  if (major == 1) {
    hlen = size_t(data[8]) | size_t(data[9]) << 8;
    start = 10;
  } else {
    IRIS_CHECK(size >= 12, name, ": truncated .npy header length (", size, " bytes)");
    hlen = size_t(data[8]) | size_t(data[9]) << 8 | size_t(data[10]) << 16 | size_t(data[11]) << 24;
    start = 12;
  }
  IRIS_CHECK(hlen <= size - start, name, ": .npy header length ", hlen, " is larger than the file (", size,
             " bytes; truncated?)");

  LiteralParser p(std::string_view(reinterpret_cast<const char*>(data) + start, hlen), name);
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<Shape> shape;
  p.expect('{');
  while (!p.peek('}')) {
    std::string key = p.string();
    p.expect(':');
    if (key == "descr") {
      if (p.next_char() == '[') p.fail("structured dtypes (a list descr) are not supported");
      descr = p.string();
    } else if (key == "fortran_order") {
      fortran = p.boolean();
    } else if (key == "shape") {
      shape = p.tuple();
    } else {
      p.fail("unexpected key '", key, "'");
    }
    if (!p.peek(',')) break;
    p.expect(',');
  }
  p.expect('}');
  if (!p.at_end()) p.fail("trailing characters after the dict");
  if (!descr || !fortran || !shape)
    p.fail("missing ", !descr ? "'descr'" : !fortran ? "'fortran_order'" : "'shape'");
  IRIS_CHECK(!*fortran, name, ": .npy array has fortran_order True; only C order is supported");
  DType dtype = parse_descr(*descr, name);

  int64_t nbytes = int64_t(dtype_size(dtype));
  for (int64_t d : *shape)
    IRIS_CHECK(!__builtin_mul_overflow(nbytes, d, &nbytes), name, ": .npy shape ", shape_str(*shape),
               " overflows the size of an array");
  const size_t data_start = start + hlen;
  IRIS_CHECK(size - data_start == size_t(nbytes), name, ": .npy data size mismatch: ", descr->c_str(), " ",
             shape_str(*shape), " needs ", nbytes, " bytes, the file holds ", size - data_start,
             " after the header");
  Tensor t = Tensor::empty(*shape, dtype);
  if (nbytes > 0) std::memcpy(t.raw(), data + data_start, size_t(nbytes));
  return t;
}

Tensor load_npy(const std::string& path) {
  auto f = MappedFile::open(path);  // the page cache is the only other copy
  return parse_npy(f->data(), f->size(), path);
}

std::string npy_bytes(const Tensor& t) {
  IRIS_CHECK(t.defined(), "npy: undefined tensor");
  Tensor c = t.dtype() == DType::BF16 ? t.to(DType::F32) : t.contiguous();
  std::string out = header_bytes(c.dtype(), c.shape());
  out.append(static_cast<const char*>(c.raw()), c.nbytes());
  return out;
}

void save_npy(const std::string& path, const Tensor& t) {
  IRIS_CHECK(t.defined(), "saving ", path, ": undefined tensor");
  Tensor c = t.dtype() == DType::BF16 ? t.to(DType::F32) : t.contiguous();
  AtomicFileWriter w(path);
  w.write(header_bytes(c.dtype(), c.shape()));  // streamed: no second in-memory copy of the data
  w.write(c.raw(), c.nbytes());
  w.commit();
}

}  // namespace iris::io
