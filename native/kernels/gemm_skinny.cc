// Skinny products (see gemm_skinny.h). The loops are written once, as
// always-inline templates over a GCC/Clang vector type, and instantiated
// inside functions compiled for AVX-512 (16 floats), AVX2 (8) and the
// baseline (4): each copy becomes that ISA's vector instructions, without
// intrinsics and without relying on the auto-vectoriser (which will not
// reorder a float sum without -ffast-math).
#include "gemm_skinny.h"

#include <algorithm>
#include <cstring>

#include "aligned_buffer.h"

#define QKD_INLINE inline __attribute__((always_inline))

// The vector-typed helpers below are always inlined into a function of the
// matching ISA, so GCC's note that their out-of-line ABI differs between
// ISAs does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace qkd {
namespace {

typedef float Floats4 __attribute__((vector_size(16)));
typedef float Floats8 __attribute__((vector_size(32)));
typedef float Floats16 __attribute__((vector_size(64)));

// Columns of C per block of the axpy form: the block's accumulators
// (rows × kBlockColumns floats) stay in L1 while B streams through.
constexpr int64_t kBlockColumns = 4096;

struct SkinnyScratch {
  AlignedBuffer left;  // L copied to contiguous rows (dot form)
  AlignedBuffer acc;   // accumulators of one column block (axpy form)
};

template <class V>
QKD_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class V>
QKD_INLINE void store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

template <class V>
QKD_INLINE float sum_lanes(const V& v) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

// C[i, j] = alpha * value + beta * C[i, j], without reading C when beta == 0.
QKD_INLINE void store_result(const SkinnyProblem& p, int64_t i, int64_t j, float value) {
  float* out = p.c + i * p.c_row_stride + j * p.c_col_stride;
  *out = p.beta == 0.0f ? p.alpha * value : p.alpha * value + p.beta * *out;
}

// Rows [i0, i0+kRows) × columns [j0, j0+kCols) of C as dot products of
// contiguous left rows with right columns that are contiguous in k.
template <class V, int kRows, int kCols>
QKD_INLINE void dot_tile(const SkinnyProblem& p, const float* left_rows, int64_t i0, int64_t j0) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  const float* left[kRows];
  for (int r = 0; r < kRows; ++r) left[r] = left_rows + (i0 + r) * p.k;
  const float* right[kCols];
  for (int c = 0; c < kCols; ++c) right[c] = p.right.data + (j0 + c) * p.right.ld;

  V acc[kRows][kCols] = {};
  int64_t q = 0;
  for (; q + kLanes <= p.k; q += kLanes) {
    V x[kRows], y[kCols];
    for (int r = 0; r < kRows; ++r) x[r] = load<V>(left[r] + q);
    for (int c = 0; c < kCols; ++c) y[c] = load<V>(right[c] + q);
    for (int r = 0; r < kRows; ++r) {
      for (int c = 0; c < kCols; ++c) acc[r][c] += x[r] * y[c];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kCols; ++c) {
      float sum = sum_lanes(acc[r][c]);
      for (int64_t t = q; t < p.k; ++t) sum += left[r][t] * right[c][t];
      store_result(p, i0 + r, j0 + c, sum);
    }
  }
}

// All rows × columns [j0, j0+kCols): the kCols right columns come from
// memory once and are reused from cache for every pair of rows.
template <class V, int kCols>
QKD_INLINE void dot_columns(const SkinnyProblem& p, const float* left_rows, int64_t j0) {
  int64_t i = 0;
  for (; i + 2 <= p.rows; i += 2) dot_tile<V, 2, kCols>(p, left_rows, i, j0);
  if (i < p.rows) dot_tile<V, 1, kCols>(p, left_rows, i, j0);
}

// R transposed: every C entry is a dot product of two contiguous vectors.
template <class V>
QKD_INLINE bool dot_form(const SkinnyProblem& p, int64_t j0, int64_t j1, SkinnyScratch& scratch) {
  const float* left_rows = p.left.data;
  if (p.left.trans || p.left.ld != p.k) {
    float* copy = scratch.left.reserve(static_cast<size_t>(p.rows * p.k));
    if (copy == nullptr) return false;
    for (int64_t i = 0; i < p.rows; ++i) {
      for (int64_t q = 0; q < p.k; ++q) {
        copy[i * p.k + q] = p.left.trans ? p.left.data[q * p.left.ld + i] : p.left.data[i * p.left.ld + q];
      }
    }
    left_rows = copy;
  }
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) dot_columns<V, 4>(p, left_rows, j);
  for (; j < j1; ++j) dot_columns<V, 1>(p, left_rows, j);
  return true;
}

// R rows contiguous in j: C rows are sums of scaled R rows (axpy), four k
// at a time, one block of columns at a time.
template <class V>
QKD_INLINE bool axpy_form(const SkinnyProblem& p, int64_t j0, int64_t j1, SkinnyScratch& scratch) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  float* acc = scratch.acc.reserve(static_cast<size_t>(p.rows * kBlockColumns));
  if (acc == nullptr) return false;
  const SkinnyOperand& left = p.left;
  const int64_t ld = p.right.ld;
  for (int64_t jb = j0; jb < j1; jb += kBlockColumns) {
    const int64_t width = std::min(kBlockColumns, j1 - jb);
    const int64_t vector_width = width / kLanes * kLanes;
    for (int64_t t = 0; t < p.rows * kBlockColumns; ++t) acc[t] = 0.0f;
    int64_t q = 0;
    for (; q < p.k; q += 4) {
      const int steps = p.k - q >= 4 ? 4 : static_cast<int>(p.k - q);
      const float* r = p.right.data + q * ld + jb;
      for (int64_t i = 0; i < p.rows; ++i) {
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int s = 0; s < steps; ++s) {
          a[s] = left.trans ? left.data[(q + s) * left.ld + i] : left.data[i * left.ld + q + s];
        }
        float* row = acc + i * kBlockColumns;
        if (steps == 4) {
          const V a0 = V{} + a[0], a1 = V{} + a[1], a2 = V{} + a[2], a3 = V{} + a[3];
          int64_t j = 0;
          for (; j < vector_width; j += kLanes) {
            const V sum = a0 * load<V>(r + j) + a1 * load<V>(r + ld + j) + a2 * load<V>(r + 2 * ld + j) +
                          a3 * load<V>(r + 3 * ld + j);
            store<V>(row + j, load<V>(row + j) + sum);
          }
          for (; j < width; ++j) row[j] += a[0] * r[j] + a[1] * r[ld + j] + a[2] * r[2 * ld + j] + a[3] * r[3 * ld + j];
        } else {
          for (int s = 0; s < steps; ++s) {
            for (int64_t j = 0; j < width; ++j) row[j] += a[s] * r[s * ld + j];
          }
        }
      }
    }
    for (int64_t i = 0; i < p.rows; ++i) {
      for (int64_t j = 0; j < width; ++j) store_result(p, i, jb + j, acc[i * kBlockColumns + j]);
    }
  }
  return true;
}

template <class V>
QKD_INLINE bool skinny_body(const SkinnyProblem& p, int64_t j0, int64_t j1) {
  thread_local SkinnyScratch scratch;
  return p.right.trans ? dot_form<V>(p, j0, j1, scratch) : axpy_form<V>(p, j0, j1, scratch);
}

#if QKD_X86
QKD_TARGET_AVX512 bool skinny_avx512(const SkinnyProblem& p, int64_t j0, int64_t j1) {
  return skinny_body<Floats16>(p, j0, j1);
}
QKD_TARGET_AVX2 bool skinny_avx2(const SkinnyProblem& p, int64_t j0, int64_t j1) {
  return skinny_body<Floats8>(p, j0, j1);
}
#endif

bool skinny_portable(const SkinnyProblem& p, int64_t j0, int64_t j1) { return skinny_body<Floats4>(p, j0, j1); }

}  // namespace

bool skinny_gemm(const SkinnyProblem& p, int64_t col_begin, int64_t col_end, Isa isa) {
#if QKD_X86
  if (isa == Isa::kAvx512) return skinny_avx512(p, col_begin, col_end);
  if (isa == Isa::kAvx2) return skinny_avx2(p, col_begin, col_end);
#endif
  (void)isa;
  return skinny_portable(p, col_begin, col_end);
}

}  // namespace qkd
