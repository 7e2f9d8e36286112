// Tensor: dtype, shape, strides (in elements, PyTorch's order: outermost first), an element offset and shared
// storage. Storage is either owned (64-byte aligned heap memory) or borrowed from a file mapping, which the
// storage keeps alive: a weight used as stored is read straight from the checkpoint's mapping.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace iris {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  std::shared_ptr<void> owner;  // keeps the memory alive: an aligned allocation or a file mapping

  static std::shared_ptr<Storage> allocate(size_t nbytes);  // 64-byte aligned, zero-filled
  static std::shared_ptr<Storage> borrow(void* data, size_t nbytes, std::shared_ptr<void> owner);
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32) { return empty(shape, dtype); }
  // A contiguous tensor over existing storage starting at byte_offset (must be element-aligned).
  static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  int64_t offset() const { return offset_; }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw() { return static_cast<char*>(storage_->data) + offset_ * int64_t(dtype_size(dtype_)); }
  const void* raw() const { return static_cast<const char*>(storage_->data) + offset_ * int64_t(dtype_size(dtype_)); }
  template <typename T>
  T* data() {
    IRIS_CHECK(dtype_ == dtype_of<T>(), "tensor has dtype ", dtype_name(dtype_), ", accessed as ",
               dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw());
  }
  template <typename T>
  const T* data() const {
    IRIS_CHECK(dtype_ == dtype_of<T>(), "tensor has dtype ", dtype_name(dtype_), ", accessed as ",
               dtype_name(dtype_of<T>()));
    return static_cast<const T*>(raw());
  }
  // For 16-bit float types (stored as uint16_t).
  uint16_t* data_u16() { return static_cast<uint16_t*>(raw()); }
  const uint16_t* data_u16() const { return static_cast<const uint16_t*>(raw()); }

  // Views (share storage).
  Tensor view(const Shape& shape) const;  // contiguous only; one -1 allowed
  Tensor slice(int dim, int64_t start, int64_t end) const;
  Tensor select(int dim, int64_t index) const;  // drops the dimension
  Tensor transpose(int a, int b) const;
  Tensor unsqueeze(int dim) const;

  // Copies.
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(DType dtype) const;  // converting copy between float types (and integer types to F32/F64/I64)
  void copy_from(const Tensor& src);  // same shape; converts dtype

  float item_f32(int64_t flat_index) const;  // any float/int dtype, contiguous tensors; slow, for tests and tools

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::F32;
  Shape shape_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;
};

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& v, const Shape& shape) {
  IRIS_CHECK(int64_t(v.size()) == shape_numel(shape), "from_vector: ", v.size(), " values for shape ",
             shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>());
  std::copy(v.begin(), v.end(), t.data<T>());
  return t;
}

}  // namespace iris
