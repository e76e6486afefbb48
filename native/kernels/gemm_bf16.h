// GEMM with a bfloat16 left operand: C = op(A) · bf16(op(B)), row-major,
// C optionally stored transposed.
//
// Made for the data-free profiler, whose weights are stored as bf16 in most
// checkpoints: the big operand A (a weight matrix) is read as it is stored,
// never widened to float32 in memory, and B (a thin block of vectors) is
// rounded to bf16 (nearest even) while it is packed. Products of two bf16
// values are exact in float32 and are summed in float32, so the result
// equals the float32 product of the widened A and the rounded B up to the
// order of the float32 additions.
//
// Paths: on CPUs with AVX-512 BF16 a 14×32 micro-kernel of vdpbf16ps (two
// products per lane and instruction, twice the FMA rate), and for a B of at
// most 16 columns (C not transposed) thin kernels that read A where it lies
// instead of packing it; elsewhere (or when
// QKD_ISA lowers the path) A is widened and B rounded block by block and the
// float32 SGEMM does the work.
//
// A frozen Linear y = x·Wᵀ (x [rows, in], W [out, in] in bf16) is
// yᵀ = W·xᵀ: A = W, B = x given as stored (trans_b) and C = y written as
// stored (trans_c), with no transpose of either in memory.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

struct Bf16GemmArgs {
  bool trans_a = false;  // op(A)[m,k] = trans_a ? A[k*lda + m] : A[m*lda + k]
  int64_t m = 0, n = 0, k = 0;
  const uint16_t* a = nullptr;  // bf16 bits: M×K (K×M if trans_a), leading dimension lda
  int64_t lda = 0;
  bool trans_b = false;  // op(B)[k,n] = trans_b ? B[n*ldb + k] : B[k*ldb + n]
  const float* b = nullptr;  // K×N (N×K if trans_b) float32, leading dimension ldb; rounded to bf16
  int64_t ldb = 0;
  bool trans_c = false;  // element (m, n) of the result at C[n*ldc + m] instead of C[m*ldc + n]
  float* c = nullptr;    // M×N (N×M if trans_c) float32, leading dimension ldc
  int64_t ldc = 0;
  bool accumulate = false;  // C += op(A)·bf16(B); else C is overwritten, never read
};

// C (+)= op(A) · bf16(op(B)) (transposed when trans_c). K == 0 gives zeros
// (or leaves C when accumulating).
// C must not overlap A or B.
// Returns false only if scratch memory could not be allocated.
bool bf16_gemm(const Bf16GemmArgs& args);

// The same on a chosen path and at most `max_threads` threads; `use_dot`
// false forces the widening fallback (tests and benchmarks).
bool bf16_gemm_with(const Bf16GemmArgs& args, Isa isa, int max_threads, bool use_dot);

// dst[i] = bf16 bits of src[i] for i < n (round to nearest even, NaN kept
// quiet, subnormals kept): a float32 weight rounded once so that it can go
// through the bf16 GEMM. Threaded for large n.
void float_to_bf16(const float* src, uint16_t* dst, int64_t n);
// bfloat16 bits → float32 (the bits shifted up, exact).
void bf16_to_float(const uint16_t* src, float* dst, int64_t n);
// IEEE half bits → float32, exact (a signalling NaN comes out quiet), threaded in chunks.
void half_to_float(const uint16_t* src, float* dst, int64_t n);
void half_to_float_with(const uint16_t* src, float* dst, int64_t n, Isa isa, int max_threads);
void float_to_bf16_with(const float* src, uint16_t* dst, int64_t n, Isa isa, int max_threads);

// Round to nearest even, NaN kept quiet: the rounding the packing applies to B.
inline uint16_t float_to_bf16_bits(float value) {
  uint32_t bits;
  __builtin_memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  __builtin_memcpy(&value, &wide, sizeof value);
  return value;
}

// The micro-kernel path (gemm_bf16_avx512.cc); nullptr when not compiled in.
struct Bf16DotKernel {
  int mr;       // rows of C per tile
  int nr;       // columns of C per tile (a multiple of 16)
  // C[0:m_valid, 0:n_valid] (=|+=) ap · bp over `pairs` k-pairs; with
  // `transposed` element (r, j) is at c[j*ldc + r] instead of c[r*ldc + j].
  // ap: pairs × mr dwords (each the bf16 pair A[r, 2p], A[r, 2p+1]);
  // bp: pairs × nr dwords (the bf16 pair B[2p, j], B[2p+1, j]).
  void (*compute)(int64_t pairs, const uint32_t* ap, const uint32_t* bp, float* c, int64_t ldc,
                  bool accumulate, int m_valid, int n_valid, bool transposed);
  // Packs rows [row, row+rows) × k in [k0, k0 + 2·pairs) ∩ [0, K) of op(A)
  // into ceil(rows/mr) micro-panels, panel t at ap + t·mr·pairs (zero padded).
  void (*pack_a)(const uint16_t* a, int64_t lda, bool trans, int64_t k_total, int64_t row,
                 int64_t rows, int64_t k0, int64_t pairs, uint32_t* ap);
  // Packs k in [k0, k0 + 2·pairs) ∩ [0, K) × columns [col, col+cols) (cols ≤ nr)
  // of op(B) into one micro-panel (rounded, zero padded).
  void (*pack_b)(const float* b, int64_t ldb, bool trans, int64_t k_total, int64_t k0, int64_t pairs,
                 int64_t col, int64_t cols, uint32_t* bp);
  // Aᵀ·B for a thin B, with A read where it lies (no packing): the sums
  // C[i, j] = Σ_k A[k, row + i]·B[k, j] for i < m_valid ≤ 16 (j < 16), over
  // the k-pairs [p0, p1) of one packed B panel, added to acc (16 × 16
  // floats, 64-byte aligned, acc[16 j + i]); then thin_columns_store writes
  // C (row i at c + i·ldc) from them. 16 columns of A per vector (two rows
  // interleaved into k-pairs), each B pair broadcast: the packed path's
  // 16-column tile broadcast A instead and paid for packing it.
  void (*thin_columns)(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row, int m_valid, const uint32_t* bp,
                       int64_t p0, int64_t p1, float* acc);
  void (*thin_columns_store)(const float* acc, float* c, int64_t ldc, bool accumulate, int m_valid, int n_valid);
  // A·B for a thin B, with A read where it lies: C[i, j] (=|+=) Σ_k A[row + i, k]·B[k, j]
  // for i < m_valid ≤ mr, j < n_valid ≤ 16; the k-pairs of a row of A are its consecutive
  // dwords, broadcast straight from A instead of from a packed copy.
  void (*thin_rows)(const uint16_t* a, int64_t lda, int64_t k_total, int64_t row, int m_valid, const uint32_t* bp,
                    float* c, int64_t ldc, bool accumulate, int n_valid);
};
const Bf16DotKernel* avx512_bf16_dot_kernel();

}  // namespace qkd
