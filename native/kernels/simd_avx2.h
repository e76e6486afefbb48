// The AVX2 pieces shared by the vectorised kernels: the exp of the softmax
// rows, and `Avx2`, the 8-lane vector type the fused kernels
// (fused_rows.h) are written against.
//
// exp: the same reduction and polynomial as simd_avx512.h; without
// vscalefps, 2^n is applied as two exactly representable powers of two
// 2^(n/2)·2^(n-n/2), so that results in the subnormal range are rounded once,
// like std::exp.
//
// Internal linkage on purpose, as in simd_avx512.h.
#pragma once

#include "cpu.h"

#if QKD_X86
#include <immintrin.h>

#include <cstdint>

namespace qkd {
namespace {

QKD_TARGET_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);  // NaN x passes through (second operand)
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n in [-150, 129]: both halves stay in the normal exponent range.
  const __m256i whole = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(whole, 1);
  const __m256i rest = _mm256_sub_epi32(whole, half);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 scale1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 scale2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, scale1), scale2);
}

// 8 floats; `left` as in Avx512 (lanes at or beyond it are not touched).
struct Avx2 {
  static constexpr int kWidth = 8;
  using F = __m256;
  // The same 8 lanes in double: lanes 0-3 and 4-7.
  struct D {
    __m256d lo, hi;
  };

  // Lanes [0, left) set, as an integer mask for maskload/maskstore.
  QKD_TARGET_AVX2 static __m256i mask(int64_t left) {
    const int count = left >= 8 ? 8 : static_cast<int>(left);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // The same for 4 doubles starting at lane `first` of the 8.
  QKD_TARGET_AVX2 static __m256i mask64(int64_t left, int first) {
    const int64_t count = left - first;
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  QKD_TARGET_AVX2 static F zero() { return _mm256_setzero_ps(); }
  QKD_TARGET_AVX2 static F set1(float v) { return _mm256_set1_ps(v); }
  QKD_TARGET_AVX2 static F loadn(const float* p, int64_t left) {
    return left >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(left));
  }
  QKD_TARGET_AVX2 static F loadn_fill(const float* p, int64_t left, F fill) {
    if (left >= 8) return _mm256_loadu_ps(p);
    const __m256i m = mask(left);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  QKD_TARGET_AVX2 static void storen(float* p, int64_t left, F v) {
    if (left >= 8) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, mask(left), v);
    }
  }

  QKD_TARGET_AVX2 static F add(F a, F b) { return _mm256_add_ps(a, b); }
  QKD_TARGET_AVX2 static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  QKD_TARGET_AVX2 static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  QKD_TARGET_AVX2 static F div(F a, F b) { return _mm256_div_ps(a, b); }
  QKD_TARGET_AVX2 static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  QKD_TARGET_AVX2 static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  QKD_TARGET_AVX2 static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  QKD_TARGET_AVX2 static F max(F a, F b) { return _mm256_max_ps(a, b); }
  QKD_TARGET_AVX2 static float reduce_max(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  // Like minps: the second operand when either is NaN.
  QKD_TARGET_AVX2 static F min(F a, F b) { return _mm256_min_ps(a, b); }
  QKD_TARGET_AVX2 static float reduce_min(F v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  QKD_TARGET_AVX2 static F exp(F x) { return exp8(x); }
  QKD_TARGET_AVX2 static F zero_where_zero(F p, F t) {
    return _mm256_and_ps(_mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_NEQ_UQ), t);
  }

  // See Avx512::sigmoid_parts.
  QKD_TARGET_AVX2 static void sigmoid_parts(F g, F* sig, F* one_minus_sig) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 minus_magnitude = _mm256_or_ps(g, sign);
    const __m256 e = exp8(minus_magnitude);
    const __m256 q = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    const __m256 eq = _mm256_mul_ps(e, q);
    // blendv picks its second operand where the sign bit of g is set.
    *sig = _mm256_blendv_ps(q, eq, g);
    *one_minus_sig = _mm256_blendv_ps(eq, q, g);
  }

  QKD_TARGET_AVX2 static F swap_pairs(F v) { return _mm256_permute_ps(v, 0xB1); }
  // [t0, t0, t1, t1, t2, t2, t3, t3] from `pairs_left` ≥ 1 table entries.
  QKD_TARGET_AVX2 static F load_dup_pairs(const float* table, int64_t pairs_left) {
    __m128 quarter;
    if (pairs_left >= 4) {
      quarter = _mm_loadu_ps(table);
    } else {
      const int count = static_cast<int>(pairs_left);
      quarter = _mm_maskload_ps(table, _mm_cmpgt_epi32(_mm_set1_epi32(count), _mm_setr_epi32(0, 1, 2, 3)));
    }
    const __m256i index = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(quarter), index);
  }
  QKD_TARGET_AVX2 static F pair_signs(float even, float odd) {
    return _mm256_setr_ps(even, odd, even, odd, even, odd, even, odd);
  }

  QKD_TARGET_AVX2 static D dzero() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }
  QKD_TARGET_AVX2 static D dset1(double v) { return {_mm256_set1_pd(v), _mm256_set1_pd(v)}; }
  QKD_TARGET_AVX2 static D to_double(F v) {
    return {_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))};
  }
  QKD_TARGET_AVX2 static F to_float(D v) { return _mm256_set_m128(_mm256_cvtpd_ps(v.hi), _mm256_cvtpd_ps(v.lo)); }
  QKD_TARGET_AVX2 static D dadd(D a, D b) { return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX2 static D dsub(D a, D b) { return {_mm256_sub_pd(a.lo, b.lo), _mm256_sub_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX2 static D dmul(D a, D b) { return {_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX2 static D dfma(D a, D b, D c) {
    return {_mm256_fmadd_pd(a.lo, b.lo, c.lo), _mm256_fmadd_pd(a.hi, b.hi, c.hi)};
  }
  QKD_TARGET_AVX2 static double dsum(D a) {
    const __m256d v = _mm256_add_pd(a.lo, a.hi);
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  QKD_TARGET_AVX2 static D dloadn(const double* p, int64_t left) {
    if (left >= 8) return {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)};
    return {_mm256_maskload_pd(p, mask64(left, 0)), _mm256_maskload_pd(p + 4, mask64(left, 4))};
  }
  QKD_TARGET_AVX2 static void dstoren(double* p, int64_t left, D v) {
    if (left >= 8) {
      _mm256_storeu_pd(p, v.lo);
      _mm256_storeu_pd(p + 4, v.hi);
      return;
    }
    _mm256_maskstore_pd(p, mask64(left, 0), v.lo);
    _mm256_maskstore_pd(p + 4, mask64(left, 4), v.hi);
  }

  // Lane masks: all-ones lanes. FM selects the 8 float lanes, DM the same
  // lanes as doubles (lanes 0-3 in `lo`, 4-7 in `hi`).
  using FM = __m256;
  struct DM {
    __m256d lo, hi;
  };
  QKD_TARGET_AVX2 static D ddiv(D a, D b) { return {_mm256_div_pd(a.lo, b.lo), _mm256_div_pd(a.hi, b.hi)}; }
  // Nearest integer, ties to even (nearbyint in the default rounding mode);
  // keeps the sign of a zero result, NaN stays NaN.
  QKD_TARGET_AVX2 static D dround(D a) {
    return {_mm256_round_pd(a.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
            _mm256_round_pd(a.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  // Like minpd / maxpd: the second operand when either is NaN.
  QKD_TARGET_AVX2 static D dmin(D a, D b) { return {_mm256_min_pd(a.lo, b.lo), _mm256_min_pd(a.hi, b.hi)}; }
  QKD_TARGET_AVX2 static D dmax(D a, D b) { return {_mm256_max_pd(a.lo, b.lo), _mm256_max_pd(a.hi, b.hi)}; }
  // a == b (false where either is NaN).
  QKD_TARGET_AVX2 static DM deq(D a, D b) {
    return {_mm256_cmp_pd(a.lo, b.lo, _CMP_EQ_OQ), _mm256_cmp_pd(a.hi, b.hi, _CMP_EQ_OQ)};
  }
  // m ? b : a, per lane.
  QKD_TARGET_AVX2 static F select(FM m, F a, F b) { return _mm256_blendv_ps(a, b, m); }
  // Bytes p[0, left): 1 where m is set, else 0.
  QKD_TARGET_AVX2 static void store_flags(uint8_t* p, int64_t left, DM m) {
    const uint64_t bits = static_cast<uint64_t>(_mm256_movemask_pd(m.lo) | (_mm256_movemask_pd(m.hi) << 4));
    // Bit k of `bits` to byte k: copy the 8 bits into every byte, keep bit k
    // in byte k, then turn each non-zero byte into 1 (no carries cross bytes).
    const uint64_t spread = (bits * 0x0101010101010101ull) & 0x8040201008040201ull;
    const uint64_t bytes = ((spread + 0x7f7f7f7f7f7f7f7full) >> 7) & 0x0101010101010101ull;
    if (left >= 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_cvtsi64_si128(static_cast<int64_t>(bytes)));
    } else {
      for (int64_t i = 0; i < left; ++i) p[i] = static_cast<uint8_t>(bytes >> (8 * i));
    }
  }
  // Lanes whose byte p[i] (i < left) is not 0.
  QKD_TARGET_AVX2 static FM load_flags(const uint8_t* p, int64_t left) {
    __m128i bytes;
    if (left >= 8) {
      bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    } else {
      uint64_t packed = 0;
      for (int64_t i = 0; i < left; ++i) packed |= static_cast<uint64_t>(p[i]) << (8 * i);
      bytes = _mm_cvtsi64_si128(static_cast<int64_t>(packed));
    }
    const __m256i lanes = _mm256_cvtepu8_epi32(bytes);  // 0..255, so signed > 0 means non-zero
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(lanes, _mm256_setzero_si256()));
  }
};

}  // namespace
}  // namespace qkd

#endif  // QKD_X86
