// A 16×16 register transpose of 32-bit lanes for the AVX-512 packers (the
// float32 SGEMM's A and B panels, the bf16 GEMM's A pairs). Internal
// linkage: each including file gets its own copy under its own target.
#pragma once

#include "cpu.h"

#if QKD_X86
#include <immintrin.h>

// GCC 12's _mm512_undefined_ps (used inside the unpacks) trips
// -Wuninitialized by design; the value is never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qkd {
namespace {

// 16×16 transpose in registers: on return r[j] holds column j of the input
// rows (r[j][i] = old r[i][j]). Three rounds of in-lane unpacks and
// lane shuffles, 64 shuffles for 256 floats.
QKD_TARGET_AVX512 inline void transpose16x16(__m512 r[16]) {
  __m512 a[16], b[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // b[4q+j], 128-bit lane l: column 4l+j of rows 4q..4q+3.
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512d lo0 = _mm512_castps_pd(a[4 * q]), hi0 = _mm512_castps_pd(a[4 * q + 1]);
    const __m512d lo1 = _mm512_castps_pd(a[4 * q + 2]), hi1 = _mm512_castps_pd(a[4 * q + 3]);
    b[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
    b[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
    b[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
    b[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
  }
  // Gather lane l of b[j], b[4+j], b[8+j], b[12+j] into column 4l+j.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 c0 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0x88);
    const __m512 c1 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0xdd);
    const __m512 c2 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0x88);
    const __m512 c3 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0xdd);
    r[0 + j] = _mm512_shuffle_f32x4(c0, c2, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(c1, c3, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(c0, c2, 0xdd);
    r[12 + j] = _mm512_shuffle_f32x4(c1, c3, 0xdd);
  }
}

}  // namespace
}  // namespace qkd

#pragma GCC diagnostic pop

#endif
