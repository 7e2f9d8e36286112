// Tensor views and copies.
#include "tensor/tensor.h"

#include <cstdlib>
#include <cstring>
#include <functional>

namespace iris {

std::string shape_str(const Shape& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

static std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

std::shared_ptr<Storage> Storage::allocate(size_t nbytes) {
  auto s = std::make_shared<Storage>();
  size_t n = (nbytes + 63) / 64 * 64;
  if (n == 0) n = 64;
  void* p = std::aligned_alloc(64, n);
  IRIS_CHECK(p != nullptr, "out of memory allocating ", nbytes, " bytes");
  std::memset(p, 0, n);
  s->data = p;
  s->nbytes = nbytes;
  s->owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t nbytes, std::shared_ptr<void> owner) {
  auto s = std::make_shared<Storage>();
  s->data = data;
  s->nbytes = nbytes;
  s->owner = std::move(owner);
  return s;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) IRIS_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.storage_ = Storage::allocate(size_t(shape_numel(shape)) * dtype_size(dtype));
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  size_t es = dtype_size(dtype);
  IRIS_CHECK(byte_offset % es == 0, "tensor data offset ", byte_offset, " is not a multiple of the element size ", es);
  IRIS_CHECK(byte_offset + size_t(shape_numel(shape)) * es <= storage->nbytes, "tensor of shape ", shape_str(shape),
             " does not fit its storage");
  Tensor t;
  t.storage_ = std::move(storage);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.offset_ = int64_t(byte_offset / es);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  IRIS_CHECK(i >= 0 && i < n, "dimension ", i, " out of range for a ", n, "-d tensor");
  return shape_[size_t(i)];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_) || numel() <= 1; }

Tensor Tensor::view(const Shape& shape) const {
  IRIS_CHECK(is_contiguous(), "view of a non-contiguous tensor");
  Shape s = shape;
  int64_t known = 1;
  int neg = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      IRIS_CHECK(neg < 0, "view: more than one -1 in ", shape_str(shape));
      neg = int(i);
    } else {
      known *= s[i];
    }
  }
  if (neg >= 0) {
    IRIS_CHECK(known > 0 && numel() % known == 0, "view: cannot infer -1 in ", shape_str(shape), " from ",
               shape_str(shape_));
    s[size_t(neg)] = numel() / known;
  }
  IRIS_CHECK(shape_numel(s) == numel(), "view: shape ", shape_str(s), " does not match ", shape_str(shape_));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::slice(int d, int64_t start, int64_t end) const {
  if (d < 0) d += ndim();
  IRIS_CHECK(d >= 0 && d < ndim() && 0 <= start && start <= end && end <= shape_[size_t(d)], "slice [", start, ", ",
             end, ") out of range for dim ", d, " of ", shape_str(shape_));
  Tensor t = *this;
  t.offset_ += start * strides_[size_t(d)];
  t.shape_[size_t(d)] = end - start;
  return t;
}

Tensor Tensor::select(int d, int64_t index) const {
  if (d < 0) d += ndim();
  IRIS_CHECK(d >= 0 && d < ndim() && index >= 0 && index < shape_[size_t(d)], "select ", index,
             " out of range for dim ", d, " of ", shape_str(shape_));
  Tensor t = *this;
  t.offset_ += index * strides_[size_t(d)];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  if (a < 0) a += ndim();
  if (b < 0) b += ndim();
  IRIS_CHECK(a >= 0 && a < ndim() && b >= 0 && b < ndim(), "transpose dims out of range");
  Tensor t = *this;
  std::swap(t.shape_[size_t(a)], t.shape_[size_t(b)]);
  std::swap(t.strides_[size_t(a)], t.strides_[size_t(b)]);
  return t;
}

Tensor Tensor::unsqueeze(int d) const {
  if (d < 0) d += ndim() + 1;
  IRIS_CHECK(d >= 0 && d <= ndim(), "unsqueeze dim out of range");
  Tensor t = *this;
  int64_t st = d < ndim() ? strides_[size_t(d)] * shape_[size_t(d)] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, st);
  return t;
}

namespace {

double load_as_double(const void* p, DType t) {
  switch (t) {
    case DType::F32: return *static_cast<const float*>(p);
    case DType::F64: return *static_cast<const double*>(p);
    case DType::BF16: return bf16_to_f32(*static_cast<const uint16_t*>(p));
    case DType::F16: return f16_to_f32(*static_cast<const uint16_t*>(p));
    case DType::I64: return double(*static_cast<const int64_t*>(p));
    case DType::I32: return *static_cast<const int32_t*>(p);
    case DType::I16: return *static_cast<const int16_t*>(p);
    case DType::I8: return *static_cast<const int8_t*>(p);
    case DType::U8: case DType::BOOL: return *static_cast<const uint8_t*>(p);
  }
  return 0;
}

void store_from_double(void* p, DType t, double v) {
  switch (t) {
    case DType::F32: *static_cast<float*>(p) = float(v); break;
    case DType::F64: *static_cast<double*>(p) = v; break;
    case DType::BF16: *static_cast<uint16_t*>(p) = f32_to_bf16(float(v)); break;
    case DType::F16: *static_cast<uint16_t*>(p) = f32_to_f16(float(v)); break;
    case DType::I64: *static_cast<int64_t*>(p) = int64_t(v); break;
    case DType::I32: *static_cast<int32_t*>(p) = int32_t(v); break;
    case DType::I16: *static_cast<int16_t*>(p) = int16_t(v); break;
    case DType::I8: *static_cast<int8_t*>(p) = int8_t(v); break;
    case DType::U8: case DType::BOOL: *static_cast<uint8_t*>(p) = uint8_t(v); break;
  }
}

// Calls fn(src_elem_offset, dst_index) over all elements of a strided tensor in row-major order.
void for_each_strided(const Shape& shape, const std::vector<int64_t>& strides, int64_t offset,
                      const std::function<void(int64_t, int64_t)>& fn) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  std::vector<int64_t> idx(shape.size(), 0);
  int64_t off = offset;
  for (int64_t i = 0; i < n; ++i) {
    fn(off, i);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  IRIS_CHECK(src.shape_ == shape_, "copy_from: shape ", shape_str(src.shape_), " into ", shape_str(shape_));
  IRIS_CHECK(is_contiguous(), "copy_from into a non-contiguous tensor");
  char* dst = static_cast<char*>(raw());
  size_t des = dtype_size(dtype_), ses = dtype_size(src.dtype_);
  const char* sbase = static_cast<const char*>(src.storage_->data);
  if (src.dtype_ == dtype_ && src.is_contiguous()) {
    std::memcpy(dst, src.raw(), nbytes());
    return;
  }
  if (src.dtype_ == DType::F32 && dtype_ == DType::BF16 && src.is_contiguous()) {
    const float* s = src.data<float>();
    uint16_t* d = data_u16();
    for (int64_t i = 0; i < numel(); ++i) d[i] = f32_to_bf16(s[i]);
    return;
  }
  if (src.dtype_ == DType::BF16 && dtype_ == DType::F32 && src.is_contiguous()) {
    const uint16_t* s = src.data_u16();
    float* d = data<float>();
    for (int64_t i = 0; i < numel(); ++i) d[i] = bf16_to_f32(s[i]);
    return;
  }
  DType st = src.dtype_, dt = dtype_;
  bool same = st == dt;
  for_each_strided(src.shape_, src.strides_, src.offset_, [&](int64_t so, int64_t di) {
    if (same)
      std::memcpy(dst + di * int64_t(des), sbase + so * int64_t(ses), des);
    else
      store_from_double(dst + di * int64_t(des), dt, load_as_double(sbase + so * int64_t(ses), st));
  });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return contiguous();
  Tensor t = empty(shape_, dtype);
  t.copy_from(*this);
  return t;
}

float Tensor::item_f32(int64_t i) const {
  IRIS_CHECK(is_contiguous() && i >= 0 && i < numel(), "item_f32: index ", i, " out of range");
  return float(load_as_double(static_cast<const char*>(raw()) + i * int64_t(dtype_size(dtype_)), dtype_));
}

}  // namespace iris
