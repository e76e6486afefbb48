// AVX2 softmax rows with the vectorised exp of simd_avx2.h.
#include "cpu.h"
#include "simd_avx2.h"
#include "softmax_rows.h"

#if QKD_X86
#include <immintrin.h>

#include <limits>

namespace qkd {
namespace {

// Lanes [0, left) set, as an integer mask for maskload/maskstore.
QKD_TARGET_AVX2 inline __m256i tail_mask(int64_t left) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int count = left >= 8 ? 8 : static_cast<int>(left);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

QKD_TARGET_AVX2 inline float horizontal_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

QKD_TARGET_AVX2 inline double horizontal_sum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// Loads [0, left) lanes, the others set to `fill`.
QKD_TARGET_AVX2 inline __m256 load_tail(const float* p, int64_t left, __m256 fill) {
  if (left >= 8) return _mm256_loadu_ps(p);
  const __m256i mask = tail_mask(left);
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}

QKD_TARGET_AVX2 inline void store_tail(float* p, int64_t left, __m256 v) {
  if (left >= 8) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, tail_mask(left), v);
  }
}

QKD_TARGET_AVX2 void forward_rows(const float* x, float* y, int64_t rows, int64_t cols) {
  const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    __m256 maxima = minus_inf;
    for (int64_t c = 0; c < cols; c += 8) maxima = _mm256_max_ps(maxima, load_tail(x + c, cols - c, minus_inf));
    const float maximum = horizontal_max(maxima);
    if (maximum == -std::numeric_limits<float>::infinity()) {
      softmax_row_without_maximum(x, y, cols);
      continue;
    }
    // The sum is kept in double: vocabulary-sized rows add up tens of
    // thousands of terms.
    const __m256 shift = _mm256_set1_ps(maximum);
    __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 e = exp8(_mm256_sub_ps(load_tail(x + c, cols - c, minus_inf), shift));
      store_tail(y + c, cols - c, e);
      // Padding lanes hold exp(-Inf) = 0.
      low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
      high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const double sum = horizontal_sum(_mm256_add_pd(low, high));
    const __m256 scale = _mm256_set1_ps(static_cast<float>(1.0 / sum));
    for (int64_t c = 0; c < cols; c += 8) {
      store_tail(y + c, cols - c, _mm256_mul_ps(load_tail(y + c, cols - c, zero), scale));
    }
  }
}

QKD_TARGET_AVX2 void backward_rows(const float* y, const float* dy, float* dx, int64_t rows,
                                   int64_t cols) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t r = 0; r < rows; ++r, y += cols, dy += cols, dx += cols) {
    __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 yv = load_tail(y + c, cols - c, zero);
      const __m256 dv = load_tail(dy + c, cols - c, zero);
      low = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(yv)),
                            _mm256_cvtps_pd(_mm256_castps256_ps128(dv)), low);
      high = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(yv, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(dv, 1)), high);
    }
    const __m256 dot = _mm256_set1_ps(static_cast<float>(horizontal_sum(_mm256_add_pd(low, high))));
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 yv = load_tail(y + c, cols - c, zero);
      const __m256 dv = load_tail(dy + c, cols - c, zero);
      const __m256 old = load_tail(dx + c, cols - c, zero);
      store_tail(dx + c, cols - c, _mm256_fmadd_ps(yv, _mm256_sub_ps(dv, dot), old));
    }
  }
}

QKD_TARGET_AVX2 void exp_array(const float* x, float* y, int64_t count) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; i += 8) store_tail(y + i, count - i, exp8(load_tail(x + i, count - i, zero)));
}

const SoftmaxRows kAvx2Rows = {forward_rows, backward_rows, exp_array};

}  // namespace

const SoftmaxRows* avx2_softmax_rows() { return &kAvx2Rows; }

}  // namespace qkd

#else

namespace qkd {
const SoftmaxRows* avx2_softmax_rows() { return nullptr; }
}  // namespace qkd

#endif
