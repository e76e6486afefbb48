// symmetric_eigenvalues (sym_eig.h): Householder reduction to tridiagonal
// form (on a copy of the lower triangle), then QL or bisection.
#include "sym_eig.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "aligned_buffer.h"
#include "simd_avx512.h"
#include "thread_pool.h"

#if QKD_X86
#include <immintrin.h>
#endif

namespace qkd {
namespace {

// A Householder reflector H = I − τ·v·vᵀ mapping the column x[0, m)
// (stride apart) onto a multiple of its first axis: v goes to v[0, m),
// e_out gets the new subdiagonal entry, the result is τ (0 and v = 0 when
// x is already reduced).
// Computed in double for either storage type T.
template <typename T>
inline double householder(const T* x, int64_t stride, int64_t m, T* v, double* e_out) {
  double scale = 0.0, tail = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const double a = std::fabs(x[i * stride]);
    scale += a;
    if (i > 0) tail += a;
  }
  if (tail == 0.0) {
    *e_out = x[0];
    for (int64_t i = 0; i < m; ++i) v[i] = 0.0;
    return 0.0;
  }
  double norm2 = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const double vi = x[i * stride] / scale;
    v[i] = static_cast<T>(vi);
    norm2 += vi * vi;
  }
  const double norm = std::sqrt(norm2);
  const double v0 = x[0] / scale;
  const double alpha = v0 > 0.0 ? -norm : norm;
  *e_out = alpha * scale;
  const double vtv = 2.0 * (norm2 - v0 * alpha);
  v[0] = static_cast<T>(v0 - alpha);
  return 2.0 / vtv;
}

// One row of the fused sweep, columns [0, count): b = row − vi·w − wi·v
// (stored), dot += b·v2 and p2 += b·v2i. Returns dot.
template <typename T>
inline double sweep_row_portable(T* row, const T* w, const T* v, const T* v2, T* p2, int64_t count, T vi, T wi,
                                 T v2i) {
  T dot = 0;
  for (int64_t j = 0; j < count; ++j) {
    const T b = row[j] - vi * w[j] - wi * v[j];
    row[j] = b;
    dot += b * v2[j];
    p2[j] += b * v2i;
  }
  return dot;
}

// kSweepRows rows of the fused sweep at once over their shared columns
// [0, count): for each row r, b_r = row_r − vi_r·w − wi_r·v (stored) and
// dot_r += b_r·v2; and p2 += Σ_r b_r·v2i_r. The loads of w, v, v2 and p2
// and the loop overhead are shared by the rows (0.89 ms against 1.20 ms
// one row at a time for n = 256 on this machine).
constexpr int kSweepRows = 4;

#if QKD_X86
// The sweeps' vector of a storage type: the fused kernels' 16 floats
// (simd_avx512.h), or 8 doubles (one register: a 16-double pair per row
// would take the 4-row sweep past the 32 registers; 0.85 against 1.14 ms
// for n = 256).
template <typename T>
struct SweepLanes;

template <>
struct SweepLanes<float> {
  using V = Avx512::F;
  static constexpr int kWidth = Avx512::kWidth;
  QKD_TARGET_AVX512 static V zero() { return Avx512::zero(); }
  QKD_TARGET_AVX512 static V set1(float x) { return Avx512::set1(x); }
  QKD_TARGET_AVX512 static V load(const float* p, int64_t left) { return Avx512::loadn(p, left); }
  QKD_TARGET_AVX512 static void store(float* p, int64_t left, V v) { Avx512::storen(p, left, v); }
  QKD_TARGET_AVX512 static V fmadd(V a, V b, V c) { return Avx512::fmadd(a, b, c); }
  QKD_TARGET_AVX512 static double sum(V a) { return _mm512_reduce_add_ps(a); }
};

template <>
struct SweepLanes<double> {
  using V = __m512d;
  static constexpr int kWidth = 8;
  QKD_TARGET_AVX512 static __mmask8 mask(int64_t left) {
    return left >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << left) - 1u);
  }
  QKD_TARGET_AVX512 static V zero() { return _mm512_setzero_pd(); }
  QKD_TARGET_AVX512 static V set1(double x) { return _mm512_set1_pd(x); }
  QKD_TARGET_AVX512 static V load(const double* p, int64_t left) { return _mm512_maskz_loadu_pd(mask(left), p); }
  QKD_TARGET_AVX512 static void store(double* p, int64_t left, V v) { _mm512_mask_storeu_pd(p, mask(left), v); }
  QKD_TARGET_AVX512 static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  QKD_TARGET_AVX512 static double sum(V a) { return _mm512_reduce_add_pd(a); }
};

// One row of the fused sweep (sweep_row_portable), a vector per step.
template <typename T>
QKD_TARGET_AVX512 inline double sweep_row_avx512(T* row, const T* w, const T* v, const T* v2, T* p2, int64_t count,
                                                 T vi, T wi, T v2i) {
  using L = SweepLanes<T>;
  const typename L::V nvi = L::set1(-vi), nwi = L::set1(-wi), bv2i = L::set1(v2i);
  typename L::V dot = L::zero();
  for (int64_t j = 0; j < count; j += L::kWidth) {
    const int64_t left = count - j;
    const typename L::V b = L::fmadd(nwi, L::load(v + j, left), L::fmadd(nvi, L::load(w + j, left), L::load(row + j, left)));
    L::store(row + j, left, b);
    dot = L::fmadd(b, L::load(v2 + j, left), dot);
    L::store(p2 + j, left, L::fmadd(b, bv2i, L::load(p2 + j, left)));
  }
  return L::sum(dot);
}

// kSweepRows rows at once (see kSweepRows).
template <typename T>
QKD_TARGET_AVX512 inline void sweep_rows_avx512(T* const* rows, const T* w, const T* v, const T* v2, T* p2,
                                                int64_t count, const T* vi, const T* wi, const T* v2i, double* dots) {
  using L = SweepLanes<T>;
  constexpr int R = kSweepRows;
  typename L::V nvi[R], nwi[R], bv2i[R], dot[R];
  for (int r = 0; r < R; ++r) {
    nvi[r] = L::set1(-vi[r]);
    nwi[r] = L::set1(-wi[r]);
    bv2i[r] = L::set1(v2i[r]);
    dot[r] = L::zero();
  }
  for (int64_t j = 0; j < count; j += L::kWidth) {
    const int64_t left = count - j;
    const typename L::V wv = L::load(w + j, left), vv = L::load(v + j, left), v2v = L::load(v2 + j, left);
    typename L::V acc = L::load(p2 + j, left);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const typename L::V b = L::fmadd(nwi[r], vv, L::fmadd(nvi[r], wv, L::load(rows[r] + j, left)));
      L::store(rows[r] + j, left, b);
      dot[r] = L::fmadd(b, v2v, dot[r]);
      acc = L::fmadd(b, bv2i[r], acc);
    }
    L::store(p2 + j, left, acc);
  }
  for (int r = 0; r < R; ++r) dots[r] = L::sum(dot[r]);
}
#endif

// Householder reduction of the symmetric n×n matrix in `a` (float or
// double T; row-major, lower triangle used and destroyed) to tridiagonal
// form: diagonal d[0, n),
// off-diagonal e[0, n−1) (e[i] couples i and i+1), both double whatever
// the storage type T. v, w, v2, p, p2, pd: scratch of n values of T each.
//
// Step k reflects the trailing block B (rows and columns k+1..) with
// p = τ·B·v, w = p − ½τ(pᵀv)·v, B −= v·wᵀ + w·vᵀ. The update of step k and
// the product B·v of step k+1 share one sweep over the lower triangle: the
// updated first column of B gives the next reflector, then each updated
// row adds its part of the next product (a dot product along the row and,
// by symmetry, an axpy along the same entries). One read and one write of
// half the matrix per step.
//
// With `saved` non-null, reflector j (j = 0..n−3, acting on indices
// j+1..n−1) is kept for eigenvector rows: its v in the upper triangle of
// `a` (row j, columns j+1..n−1, which the reduction never touches), its τ
// in saved[j]. The reduction is A = P·T·Pᵀ with P = P₀·P₁⋯P_{n−3}.
template <typename T, bool kAvx512>
__attribute__((always_inline)) inline void tridiagonalize_body(T* a, int64_t n, double* d, double* e, T* v, T* w,
                                                               T* v2, T* p, T* p2, T* pd, double* saved) {
  d[0] = a[0];
  if (n == 1) return;
  if (n == 2) {
    e[0] = a[n];
    d[1] = a[n + 1];
    return;
  }
  // Step 0: the reflector of column 0 and p = τ·B·v with B = a[1.., 1..].
  double tau = householder(a + n, n, n - 1, v, &e[0]);
  if (saved != nullptr) {
    saved[0] = tau;
    std::copy(v, v + n - 1, a + 1);
  }
  {
    const int64_t m = n - 1;
    T* base = a + n + 1;
    for (int64_t j = 0; j < m; ++j) p[j] = 0;
    for (int64_t i = 0; i < m; ++i) {
      const T* row = base + i * n;
      T dot = 0;
      for (int64_t j = 0; j < i; ++j) {
        dot += row[j] * v[j];
        p[j] += row[j] * v[i];
      }
      p[i] += dot + row[i] * v[i];
    }
    for (int64_t j = 0; j < m; ++j) p[j] = static_cast<T>(p[j] * tau);
  }
  for (int64_t k = 0; k + 2 < n; ++k) {
    const int64_t m = n - k - 1;  // size of B
    T* base = a + (k + 1) * n + (k + 1);
    double pv = 0.0;
    for (int64_t i = 0; i < m; ++i) pv += static_cast<double>(p[i]) * v[i];
    const double half = 0.5 * tau * pv;
    for (int64_t i = 0; i < m; ++i) w[i] = static_cast<T>(p[i] - half * v[i]);
    // Column 0 of B (its diagonal entry included), updated first.
    for (int64_t i = 0; i < m; ++i) base[i * n] -= v[i] * w[0] + w[i] * v[0];
    d[k + 1] = base[0];
    if (m == 2) {  // the last 2×2 block
      base[n + 1] -= 2 * v[1] * w[1];
      e[k + 1] = base[n];
      d[k + 2] = base[n + 1];
      break;
    }
    // The next reflector, from the updated column; then the fused sweep over
    // rows 1.. of B (columns 1..), whose entries form the next block.
    const double tau2 = householder(base + n, n, m - 1, v2, &e[k + 1]);
    if (saved != nullptr) {
      saved[k + 1] = tau2;
      std::copy(v2, v2 + m - 1, a + (k + 1) * n + k + 2);
    }
    for (int64_t j = 0; j < m - 1; ++j) p2[j] = 0;
    int64_t first_row = 1;
#if QKD_X86
    if (kAvx512) {
      // kSweepRows rows at a time. Their contributions from the small
      // triangle they form (and their diagonals) go to pd, so the vector
      // stream over p2 never reloads an entry a scalar store just wrote;
      // pd[j] is set for j < first_row − 1 once the groups are done.
      constexpr int R = kSweepRows;
      for (; first_row + R <= m; first_row += R) {
        const int64_t i0 = first_row;
        T* rows[R];
        T vi[R], wi[R], v2i[R];
        double dots[R];
        for (int r = 0; r < R; ++r) {
          rows[r] = base + (i0 + r) * n + 1;
          vi[r] = v[i0 + r];
          wi[r] = w[i0 + r];
          v2i[r] = v2[i0 + r - 1];
        }
        sweep_rows_avx512(rows, w + 1, v + 1, v2, p2, i0 - 1, vi, wi, v2i, dots);
        // The triangle adds only to pd[i0−1 .. i0+R−2], which no other
        // group touches: summed in registers, stored once.
        double own[R] = {};
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          T* row = base + (i0 + r) * n;
#pragma GCC unroll 4
          for (int c = 0; c < r; ++c) {
            const T b = row[i0 + c] - vi[r] * w[i0 + c] - wi[r] * v[i0 + c];
            row[i0 + c] = b;
            dots[r] += b * v2[i0 + c - 1];
            own[c] += b * v2i[r];
          }
          const int64_t i = i0 + r;
          const T diagonal = row[i] - 2 * vi[r] * wi[r];
          row[i] = diagonal;
          own[r] += dots[r] + diagonal * v2i[r];
        }
        for (int r = 0; r < R; ++r) pd[i0 - 1 + r] = static_cast<T>(own[r]);
      }
      for (int64_t j = 0; j < first_row - 1; ++j) p2[j] += pd[j];
    }
#endif
    for (int64_t i = first_row; i < m; ++i) {
      T* row = base + i * n;
      const T vi = v[i], wi = w[i], v2i = v2[i - 1];
      double dot;
#if QKD_X86
      if (kAvx512) {
        dot = sweep_row_avx512(row + 1, w + 1, v + 1, v2, p2, i - 1, vi, wi, v2i);
      } else
#endif
      {
        dot = sweep_row_portable(row + 1, w + 1, v + 1, v2, p2, i - 1, vi, wi, v2i);
      }
      const T diagonal = row[i] - 2 * vi * wi;
      row[i] = diagonal;
      p2[i - 1] += static_cast<T>(dot + diagonal * v2i);
    }
    for (int64_t j = 0; j < m - 1; ++j) p2[j] = static_cast<T>(p2[j] * tau2);
    std::swap(v, v2);
    std::swap(p, p2);
    tau = tau2;
  }
}

// scratch: 6n values of T.
#if QKD_X86
template <typename T>
QKD_TARGET_AVX512 void tridiagonalize_avx512(T* a, int64_t n, double* d, double* e, T* scratch, double* saved) {
  tridiagonalize_body<T, true>(a, n, d, e, scratch, scratch + n, scratch + 2 * n, scratch + 3 * n, scratch + 4 * n,
                               scratch + 5 * n, saved);
}
#endif

template <typename T>
void tridiagonalize_baseline(T* a, int64_t n, double* d, double* e, T* scratch, double* saved) {
  tridiagonalize_body<T, false>(a, n, d, e, scratch, scratch + n, scratch + 2 * n, scratch + 3 * n, scratch + 4 * n,
                                scratch + 5 * n, saved);
}

// hypot without glibc's overflow guards where they cannot matter (the
// profile of a 300×300 matrix spent a fifth of its time in hypot).
inline double fast_hypot(double a, double b) {
  const double m = std::max(std::fabs(a), std::fabs(b));
  if (m > 1e-140 && m < 1e140) return std::sqrt(a * a + b * b);
  return std::hypot(a, b);
}

// Implicit QL with Wilkinson shifts on the tridiagonal (d, e), e[n−1] = 0:
// d becomes the eigenvalues. False if an eigenvalue needs over 60 sweeps.
// Each plane rotation (c, s) of columns i, i+1 is also applied to the
// `rows` rows of z, stored by columns (column i at z + i·rows, so a
// rotation runs along two contiguous columns): z = E·P on entry gives the
// same rows of the eigenvector matrix P·S on exit, column i for d[i].
bool tridiagonal_eigenvalues(double* d, double* e, int64_t n, double* z = nullptr, int64_t rows = 0) {
  // Off-diagonals below ε·‖T‖ also split the matrix: the reduction has
  // already made errors of that size, and a purely relative test can stall
  // on a block of eigenvalues far below the norm (rank-deficient input).
  double norm = 0.0;
  for (int64_t i = 0; i < n; ++i) norm = std::max(norm, std::fabs(d[i]) + std::fabs(e[i]) + (i > 0 ? std::fabs(e[i - 1]) : 0.0));
  const double floor = DBL_EPSILON * norm;
  for (int64_t l = 0; l < n; ++l) {
    int iterations = 0;
    for (;;) {
      int64_t m = l;
      for (; m < n - 1; ++m) {
        const double dd = std::fabs(d[m]) + std::fabs(d[m + 1]);
        if (std::fabs(e[m]) <= DBL_EPSILON * dd || std::fabs(e[m]) <= floor) break;
      }
      if (m == l) break;
      if (++iterations > 60) return false;

      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = fast_hypot(g, 1.0);
      g = d[m] - d[l] + e[l] / (g + (g >= 0.0 ? r : -r));
      double s = 1.0, c = 1.0, p = 0.0;
      int64_t i = m - 1;
      for (; i >= l; --i) {
        const double f = s * e[i], b = c * e[i];
        e[i + 1] = r = fast_hypot(f, g);
        if (r == 0.0) {
          d[i + 1] -= p;
          e[m] = 0.0;
          break;
        }
        const double inv = 1.0 / r;
        s = f * inv;
        c = g * inv;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        double* zi = z + i * rows;
        double* zn = zi + rows;
        for (int64_t k = 0; k < rows; ++k) {
          const double next = zn[k];
          zn[k] = s * zi[k] + c * next;
          zi[k] = c * zi[k] - s * next;
        }
      }
      if (r == 0.0 && i >= l) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    }
  }
  return true;
}

// ---- Bisection for the largest eigenvalues ---------------------------------
//
// Sturm counts: the number of eigenvalues of the tridiagonal T below x is
// the number of negative pivots of the LDLᵀ factorisation of T − x·I,
//   q₀ = d₀ − x,  qᵢ = dᵢ − x − e²ᵢ₋₁ / qᵢ₋₁,
// with a zero pivot nudged to −pivmin (the standard safeguard). Each wanted
// eigenvalue keeps a bracket [lo, hi] (count(lo) ≤ j < count(hi) for its
// ascending index j) that every count halves; the counts of many brackets
// run side by side (8 lanes × 4 vectors on AVX-512), since the recurrence
// itself is a serial chain of divisions.

struct Brackets {
  double* lo;
  double* hi;
  const int64_t* index;  // ascending index j of each bracket
};

constexpr int kLanes = 32;
// Bisection pays for up to about half of the eigenvalues (QL finds all n;
// measured at n = 128..600).
constexpr int64_t kBisectionCost = 2;

void sturm_counts_portable(const double* d, const double* e2, int64_t n, double pivmin, const double* x, int count,
                           int64_t* below) {
  for (int t = 0; t < count; ++t) {
    double q = d[0] - x[t];
    int64_t c = q < 0.0;
    for (int64_t i = 1; i < n; ++i) {
      if (std::fabs(q) < pivmin) q = -pivmin;
      q = d[i] - x[t] - e2[i - 1] / q;
      c += q < 0.0;
    }
    below[t] = c;
  }
}

#if QKD_X86
QKD_TARGET_AVX512 void sturm_counts_avx512(const double* d, const double* e2, int64_t n, double pivmin, const double* x,
                                           int count, int64_t* below) {
  __m512d xs[4], q[4], c[4];
  const __m512d neg_pivmin = _mm512_set1_pd(-pivmin), pivmin_v = _mm512_set1_pd(pivmin);
  const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
  double padded[kLanes];
  for (int t = 0; t < kLanes; ++t) padded[t] = x[t < count ? t : count - 1];
  for (int v = 0; v < 4; ++v) {
    xs[v] = _mm512_loadu_pd(padded + 8 * v);
    q[v] = _mm512_sub_pd(_mm512_set1_pd(d[0]), xs[v]);
    c[v] = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(q[v], zero, _CMP_LT_OQ), zero, one);
  }
  for (int64_t i = 1; i < n; ++i) {
    const __m512d di = _mm512_set1_pd(d[i]), ei = _mm512_set1_pd(e2[i - 1]);
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const __mmask8 tiny = _mm512_cmp_pd_mask(_mm512_abs_pd(q[v]), pivmin_v, _CMP_LT_OQ);
      const __m512d safe = _mm512_mask_blend_pd(tiny, q[v], neg_pivmin);
      q[v] = _mm512_sub_pd(_mm512_sub_pd(di, xs[v]), _mm512_div_pd(ei, safe));
      c[v] = _mm512_mask_add_pd(c[v], _mm512_cmp_pd_mask(q[v], zero, _CMP_LT_OQ), c[v], one);
    }
  }
  double counts[kLanes];
  for (int v = 0; v < 4; ++v) _mm512_storeu_pd(counts + 8 * v, c[v]);
  for (int t = 0; t < count; ++t) below[t] = static_cast<int64_t>(counts[t]);
}
#endif

// The `count` largest eigenvalues of (d, e) into out, descending.
// `relative`: the bracket width (times ‖T‖) at which an eigenvalue counts as
// found.
void largest_by_bisection(const double* d, const double* e, int64_t n, int64_t count, double* out, Isa isa,
                          double relative) {
  thread_local AlignedBuffer scratch;
  double* e2 = reinterpret_cast<double*>(scratch.reserve(static_cast<size_t>(2 * n)));
  double lower = d[0], upper = d[0], norm = 0.0, max_e2 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double left = i > 0 ? std::fabs(e[i - 1]) : 0.0, right = i + 1 < n ? std::fabs(e[i]) : 0.0;
    lower = std::min(lower, d[i] - left - right);
    upper = std::max(upper, d[i] + left + right);
    norm = std::max(norm, std::fabs(d[i]) + left + right);
    if (i + 1 < n) {
      e2[i] = e[i] * e[i];
      max_e2 = std::max(max_e2, e2[i]);
    }
  }
  const double pivmin = DBL_MIN * std::max(1.0, max_e2);
  // Converged when the bracket is within `relative` of the norm (chosen to
  // match the accuracy the reduction to tridiagonal form already has).
  const double tolerance = relative * norm + 2.0 * pivmin;
  lower -= tolerance;
  upper += tolerance;
  for (int64_t first = 0; first < count; first += kLanes) {
    const int batch = static_cast<int>(std::min<int64_t>(kLanes, count - first));
    double lo[kLanes], hi[kLanes], x[kLanes];
    int64_t index[kLanes], below[kLanes];
    for (int t = 0; t < batch; ++t) {
      lo[t] = lower;
      hi[t] = upper;
      index[t] = n - 1 - (first + t);  // descending position → ascending index
    }
    for (int round = 0; round < 200; ++round) {
      bool open = false;
      for (int t = 0; t < batch; ++t) {
        x[t] = 0.5 * (lo[t] + hi[t]);
        open = open || hi[t] - lo[t] > tolerance;
      }
      if (!open) break;
#if QKD_X86
      if (isa == Isa::kAvx512) {
        sturm_counts_avx512(d, e2, n, pivmin, x, batch, below);
      } else
#endif
      {
        sturm_counts_portable(d, e2, n, pivmin, x, batch, below);
      }
      for (int t = 0; t < batch; ++t) {
        if (hi[t] - lo[t] <= tolerance) continue;
        if (below[t] > index[t]) {
          hi[t] = x[t];
        } else {
          lo[t] = x[t];
        }
      }
    }
    for (int t = 0; t < batch; ++t) out[first + t] = 0.5 * (lo[t] + hi[t]);
  }
}

}  // namespace

namespace {

// The eigen-solve on storage of type T (float or double): the reduction in T,
// the tridiagonal matrix and its eigenvalues in double.
template <typename T>
bool eigenvalues_of(const T* a, int64_t n, int64_t count, double* out, Isa isa) {
  if (n <= 0 || count <= 0) return true;
  count = std::min(count, n);
  thread_local AlignedBuffer scratch;  // counted in floats
  constexpr int64_t kFloatsPerT = sizeof(T) / sizeof(float);
  const int64_t reduced = (kFloatsPerT * (n * n + 6 * n) + 1) / 2 * 2;  // d and e start 8-byte aligned
  float* base = scratch.reserve(static_cast<size_t>(reduced + 4 * n));
  if (base == nullptr) return false;
  T* m = reinterpret_cast<T*>(base);
  T* work = m + n * n;  // 6n
  double* d = reinterpret_cast<double*>(base + reduced);
  double* e = d + n;
  for (int64_t i = 0; i < n; ++i) std::copy(a + i * n, a + i * n + i + 1, m + i * n);
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
#if QKD_X86
  if (isa == Isa::kAvx512) {
    tridiagonalize_avx512<T>(m, n, d, e, work, nullptr);
  } else
#endif
  {
    tridiagonalize_baseline<T>(m, n, d, e, work, nullptr);
  }
  e[n - 1] = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(d[i]) || !std::isfinite(e[i])) return false;
  }
  if (count * kBisectionCost <= n) {
    // A double reduction is good to a few ulps of ‖T‖, a float one to about
    // 1e-7·‖T‖: bisecting to 2⁻³² of ‖T‖ then is 400 times finer than that
    // error and takes about 20 halvings fewer.
    largest_by_bisection(d, e, n, count, out, isa, sizeof(T) == sizeof(double) ? 4.0 * DBL_EPSILON : 0x1p-32);
    return true;
  }
  if (!tridiagonal_eigenvalues(d, e, n)) return false;
  std::sort(d, d + n, std::greater<double>());
  std::copy(d, d + count, out);
  return true;
}

// eigenvalues_of with rows of the eigenvectors: the `count` largest
// eigenvalues into values (descending) and, into rows_out (row-major,
// (head + tail) × count), rows [0, head) and [n − tail, n) of the matrix
// whose column t is the unit eigenvector of values[t]. The reflectors of
// the reduction are kept and applied to those rows of the identity, then
// the QL rotations: O(n³) for the reduction and O((head + tail)·n²) for the
// rows, where whole vectors would cost about 3n³ more.
template <typename T>
bool eigen_rows_of(const T* a, int64_t n, int64_t count, int64_t head, int64_t tail, double* values, double* rows_out,
                   Isa isa) {
  if (n <= 0 || count <= 0) return true;
  count = std::min(count, n);
  const int64_t rows = head + tail;
  std::vector<T> m(static_cast<size_t>(n * n)), work(static_cast<size_t>(6 * n));
  std::vector<double> d(static_cast<size_t>(n)), e(static_cast<size_t>(n)), saved(static_cast<size_t>(n), 0.0);
  std::vector<double> z(static_cast<size_t>(std::max<int64_t>(rows, 1) * n), 0.0);
  for (int64_t i = 0; i < n; ++i) std::copy(a + i * n, a + i * n + i + 1, m.data() + i * n);
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
#if QKD_X86
  if (isa == Isa::kAvx512) {
    tridiagonalize_avx512<T>(m.data(), n, d.data(), e.data(), work.data(), saved.data());
  } else
#endif
  {
    tridiagonalize_baseline<T>(m.data(), n, d.data(), e.data(), work.data(), saved.data());
  }
  e[n - 1] = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(d[i]) || !std::isfinite(e[i])) return false;
  }
  // Rows of P = P₀·P₁⋯P_{n−3}: the identity's rows times each reflector in turn. z is stored by columns
  // (column c at z + c·rows), so both this update and the QL rotations run along contiguous memory.
  for (int64_t r = 0; r < rows; ++r) z[(r < head ? r : n - tail + (r - head)) * rows + r] = 1.0;
  std::vector<double> dots(static_cast<size_t>(std::max<int64_t>(rows, 1)));
  for (int64_t j = 0; j + 2 < n; ++j) {
    const double tau = saved[j];
    if (tau == 0.0) continue;
    const T* v = m.data() + j * n + j + 1;
    const int64_t len = n - j - 1;
    double* zc = z.data() + (j + 1) * rows;  // columns j+1.. that the reflector acts on
    std::fill(dots.begin(), dots.end(), 0.0);
    for (int64_t i = 0; i < len; ++i) {
      const double vi = static_cast<double>(v[i]);
      const double* col = zc + i * rows;
      for (int64_t r = 0; r < rows; ++r) dots[r] += col[r] * vi;
    }
    for (int64_t r = 0; r < rows; ++r) dots[r] *= tau;
    for (int64_t i = 0; i < len; ++i) {
      const double vi = static_cast<double>(v[i]);
      double* col = zc + i * rows;
      for (int64_t r = 0; r < rows; ++r) col[r] -= dots[r] * vi;
    }
  }
  if (!tridiagonal_eigenvalues(d.data(), e.data(), n, z.data(), rows)) return false;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&d](int64_t x, int64_t y) { return d[x] > d[y]; });
  for (int64_t t = 0; t < count; ++t) values[t] = d[order[t]];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < count; ++t) rows_out[r * count + t] = z[order[t] * rows + r];
  }
  return true;
}

}  // namespace

bool symmetric_eigenvalues_with(const double* a, int64_t n, int64_t count, double* out, Isa isa) {
  return eigenvalues_of(a, n, count, out, isa);
}

bool symmetric_eigenvalues_f32_with(const float* a, int64_t n, int64_t count, double* out, Isa isa) {
  return eigenvalues_of(a, n, count, out, isa);
}

bool symmetric_eigenvalues(const double* a, int64_t n, int64_t count, double* out) {
  return symmetric_eigenvalues_with(a, n, count, out, active_isa());
}

int64_t symmetric_eigenvalues_batch(const float* a, const int32_t* sizes, const int32_t* counts, const int32_t* heads,
                                    const int32_t* tails, int64_t batch, double* out) {
  struct Job {
    const float* a;
    const int32_t* sizes;
    const int32_t* counts;
    const int32_t* heads;
    const int32_t* tails;
    double* out;
    std::vector<int64_t> input, output;  // where each matrix and its results start
    std::atomic<int64_t> failed{-1};
  } job;
  job.a = a;
  job.sizes = sizes;
  job.counts = counts;
  job.heads = heads;
  job.tails = tails;
  job.out = out;
  job.input.resize(static_cast<size_t>(batch));
  job.output.resize(static_cast<size_t>(batch));
  int64_t at = 0, to = 0;
  for (int64_t i = 0; i < batch; ++i) {
    job.input[i] = at;
    job.output[i] = to;
    at += static_cast<int64_t>(sizes[i]) * sizes[i];
    to += static_cast<int64_t>(counts[i]) * (1 + heads[i] + tails[i]);
  }
  ThreadPool::shared().run(
      batch,
      [](void* context, int64_t i, int) {
        Job& j = *static_cast<Job*>(context);
        double* out = j.out + j.output[i];
        const bool solved =
            j.heads[i] + j.tails[i] > 0
                ? eigen_rows_of<float>(j.a + j.input[i], j.sizes[i], j.counts[i], j.heads[i], j.tails[i], out,
                                       out + j.counts[i], active_isa())
                : symmetric_eigenvalues_f32_with(j.a + j.input[i], j.sizes[i], j.counts[i], out, active_isa());
        if (!solved) {
          int64_t none = -1;
          j.failed.compare_exchange_strong(none, i);
        }
      },
      &job);
  return job.failed.load();
}

namespace {

struct BackgroundBatch {
  std::vector<float> a;
  std::vector<int32_t> sizes, counts, heads, tails;
  std::vector<double> out;
  std::future<int64_t> failed;
};

// The jobs in flight, by handle. Deliberately leaked (a job still running at
// exit must not find its registry destroyed).
std::mutex& registry_mutex() {
  static std::mutex* m = new std::mutex;
  return *m;
}
std::map<int64_t, std::unique_ptr<BackgroundBatch>>& registry() {
  static auto* jobs = new std::map<int64_t, std::unique_ptr<BackgroundBatch>>;
  return *jobs;
}

}  // namespace

int64_t eigen_batch_start(const float* a, const int32_t* sizes, const int32_t* counts, const int32_t* heads,
                          const int32_t* tails, int64_t batch) {
  auto job = std::make_unique<BackgroundBatch>();
  int64_t values = 0, results = 0;
  for (int64_t i = 0; i < batch; ++i) {
    values += static_cast<int64_t>(sizes[i]) * sizes[i];
    results += static_cast<int64_t>(counts[i]) * (1 + heads[i] + tails[i]);
  }
  job->a.assign(a, a + values);
  job->sizes.assign(sizes, sizes + batch);
  job->counts.assign(counts, counts + batch);
  job->heads.assign(heads, heads + batch);
  job->tails.assign(tails, tails + batch);
  job->out.assign(static_cast<size_t>(results), 0.0);
  BackgroundBatch* raw = job.get();
  job->failed = std::async(std::launch::async, [raw, batch] {
    return symmetric_eigenvalues_batch(raw->a.data(), raw->sizes.data(), raw->counts.data(), raw->heads.data(),
                                       raw->tails.data(), batch, raw->out.data());
  });
  std::lock_guard<std::mutex> lock(registry_mutex());
  static int64_t next = 0;
  const int64_t handle = ++next;
  registry()[handle] = std::move(job);
  return handle;
}

int64_t eigen_batch_wait(int64_t handle, double* out, int64_t capacity) {
  std::unique_ptr<BackgroundBatch> job;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(handle);
    if (it == registry().end()) return -2;
    job = std::move(it->second);
    registry().erase(it);
  }
  const int64_t failed = job->failed.get();
  if (static_cast<int64_t>(job->out.size()) > capacity) return -3;
  std::copy(job->out.begin(), job->out.end(), out);
  return failed;
}

}  // namespace qkd
