// NumPy .npy arrays (format versions 1.0, 2.0, 3.0; little-endian; C order) for debugging dumps and golden
// files. dtypes: <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1 ('=' and '<' both read as little-endian; big-endian is
// rejected).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace iris::io {

// Reads a whole .npy file into an owned tensor. Errors name the file and the problem (bad magic, unsupported
// version, malformed header, fortran_order True, unsupported or big-endian dtype, data size mismatch).
Tensor load_npy(const std::string& path);
// The same from bytes in memory; `name` is used in error messages.
Tensor parse_npy(const uint8_t* data, size_t size, const std::string& name);

// Writes t atomically. F16 is stored as <f2; BF16 (which NumPy lacks) is converted to <f4.
void save_npy(const std::string& path, const Tensor& t);
// The bytes save_npy writes: byte-identical to numpy.save (header padding included).
std::string npy_bytes(const Tensor& t);

}  // namespace iris::io
