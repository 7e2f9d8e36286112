// GGUF's quantized block formats (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), bit-compatible with GGML/llama.cpp files, so
// a .gguf tensor's bytes are read as stored, with no re-quantization. A row of n values is n / block_size(type)
// consecutive blocks; every multi-byte field is little-endian and the blocks are packed (no padding).
//
// Layouts (byte offsets; "d" fields are IEEE half floats):
//   Q8_0  (32 values,  34 bytes): d @0, int8 qs[32] @2.                       x[i] = qs[i] * d
//   Q4_0  (32 values,  18 bytes): d @0, uint8 qs[16] @2: value i < 16 is the low nibble of qs[i], value i >= 16
//                                 the high nibble of qs[i-16].                 x = (nibble - 8) * d
//   Q4_K (256 values, 144 bytes): d @0, dmin @2, scales[12] @4, qs[128] @16. 8 sub-blocks of 32 with 6-bit
//                                 scale sc and min m packed in scales[]; x = (d*sc) * q - (dmin*m), q 4 bits.
//   Q5_K (256 values, 176 bytes): as Q4_K plus qh[32] @16 (one high bit per value), qs[128] @48; q 5 bits.
//   Q6_K (256 values, 210 bytes): ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208. 16 sub-blocks of 16:
//                                 x = (d * scales[i/16]) * (q - 32), q 6 bits (low 4 in ql, high 2 in qh).
// The exact bit positions are documented beside the decoders in quant_blocks.cpp.
#pragma once
#include <cstddef>
#include <cstdint>

namespace iris::cpu {

enum class QuantType : uint8_t { Q8_0, Q4_0, Q4_K, Q5_K, Q6_K };

const char* quant_type_name(QuantType t);  // "Q8_0", ... as GGUF/llama.cpp spell them
int64_t block_size(QuantType t);           // values per block: 32 or 256
int64_t block_bytes(QuantType t);          // bytes per block: 34, 18, 144, 176, 210
int64_t row_bytes(QuantType t, int64_t n);  // bytes of n values; throws unless n is a non-negative multiple of block_size

// Decodes n values (a multiple of block_size) from packed blocks at src into dst, bit-identical to GGML's
// dequantize_row_*. Every product in these formats is exact in float (a half's 11 significant bits times a scale
// of at most 7 bits (or -128) times a quant of at most 5 bits (or -32) fits in 24), so the order of the products
// and FMA contraction cannot change a result; the only rounding is the K-quants' final (d*sc)*q - dmin*m.
void dequantize_row(QuantType t, const void* src, float* dst, int64_t n);

// A reference quantizer: round to nearest on each format's grid, with half scales rounded to nearest even as
// GGML's FP32_TO_FP16 does. Q8_0 and Q4_0 follow the rules of GGML's reference quantizer (not yet compared byte for byte with its output). The
// K-quants take each sub-block's min/max (Q4_K, Q5_K) or signed absmax (Q6_K) as its scale, then quantize the
// sub-block scales to 6 (8) bits against the block's largest; this is NOT llama.cpp's iterative error-minimising
// scale search (make_qkx2_quants / make_qx_quants), so the bytes differ from llama-quantize's, but any decoder
// reads them identically. Blocks already on a format's grid come back value for value (see the tests). src must
// be finite; as in GGML, a block whose scale exceeds the half range (65504) gets an infinite d.
void quantize_row(QuantType t, const float* src, void* dst, int64_t n);

}  // namespace iris::cpu
