// AVX-512 softmax rows with a vectorised exp.
//
// exp(x) = 2^n · e^r with n = round(x·log2 e) and r = x - n·ln 2 (two-part
// ln 2, |r| ≤ 0.347); e^r is the degree-7 Taylor polynomial (truncation
// < 6e-9) and vscalefps applies 2^n with correct overflow to +Inf and
// gradual underflow to subnormals and 0. Measured against std::exp in
// double over normal-range results: max relative error < 3e-7 (see
// test/test_softmax.cc). NaN in gives NaN out.
#include "cpu.h"
#include "softmax_rows.h"

#if QKD_X86
#include <immintrin.h>

// GCC 12's _mm512_undefined_* (used inside the reduce intrinsics) trips
// -Wuninitialized by design; the value is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <limits>

namespace qkd {
namespace {

QKD_TARGET_AVX512 inline __m512 exp16(__m512 x) {
  // Clamp to where the result stops changing (0 below, +Inf above). The
  // clamped value is the second operand so that a NaN x passes through.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

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
