// The AVX-512 pieces shared by the vectorised kernels: the exp of the
// softmax rows, and `Avx512`, the 16-lane vector type the fused kernels
// (fused_rows.h) are written against.
//
// exp(x) = 2^n · e^r with n = round(x·log2 e) and r = x - n·ln 2 (two-part
// ln 2, |r| ≤ 0.347); e^r is the degree-7 Taylor polynomial (truncation
// < 6e-9) and vscalefps applies 2^n with correct overflow to +Inf and
// gradual underflow to subnormals and 0. Measured against std::exp in
// double over normal-range results: max relative error < 3e-7 (see
// test/test_softmax.cc). NaN in gives NaN out.
//
// Everything here has internal linkage on purpose: a translation unit built
// for another ISA may define the same names, and the linker must never merge
// an AVX-512 body into code that runs on a CPU without it.
#pragma once

#include "cpu.h"

#if QKD_X86
#include <immintrin.h>

#include <cstdint>

// GCC 12's _mm512_undefined_* (used inside the reduce intrinsics) trips
// -Wuninitialized by design; the value is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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

// 16 floats. Loads and stores take `left`, the elements remaining from the
// pointer: lanes at or beyond it are neither read nor written (masked, so a
// row's last partial vector never touches memory past the row).
struct Avx512 {
  static constexpr int kWidth = 16;
  using F = __m512;
  // The same 16 lanes in double: lanes 0-7 and 8-15.
  struct D {
    __m512d lo, hi;
  };

  QKD_TARGET_AVX512 static __mmask16 mask(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
  }
  QKD_TARGET_AVX512 static F zero() { return _mm512_setzero_ps(); }
  QKD_TARGET_AVX512 static F set1(float v) { return _mm512_set1_ps(v); }
  // Lanes past `left` are 0.
  QKD_TARGET_AVX512 static F loadn(const float* p, int64_t left) {
    return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask(left), p);
  }
  // Lanes past `left` are `fill`.
  QKD_TARGET_AVX512 static F loadn_fill(const float* p, int64_t left, F fill) {
    return left >= 16 ? _mm512_loadu_ps(p) : _mm512_mask_loadu_ps(fill, mask(left), p);
  }
  QKD_TARGET_AVX512 static void storen(float* p, int64_t left, F v) {
    if (left >= 16) {
      _mm512_storeu_ps(p, v);
    } else {
      _mm512_mask_storeu_ps(p, mask(left), v);
    }
  }

  QKD_TARGET_AVX512 static F add(F a, F b) { return _mm512_add_ps(a, b); }
  QKD_TARGET_AVX512 static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  QKD_TARGET_AVX512 static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  QKD_TARGET_AVX512 static F div(F a, F b) { return _mm512_div_ps(a, b); }
  QKD_TARGET_AVX512 static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  // a·b + c and c − a·b, one rounding.
  QKD_TARGET_AVX512 static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  QKD_TARGET_AVX512 static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  QKD_TARGET_AVX512 static F max(F a, F b) { return _mm512_max_ps(a, b); }
  QKD_TARGET_AVX512 static float reduce_max(F a) { return _mm512_reduce_max_ps(a); }
  // Like minps: the second operand when either is NaN.
  QKD_TARGET_AVX512 static F min(F a, F b) { return _mm512_min_ps(a, b); }
  QKD_TARGET_AVX512 static float reduce_min(F a) { return _mm512_reduce_min_ps(a); }
  QKD_TARGET_AVX512 static F exp(F x) { return exp16(x); }
  // t where p ≠ 0, else 0 (also where t is NaN or ±Inf).
  QKD_TARGET_AVX512 static F zero_where_zero(F p, F t) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, _mm512_setzero_ps(), _CMP_NEQ_UQ), t);
  }

  // sigmoid(g) and 1 − sigmoid(g) = sigmoid(−g), both to full relative
  // accuracy for any g: with e = exp(−|g|) ∈ (0, 1] and q = 1/(1 + e), one of
  // them is q and the other e·q. Nothing overflows; −0 takes the g ≥ 0 side,
  // where both give 0.5.
  QKD_TARGET_AVX512 static void sigmoid_parts(F g, F* sig, F* one_minus_sig) {
    const __m512 magnitude = _mm512_abs_ps(g);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), magnitude));
    const __m512 q = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    const __m512 eq = _mm512_mul_ps(e, q);
    const __mmask16 negative = _mm512_movepi32_mask(_mm512_castps_si512(g));
    *sig = _mm512_mask_blend_ps(negative, q, eq);
    *one_minus_sig = _mm512_mask_blend_ps(negative, eq, q);
  }

  // Rotary pairs (2i, 2i+1): [v1, v0, v3, v2, ...].
  QKD_TARGET_AVX512 static F swap_pairs(F v) { return _mm512_permute_ps(v, 0xB1); }
  // [t0, t0, t1, t1, ..., t7, t7] from `pairs_left` ≥ 1 table entries.
  QKD_TARGET_AVX512 static F load_dup_pairs(const float* table, int64_t pairs_left) {
    const __m256 half = pairs_left >= 8 ? _mm256_loadu_ps(table)
                                        : _mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << pairs_left) - 1u), table);
    const __m512i index = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm512_permutexvar_ps(index, _mm512_castps256_ps512(half));
  }
  // [even, odd, even, odd, ...].
  QKD_TARGET_AVX512 static F pair_signs(float even, float odd) {
    return _mm512_setr_ps(even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd, even, odd);
  }

  QKD_TARGET_AVX512 static D dzero() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
  QKD_TARGET_AVX512 static D dset1(double v) { return {_mm512_set1_pd(v), _mm512_set1_pd(v)}; }
  QKD_TARGET_AVX512 static D to_double(F v) {
    return {_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))};
  }
  QKD_TARGET_AVX512 static F to_float(D v) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(v.lo)), _mm512_cvtpd_ps(v.hi), 1);
  }
  QKD_TARGET_AVX512 static D dadd(D a, D b) { return {_mm512_add_pd(a.lo, b.lo), _mm512_add_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX512 static D dsub(D a, D b) { return {_mm512_sub_pd(a.lo, b.lo), _mm512_sub_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX512 static D dmul(D a, D b) { return {_mm512_mul_pd(a.lo, b.lo), _mm512_mul_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX512 static D dfma(D a, D b, D c) {
    return {_mm512_fmadd_pd(a.lo, b.lo, c.lo), _mm512_fmadd_pd(a.hi, b.hi, c.hi)};
  }
  QKD_TARGET_AVX512 static double dsum(D a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }
  // 16 doubles from p (lanes past `left` are 0 and not read).
  QKD_TARGET_AVX512 static D dloadn(const double* p, int64_t left) {
    if (left >= 16) return {_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)};
    const __mmask16 m = mask(left);
    return {_mm512_maskz_loadu_pd(static_cast<__mmask8>(m), p),
            _mm512_maskz_loadu_pd(static_cast<__mmask8>(m >> 8), p + 8)};
  }
  QKD_TARGET_AVX512 static void dstoren(double* p, int64_t left, D v) {
    if (left >= 16) {
      _mm512_storeu_pd(p, v.lo);
      _mm512_storeu_pd(p + 8, v.hi);
      return;
    }
    const __mmask16 m = mask(left);
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>(m), v.lo);
    _mm512_mask_storeu_pd(p + 8, static_cast<__mmask8>(m >> 8), v.hi);
  }

  // Lane masks, one bit per lane (D: bits 0-7 are `lo`, 8-15 `hi`). FM
  // selects float lanes, DM double lanes; here they are the same type.
  using FM = __mmask16;
  using DM = __mmask16;
  QKD_TARGET_AVX512 static D ddiv(D a, D b) { return {_mm512_div_pd(a.lo, b.lo), _mm512_div_pd(a.hi, b.hi)}; }
  // Nearest integer, ties to even (nearbyint in the default rounding mode);
  // keeps the sign of a zero result, NaN stays NaN.
  QKD_TARGET_AVX512 static D dround(D a) {
    return {_mm512_roundscale_pd(a.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
            _mm512_roundscale_pd(a.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  // Like minpd / maxpd: the second operand when either is NaN.
  QKD_TARGET_AVX512 static D dmin(D a, D b) { return {_mm512_min_pd(a.lo, b.lo), _mm512_min_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX512 static D dmax(D a, D b) { return {_mm512_max_pd(a.lo, b.lo), _mm512_max_pd(a.hi, b.hi)}; }
  // a == b (false where either is NaN).
  QKD_TARGET_AVX512 static DM deq(D a, D b) {
    return static_cast<DM>(_mm512_cmp_pd_mask(a.lo, b.lo, _CMP_EQ_OQ) |
                           (static_cast<unsigned>(_mm512_cmp_pd_mask(a.hi, b.hi, _CMP_EQ_OQ)) << 8));
  }
  // m ? b : a, per lane.
  QKD_TARGET_AVX512 static F select(FM m, F a, F b) { return _mm512_mask_blend_ps(m, a, b); }
  // Bytes p[0, left): 1 where m is set, else 0.
  QKD_TARGET_AVX512 static void store_flags(uint8_t* p, int64_t left, DM m) {
    const __m128i bytes = _mm_maskz_mov_epi8(m, _mm_set1_epi8(1));
    if (left >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bytes);
    } else {
      _mm_mask_storeu_epi8(p, mask(left), bytes);
    }
  }
  // Lanes whose byte p[i] (i < left) is not 0.
  QKD_TARGET_AVX512 static FM load_flags(const uint8_t* p, int64_t left) {
    const __m128i bytes = left >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                     : _mm_maskz_loadu_epi8(mask(left), p);
    return _mm_test_epi8_mask(bytes, bytes);
  }
};

}  // namespace
}  // namespace qkd

#endif  // QKD_X86
