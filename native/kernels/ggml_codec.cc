// The ggml block formats, one block at a time, then a threaded driver. Each
// block function mirrors its TypeScript twin in src/quant/ (same names in
// camelCase, same order of float operations); comments there explain the
// fitting. The K-quant sub-block fits run several sub-blocks at a time
// (ggml_codec_lanes.h): four lanes on baseline x86-64 (SSE2), eight with AVX2.
//
// No floating-point contraction anywhere in this file: ggml's C rounds each
// product, and the bytes would differ.
#include "no_fp_contract.h"

#include "ggml_codec.h"
#include "half.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu.h"
#include "thread_pool.h"

namespace qkd {
namespace {

constexpr int QK = 32;
constexpr int QK_K = 256;
constexpr float GROUP_MAX_EPS = 1e-15f;

enum : int { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

// --- half precision -------------------------------------------------------

// to_half and half_bits_to_float: half.h (shared with rtn_error.cc).

struct HalfTable {
  float v[65536];
  HalfTable() {
    for (uint32_t b = 0; b < 65536; b++) v[b] = half_bits_to_float(static_cast<uint16_t>(b));
  }
};

inline float from_half(uint16_t h) {
  static const HalfTable table;  // built once, thread-safe (C++11 statics)
  return table.v[h];
}

inline uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
inline void store_half(uint8_t* p, float v) { store_u16(p, to_half(v)); }
inline float load_half(const uint8_t* p) { return from_half(load_u16(p)); }

// ggml's nearest_int: adding 1.5·2²³ in float32 rounds to an integer (half to even).
inline int nearest_int(float x) {
  const float val = x + 12582912.f;
  int32_t i;
  std::memcpy(&i, &val, 4);
  return (i & 0x007fffff) - 0x00400000;
}

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// Truncation toward zero of a float, clamped to [0, top] (NaN → 0): C's (int8_t) cast then MIN/MAX.
inline int trunc_clamped(float t, int top) {
  if (!(t > 0.f)) return 0;
  if (t >= static_cast<float>(top)) return top;
  return static_cast<int>(t);
}

// C's (int8_t)roundf(v) for the |v| ≤ 127.5 a finite block gives; NaN (from a non-finite
// block) → 0 as the TypeScript's setInt8 does, and never an out-of-range conversion.
inline int8_t round_to_int8(float v) {
  if (!(v == v)) return 0;
  const float r = std::roundf(v < -128.f ? -128.f : v > 127.f ? 127.f : v);
  return static_cast<int8_t>(static_cast<int>(r));
}

// The element of largest magnitude (the first on ties).
inline float signed_max(const float* x, int n, float* amax_out) {
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < n; j++) {
    const float a = std::fabs(x[j]);
    if (amax < a) {
      amax = a;
      max = x[j];
    }
  }
  *amax_out = amax;
  return max;
}

// --- legacy 32-element formats ----------------------------------------------

void encode_q8_0(const float* x, uint8_t* o) {
  float amax = 0.f;
  for (int j = 0; j < QK; j++) {
    const float a = std::fabs(x[j]);
    amax = amax > a ? amax : a;  // ggml's MAX
  }
  const float d = amax / 127.f;
  const float id = d != 0.f ? 1.f / d : 0.f;
  store_half(o, d);
  for (int j = 0; j < QK; j++) o[2 + j] = static_cast<uint8_t>(round_to_int8(x[j] * id));
}

void decode_q8_0(const uint8_t* p, float* y) {
  const float d = load_half(p);
  for (int j = 0; j < QK; j++) y[j] = static_cast<float>(static_cast<int8_t>(p[2 + j])) * d;
}

// Low nibbles in 16 bytes; with fifth_bit, bit 4 of element j in bit j of a u32 before them.
void store_codes(uint8_t* at, const uint8_t* codes, bool fifth_bit) {
  uint32_t qh = 0;
  uint8_t* qs = at + (fifth_bit ? 4 : 0);
  for (int j = 0; j < QK / 2; j++) {
    const uint32_t lo = codes[j], hi = codes[j + QK / 2];
    qs[j] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
    if (fifth_bit) qh |= (((lo & 0x10) >> 4) << j) | (((hi & 0x10) >> 4) << (j + QK / 2));
  }
  if (fifth_bit) {
    at[0] = static_cast<uint8_t>(qh);
    at[1] = static_cast<uint8_t>(qh >> 8);
    at[2] = static_cast<uint8_t>(qh >> 16);
    at[3] = static_cast<uint8_t>(qh >> 24);
  }
}

// Q4_0 (bits 4) and Q5_0 (bits 5): d = m/−half, q = min(top, trunc(x/d + half + 0.5)).
void encode_symmetric(const float* x, uint8_t* o, int bits) {
  const int half = 1 << (bits - 1);
  const int top = (1 << bits) - 1;
  const float offset = static_cast<float>(half) + 0.5f;
  float amax;
  const float max = signed_max(x, QK, &amax);
  const float d = max / static_cast<float>(-half);
  const float id = d != 0.f ? 1.f / d : 0.f;
  store_half(o, d);
  uint8_t codes[QK];
  for (int j = 0; j < QK; j++) codes[j] = static_cast<uint8_t>(trunc_clamped(x[j] * id + offset, top));
  store_codes(o + 2, codes, bits == 5);
}

// Q4_1 and Q5_1: d = (max − min)/top, m = min, q = trunc((x − min)/d + 0.5).
void encode_affine(const float* x, uint8_t* o, int bits) {
  const int top = (1 << bits) - 1;
  float min = 3.4028234663852886e38f, max = -min;
  for (int j = 0; j < QK; j++) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / static_cast<float>(top);
  const float id = d != 0.f ? 1.f / d : 0.f;
  store_half(o, d);
  store_half(o + 2, min);
  uint8_t codes[QK];
  // Q4_1 clamps at 15; Q5_1's code never exceeds 31 (its cast keeps the low byte).
  for (int j = 0; j < QK; j++) codes[j] = static_cast<uint8_t>(trunc_clamped((x[j] - min) * id + 0.5f, bits == 4 ? 15 : 255));
  store_codes(o + 4, codes, bits == 5);
}

void decode_nibbles(const uint8_t* p, float* y, bool with_min, bool fifth_bit) {
  const float d = load_half(p);
  const float m = with_min ? load_half(p + 2) : 0.f;
  const uint8_t* qh_at = p + (with_min ? 4 : 2);
  const uint32_t qh = fifth_bit ? (static_cast<uint32_t>(qh_at[0]) | (static_cast<uint32_t>(qh_at[1]) << 8) |
                                   (static_cast<uint32_t>(qh_at[2]) << 16) | (static_cast<uint32_t>(qh_at[3]) << 24))
                                : 0u;
  const uint8_t* qs = qh_at + (fifth_bit ? 4 : 0);
  const int centre = with_min ? 0 : fifth_bit ? 16 : 8;
  for (int j = 0; j < QK / 2; j++) {
    const int lo = static_cast<int>((qs[j] & 0x0fu) | (((qh >> j) << 4) & 0x10u)) - centre;
    const int hi = static_cast<int>((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10u)) - centre;
    if (with_min) {
      y[j] = static_cast<float>(lo) * d + m;
      y[j + QK / 2] = static_cast<float>(hi) * d + m;
    } else {
      y[j] = static_cast<float>(lo) * d;
      y[j + QK / 2] = static_cast<float>(hi) * d;
    }
  }
}

// --- K-quant fitting ----------------------------------------------------------

// Levels round(iscale·x) in [−nmax, nmax−1] with x²-weighted Σ w·x·l and Σ w·l²; writes l + offset to L when given.
// The fit weight of value v at position i: v², times its importance when given.
inline float square_weight(float v, const float* imp, int i) { return imp == nullptr ? v * v : imp[i] * (v * v); }

template <typename T>
void symmetric_fit(const float* x, int n, int nmax, float iscale, T* L, int offset, const float* imp, float* sumlx_out,
                   float* suml2_out) {
  float sumlx = 0.f, suml2 = 0.f;
  for (int i = 0; i < n; i++) {
    const float v = x[i];
    const int l = clampi(nearest_int(iscale * v), -nmax, nmax - 1);
    if (L != nullptr) L[i] = static_cast<T>(l + offset);
    const float w = square_weight(v, imp, i);
    sumlx = sumlx + w * v * static_cast<float>(l);
    suml2 = suml2 + w * static_cast<float>(l) * static_cast<float>(l);
  }
  *sumlx_out = sumlx;
  *suml2_out = suml2;
}

// Q3_K's symmetric fit: a start, then up to 5 passes moving single values. Writes L + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L, const float* imp) {
  float amax;
  const float max = signed_max(x, n, &amax);
  if (amax < GROUP_MAX_EPS) {
    std::memset(L, 0, static_cast<size_t>(n));
    return 0.f;
  }
  float sumlx, suml2;
  symmetric_fit<int8_t>(x, n, nmax, static_cast<float>(-nmax) / max, L, 0, imp, &sumlx, &suml2);
  for (int itry = 0; itry < 5; itry++) {
    int changed = 0;
    for (int i = 0; i < n; i++) {
      const float v = x[i];
      const int li = L[i];
      const float w = square_weight(v, imp, i);
      float slx = sumlx - w * v * static_cast<float>(li);
      if (slx > 0.f) {
        float sl2 = suml2 - w * static_cast<float>(li) * static_cast<float>(li);
        const int nl = clampi(nearest_int(v * sl2 / slx), -nmax, nmax - 1);
        if (nl != li) {
          slx = slx + w * v * static_cast<float>(nl);
          sl2 = sl2 + w * static_cast<float>(nl) * static_cast<float>(nl);
          if (sl2 > 0.f && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; i++) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

// Byte l of each 32-byte run holds 2-bit levels l, l+32, l+64, l+96 of a 128-run.
template <typename T>
void pack_2bit(uint8_t* out, const T* L) {
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; l++) {
      out[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

// --- the sub-block fits, per instruction set ------------------------------------

#define QKD_LANES 4
namespace base {
#include "ggml_codec_lanes.h"
}  // namespace base
#undef QKD_LANES

// GCC only: clang ignores `#pragma GCC target` (it keeps the baseline fits).
#if QKD_X86 && defined(__GNUC__) && !defined(__clang__)
#define QKD_GGML_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2")
#define QKD_LANES 8
namespace avx2 {
#include "ggml_codec_lanes.h"
}  // namespace avx2
#undef QKD_LANES
#pragma GCC pop_options
#endif

// The fits of one instruction set.
// imp: the block's per-element importance, or nullptr.
struct Fits {
  void (*q45_k)(const float* x, const float* imp, bool five, uint8_t* L, float* scales, float* mins);
  void (*q2_k)(const float* x, const float* imp, uint8_t* L, float* scales, float* mins);
  void (*q6_k)(const float* x, const float* imp, uint8_t* L, float* scales);
};

const Fits& fits() {
#if defined(QKD_GGML_AVX2)
  static const Fits avx2_fits{avx2::fit_q45_k, avx2::fit_q2_k, avx2::fit_q6_k};
  if (active_isa() != Isa::kPortable) return avx2_fits;
#endif
  static const Fits base_fits{base::fit_q45_k, base::fit_q2_k, base::fit_q6_k};
  return base_fits;
}

// --- Q2_K: scales[16], qs[64], f16 d, f16 dmin (84 bytes) ---------------------

void encode_q2_k(const Fits& fit, const float* x, const float* imp, uint8_t* o) {
  uint8_t L[QK_K];
  float scales[16], mins[16];
  const float q4scale = 15.f;
  float max_scale = 0.f, max_min = 0.f;
  fit.q2_k(x, imp, L, scales, mins);
  for (int j = 0; j < 16; j++) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0.f) {
    const float iscale = q4scale / max_scale;
    for (int j = 0; j < 16; j++) o[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
    store_half(o + 80, max_scale / q4scale);
  } else {
    store_u16(o + 80, 0);
  }
  if (max_min > 0.f) {
    const float iscale = q4scale / max_min;
    for (int j = 0; j < 16; j++) o[j] = static_cast<uint8_t>(o[j] | (nearest_int(iscale * mins[j]) << 4));
    store_half(o + 82, max_min / q4scale);
  } else {
    store_half(o + 82, 0.f);
  }
  const float d = load_half(o + 80);
  const float dmin = load_half(o + 82);
  for (int j = 0; j < 16; j++) {
    const float dj = d * static_cast<float>(o[j] & 0xf);
    if (dj == 0.f) continue;
    const float dm = dmin * static_cast<float>(o[j] >> 4);
    for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[16 * j + ii] + dm) / dj), 0, 3));
  }
  pack_2bit(o + 16, L);
}

void decode_q2_k(const uint8_t* p, float* y) {
  const float d = load_half(p + 80);
  const float dmin = load_half(p + 82);
  int is = 0;
  for (int n = 0; n < QK_K; n += 128) {
    const uint8_t* q = p + 16 + n / 4;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 32; half += 16) {
        const uint8_t sc = p[is++];
        const float dl = d * static_cast<float>(sc & 0xf);
        const float ml = dmin * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; l++) *y++ = dl * static_cast<float>((q[half + l] >> shift) & 3) - ml;
      }
    }
  }
}

// --- Q3_K: hmask[32], qs[64], scales[12], f16 d (110 bytes) -------------------

inline int q3_scale(const uint8_t* sc, int j) {
  const int low = j < 8 ? (sc[j] & 0xf) : (sc[j - 8] >> 4);
  return (low | (((sc[8 + (j % 4)] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

void encode_q3_k(const float* x, const float* imp, uint8_t* o) {
  int8_t L[QK_K];
  float scales[16];
  uint8_t* sc = o + 96;
  float max_scale = 0.f, amax = 0.f;
  for (int j = 0; j < 16; j++) {
    scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, imp == nullptr ? nullptr : imp + 16 * j);
    const float s = std::fabs(scales[j]);
    if (s > amax) {
      amax = s;
      max_scale = scales[j];
    }
  }
  if (max_scale != 0.f) {
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; j++) {
      int l = clampi(static_cast<int8_t>(nearest_int(iscale * scales[j])), -32, 31) + 32;
      if (j < 8) sc[j] = static_cast<uint8_t>(l & 0xf);
      else sc[j - 8] = static_cast<uint8_t>(sc[j - 8] | ((l & 0xf) << 4));
      l >>= 4;
      sc[8 + (j % 4)] = static_cast<uint8_t>(sc[8 + (j % 4)] | (l << (2 * (j / 4))));
    }
    store_half(o + 108, 1.f / iscale);
  } else {
    store_half(o + 108, 0.f);
  }
  const float d = load_half(o + 108);
  for (int j = 0; j < 16; j++) {
    const float dj = d * static_cast<float>(q3_scale(sc, j));
    if (dj == 0.f) continue;
    for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = static_cast<int8_t>(clampi(nearest_int(x[16 * j + ii] / dj), -4, 3) + 4);
  }
  for (int j = 0; j < QK_K; j++) {
    if (L[j] > 3) {
      o[j % 32] = static_cast<uint8_t>(o[j % 32] | (1 << (j / 32)));
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
  }
  pack_2bit(o + 32, L);
}

void decode_q3_k(const uint8_t* p, float* y) {
  const float d_all = load_half(p + 108);
  int is = 0;
  int m = 1;
  for (int n = 0; n < QK_K; n += 128) {
    const uint8_t* q = p + 32 + n / 4;
    for (int shift = 0; shift < 8; shift += 2) {
      for (int half = 0; half < 32; half += 16) {
        const float dl = d_all * static_cast<float>(q3_scale(p + 96, is++));
        for (int l = 0; l < 16; l++) {
          const int level = ((q[half + l] >> shift) & 3) - ((p[half + l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(level);
        }
      }
      m <<= 1;
    }
  }
}

// --- Q4_K / Q5_K: f16 d, f16 dmin, scales[12], [qh[32]], qs[128] --------------

inline void scale_min(const uint8_t* q, int j, int* s, int* m) {
  if (j < 4) {
    *s = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *s = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void encode_q45_k(const Fits& fit, const float* x, const float* imp, uint8_t* o, bool five) {
  const int nmax = five ? 31 : 15;
  uint8_t L[QK_K], ls[8], lm[8];
  float scales[8], mins[8];
  float max_scale = 0.f, max_min = 0.f;
  fit.q45_k(x, imp, five, L, scales, mins);
  for (int j = 0; j < 8; j++) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0.f ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0.f ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; j++) {
    ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j]) & 0xff));
    lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j]) & 0xff));
  }
  uint8_t* sc = o + 4;
  for (int j = 0; j < 8; j++) {
    if (j < 4) {
      sc[j] = ls[j];
      sc[j + 4] = lm[j];
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      sc[j - 4] = static_cast<uint8_t>(sc[j - 4] | ((ls[j] >> 4) << 6));
      sc[j] = static_cast<uint8_t>(sc[j] | ((lm[j] >> 4) << 6));
    }
  }
  store_half(o, max_scale / 63.f);
  store_half(o + 2, max_min / 63.f);
  const float d = load_half(o);
  const float dmin = load_half(o + 2);
  for (int j = 0; j < 8; j++) {
    int s, m;
    scale_min(sc, j, &s, &m);
    const float dj = d * static_cast<float>(s);
    if (dj == 0.f) continue;
    const float dm = dmin * static_cast<float>(m);
    for (int ii = 0; ii < 32; ii++) L[32 * j + ii] = static_cast<uint8_t>(clampi(nearest_int((x[32 * j + ii] + dm) / dj), 0, nmax));
  }
  uint8_t* qh = o + 16;
  uint8_t* qs = o + 16 + (five ? 32 : 0);
  int m1 = 1, m2 = 2;
  for (int n = 0; n < QK_K; n += 64, m1 <<= 2, m2 <<= 2) {
    for (int j = 0; j < 32; j++) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | m1);
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] = static_cast<uint8_t>(qh[j] | m2);
      }
      qs[n / 2 + j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
  }
}

void decode_q45_k(const uint8_t* p, float* y, bool five) {
  const float d = load_half(p);
  const float dmin = load_half(p + 2);
  const uint8_t* qh = p + 16;
  const uint8_t* qs = p + 16 + (five ? 32 : 0);
  int is = 0, u1 = 1, u2 = 2;
  for (int j = 0; j < QK_K; j += 64, is += 2, u1 <<= 2, u2 <<= 2) {
    int s1, m1, s2, m2;
    scale_min(p + 4, is, &s1, &m1);
    scale_min(p + 4, is + 1, &s2, &m2);
    const float d1 = d * static_cast<float>(s1), mm1 = dmin * static_cast<float>(m1);
    const float d2 = d * static_cast<float>(s2), mm2 = dmin * static_cast<float>(m2);
    const uint8_t* q = qs + j / 2;
    for (int l = 0; l < 32; l++) *y++ = d1 * static_cast<float>((q[l] & 0xf) + (five && (qh[l] & u1) ? 16 : 0)) - mm1;
    for (int l = 0; l < 32; l++) *y++ = d2 * static_cast<float>((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - mm2;
  }
}

// --- Q6_K: ql[128], qh[64], scales[16] (int8), f16 d (210 bytes) ---------------

void encode_q6_k(const Fits& fit, const float* x, const float* imp, uint8_t* o) {
  uint8_t L[QK_K];
  float scales[16];
  float max_scale = 0.f, max_abs_scale = 0.f;
  fit.q6_k(x, imp, L, scales);
  for (int ib = 0; ib < 16; ib++) {
    const float scale = scales[ib];
    if (std::fabs(scale) > max_abs_scale) {
      max_abs_scale = std::fabs(scale);
      max_scale = scale;
    }
  }
  if (max_abs_scale < GROUP_MAX_EPS) return;  // all zero: every byte 0
  const float iscale = -128.f / max_scale;
  store_half(o + 208, 1.f / iscale);
  int8_t* sc = reinterpret_cast<int8_t*>(o + 192);
  for (int ib = 0; ib < 16; ib++) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  const float d = load_half(o + 208);
  for (int j = 0; j < 16; j++) {
    const float dj = d * static_cast<float>(sc[j]);
    if (dj == 0.f) continue;
    for (int ii = 0; ii < 16; ii++) L[16 * j + ii] = static_cast<uint8_t>(clampi(nearest_int(x[16 * j + ii] / dj), -32, 31) + 32);
  }
  for (int j = 0; j < QK_K; j += 128) {
    uint8_t* ql = o + j / 2;
    uint8_t* qh = o + 128 + j / 4;
    for (int l = 0; l < 32; l++) {
      const int a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((a & 0xf) | ((c & 0xf) << 4));
      ql[l + 32] = static_cast<uint8_t>((b & 0xf) | ((e & 0xf) << 4));
      qh[l] = static_cast<uint8_t>((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
    }
  }
}

void decode_q6_k(const uint8_t* p, float* out) {
  const float d = load_half(p + 208);
  for (int n = 0; n < QK_K; n += 128) {
    const uint8_t* ql = p + n / 2;
    const uint8_t* qh = p + 128 + n / 4;
    const int8_t* sc = reinterpret_cast<const int8_t*>(p + 192 + n / 16);
    float* y = out + n;
    for (int l = 0; l < 32; l++) {
      const int is = l >> 4;
      const int h = qh[l];
      const int q1 = ((ql[l] & 0xf) | ((h & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xf) | (((h >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// --- dispatch and threading ---------------------------------------------------

constexpr int kMaxBlockBytes = 210;

// Encodes one block into o (cleared first: the K-quant encoders OR bits in).
// imp: the block's per-element importance (K-quants only), or nullptr.
void encode_block(const Fits& fit, int type, const float* x, const float* imp, uint8_t* o, int64_t bytes) {
  std::memset(o, 0, static_cast<size_t>(bytes));
  switch (type) {
    case Q8_0: encode_q8_0(x, o); break;
    case Q4_0: encode_symmetric(x, o, 4); break;
    case Q5_0: encode_symmetric(x, o, 5); break;
    case Q4_1: encode_affine(x, o, 4); break;
    case Q5_1: encode_affine(x, o, 5); break;
    case Q2_K: encode_q2_k(fit, x, imp, o); break;
    case Q3_K: encode_q3_k(x, imp, o); break;
    case Q4_K: encode_q45_k(fit, x, imp, o, false); break;
    case Q5_K: encode_q45_k(fit, x, imp, o, true); break;
    case Q6_K: encode_q6_k(fit, x, imp, o); break;
    default: break;
  }
}

void decode_block(int type, const uint8_t* p, float* y) {
  switch (type) {
    case Q8_0: decode_q8_0(p, y); break;
    case Q4_0: decode_nibbles(p, y, false, false); break;
    case Q5_0: decode_nibbles(p, y, false, true); break;
    case Q4_1: decode_nibbles(p, y, true, false); break;
    case Q5_1: decode_nibbles(p, y, true, true); break;
    case Q2_K: decode_q2_k(p, y); break;
    case Q3_K: decode_q3_k(p, y); break;
    case Q4_K: decode_q45_k(p, y, false); break;
    case Q5_K: decode_q45_k(p, y, true); break;
    case Q6_K: decode_q6_k(p, y); break;
    default: break;
  }
}

enum class Op { Encode, Decode, RoundTrip };

struct Job {
  const Fits* fit;
  Op op;
  int type;
  int64_t block_size, block_bytes, blocks, per_task;
  const float* x;
  const float* imp;  // one importance per column of a row of `cols` elements, or nullptr
  int64_t cols;
  const uint8_t* in;
  uint8_t* out;
  float* y;
};

void run_task(void* context, int64_t task, int /*worker*/) {
  const Job& job = *static_cast<const Job*>(context);
  const int64_t first = task * job.per_task;
  const int64_t last = std::min(job.blocks, first + job.per_task);
  uint8_t scratch[kMaxBlockBytes];
  for (int64_t b = first; b < last; b++) {
    const int64_t e = b * job.block_size;
    const float* imp = job.imp == nullptr ? nullptr : job.imp + e % job.cols;
    switch (job.op) {
      case Op::Encode: encode_block(*job.fit, job.type, job.x + e, imp, job.out + b * job.block_bytes, job.block_bytes); break;
      case Op::Decode: decode_block(job.type, job.in + b * job.block_bytes, job.y + e); break;
      case Op::RoundTrip:
        encode_block(*job.fit, job.type, job.x + e, imp, scratch, job.block_bytes);
        decode_block(job.type, scratch, job.y + e);
        break;
    }
  }
}

void run(Op op, int type, const float* x, const float* imp, int64_t cols, const uint8_t* in, uint8_t* out, float* y,
         int64_t n) {
  const int64_t bs = ggml_block_size(type);
  if (bs == 0 || n <= 0) return;
  Job job{&fits(), op, type, bs, ggml_block_bytes(type), n / bs, 0, x, imp, cols, in, out, y};
  // About 16K elements per task: enough work to amortise a hand-off, small enough to balance.
  job.per_task = std::max<int64_t>(1, 16384 / bs);
  const int64_t tasks = (job.blocks + job.per_task - 1) / job.per_task;
  if (tasks <= 1) {
    run_task(&job, 0, 0);
    return;
  }
  ThreadPool::shared().run(tasks, run_task, &job);
}

}  // namespace

int64_t ggml_block_size(int type) {
  switch (type) {
    case Q4_0: case Q4_1: case Q5_0: case Q5_1: case Q8_0: return QK;
    case Q2_K: case Q3_K: case Q4_K: case Q5_K: case Q6_K: return QK_K;
    default: return 0;
  }
}

int64_t ggml_block_bytes(int type) {
  switch (type) {
    case Q4_0: return 18;
    case Q4_1: return 20;
    case Q5_0: return 22;
    case Q5_1: return 24;
    case Q8_0: return 34;
    case Q2_K: return 84;
    case Q3_K: return 110;
    case Q4_K: return 144;
    case Q5_K: return 176;
    case Q6_K: return 210;
    default: return 0;
  }
}

void ggml_encode(int type, const float* x, int64_t n, uint8_t* out, const float* importance, int64_t cols) {
  run(Op::Encode, type, x, importance, cols, nullptr, out, nullptr, n);
}
void ggml_decode(int type, const uint8_t* in, int64_t n, float* y) { run(Op::Decode, type, nullptr, nullptr, 0, in, nullptr, y, n); }
void ggml_round_trip(int type, const float* x, int64_t n, float* y) {
  run(Op::RoundTrip, type, x, nullptr, 0, nullptr, nullptr, y, n);
}

}  // namespace qkd
