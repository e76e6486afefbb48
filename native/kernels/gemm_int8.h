// Int8 products for the profiler's Krylov passes (docs/algorithms.md §1,
// "int8 products").
//
// A bf16 weight W [rows, cols] is quantized once (int8_quantize): one scale
// per row or per column, s = max|w| / 127, and q = rint(w / s) in [−127,
// 127], stored as the byte q + 128 in two layouts of "quads" (4 consecutive
// values of the reduction index in one 32-bit lane):
//   by_rows [rows/4][S][4], S = int8_stride(cols): byte (i, j) at ((i/4)·S + j)·4 + i%4
//                                                 (the sum runs over rows)
//   by_cols [cols/4][S][4], S = int8_stride(rows): byte (i, j) at ((j/4)·S + i)·4 + j%4
//                                                 (the sum runs over columns)
// Padding bytes are 128 (the value 0). The stride is 16 rows more than a
// multiple of 16: successive quads of a row are then 64 bytes off a multiple
// of 4 KiB apart and do not all fall into the same cache sets (with a stride
// of 2048 or 8192 rows they did, and a tile's slice of A thrashed L1 and L2).
//
// int8_gemm then computes, for such a layout A [quads][S][4] with output
// rows i < m and reduction index t < k:
//   C[i, c] = rowScale_i · Σ_t A(i, t) · B(t, c)
// where B = fold ⊙ B is quantized per column c: within |b| ≤ T_c =
// min(max_t |b|, 6·rms_t b, 6·rms'_t b), rms' over the values within the
// first two bounds, it is rint(b·127/T_c) (int8) and multiplied by
// vpdpbusd (u8 × s8 → int32, 4 products per lane) in chunks of 65536 values
// of t (the int32 sums cannot overflow); the few values beyond T_c (a
// vector's outliers) are multiplied in float32 instead. fold (length k) and
// rowScale (length m) are optional. The result is exact up to the two
// roundings to int8 and float32 sums.
#pragma once

#include <cstdint>

namespace qkd {

struct Int8QuantizeArgs {
  const uint16_t* w = nullptr;  // bf16 bits [rows, cols]
  int64_t rows = 0, cols = 0;   // both multiples of 4
  bool per_row = true;          // scales per row (length rows), else per column (length cols)
  uint8_t* by_rows = nullptr;   // rows · int8_stride(cols) bytes
  uint8_t* by_cols = nullptr;   // cols · int8_stride(rows) bytes
  float* scales = nullptr;
};

// The quad layouts' stride for m output rows: ceil16(m) + 16.
inline int64_t int8_stride(int64_t m) { return (m + 15) / 16 * 16 + 16; }

// Fills both layouts and the scales. Returns ‖W − s·q‖² / ‖W‖² (0 for a zero
// W), or −1 when W holds a value that is not finite.
double int8_quantize(const Int8QuantizeArgs& args);

struct Int8GemmArgs {
  const uint8_t* a = nullptr;  // [k/4][stride][4]
  int64_t stride = 0;          // a multiple of 16, ≥ m
  int64_t m = 0, n = 0, k = 0;  // k a multiple of 4
  const float* fold = nullptr;  // length k, or nullptr
  const float* b = nullptr;     // [k, n] row-major, leading dimension ldb
  int64_t ldb = 0;
  const float* row_scale = nullptr;  // length m, or nullptr
  float* c = nullptr;                // [m, n], leading dimension ldc (overwritten)
  int64_t ldc = 0;
};

// C as above. Returns the number of B values multiplied in float32 (the
// outliers), −1 when B (after fold) holds a value that is not finite, −2
// when memory is short.
int64_t int8_gemm(const Int8GemmArgs& args);

// True when int8_gemm runs on AVX-512 VNNI (vpdpbusd); elsewhere it runs on
// a portable loop, correct but far slower than the bf16 GEMM.
bool int8_gemm_fast();

}  // namespace qkd
