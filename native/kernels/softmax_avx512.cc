// AVX-512 softmax rows with the vectorised exp of simd_avx512.h.
#include "cpu.h"
#include "simd_avx512.h"
#include "softmax_rows.h"

#if QKD_X86
#include <immintrin.h>

#include <limits>

namespace qkd {
namespace {

QKD_TARGET_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

QKD_TARGET_AVX512 void forward_rows(const float* x, float* y, int64_t rows, int64_t cols) {
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    __m512 maxima = minus_inf;
    for (int64_t c = 0; c < cols; c += 16) {
      maxima = _mm512_max_ps(maxima, _mm512_mask_loadu_ps(minus_inf, tail_mask(cols - c), x + c));
    }
    const float maximum = _mm512_reduce_max_ps(maxima);
    if (maximum == -std::numeric_limits<float>::infinity()) {
      softmax_row_without_maximum(x, y, cols);
      continue;
    }
    // A NaN lost by max() still reaches the sum through exp, so the whole
    // row becomes NaN either way.
    // The sum is kept in double: vocabulary-sized rows add up tens of
    // thousands of terms.
    const __m512 shift = _mm512_set1_ps(maximum);
    __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = tail_mask(cols - c);
      const __m512 e = exp16(_mm512_sub_ps(_mm512_mask_loadu_ps(minus_inf, mask, x + c), shift));
      _mm512_mask_storeu_ps(y + c, mask, e);
      // Masked-off lanes hold exp(-Inf) = 0.
      low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
      high = _mm512_add_pd(high, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(low, high));
    const __m512 scale = _mm512_set1_ps(static_cast<float>(1.0 / sum));
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = tail_mask(cols - c);
      _mm512_mask_storeu_ps(y + c, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, y + c), scale));
    }
  }
}

QKD_TARGET_AVX512 void backward_rows(const float* y, const float* dy, float* dx, int64_t rows,
                                     int64_t cols) {
  for (int64_t r = 0; r < rows; ++r, y += cols, dy += cols, dx += cols) {
    __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = tail_mask(cols - c);
      const __m512 yv = _mm512_maskz_loadu_ps(mask, y + c);
      const __m512 dv = _mm512_maskz_loadu_ps(mask, dy + c);
      low = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(yv)),
                            _mm512_cvtps_pd(_mm512_castps512_ps256(dv)), low);
      high = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(yv, 1)),
                             _mm512_cvtps_pd(_mm512_extractf32x8_ps(dv, 1)), high);
    }
    const __m512 dot = _mm512_set1_ps(static_cast<float>(_mm512_reduce_add_pd(_mm512_add_pd(low, high))));
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = tail_mask(cols - c);
      const __m512 yv = _mm512_maskz_loadu_ps(mask, y + c);
      const __m512 dv = _mm512_maskz_loadu_ps(mask, dy + c);
      const __m512 old = _mm512_maskz_loadu_ps(mask, dx + c);
      _mm512_mask_storeu_ps(dx + c, mask, _mm512_fmadd_ps(yv, _mm512_sub_ps(dv, dot), old));
    }
  }
}

QKD_TARGET_AVX512 void exp_array(const float* x, float* y, int64_t count) {
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 mask = tail_mask(count - i);
    _mm512_mask_storeu_ps(y + i, mask, exp16(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

const SoftmaxRows kAvx512Rows = {forward_rows, backward_rows, exp_array};

}  // namespace

const SoftmaxRows* avx512_softmax_rows() { return &kAvx512Rows; }

}  // namespace qkd

#else

namespace qkd {
const SoftmaxRows* avx512_softmax_rows() { return nullptr; }
}  // namespace qkd

#endif
