// See rtn_error.h. The per-element arithmetic is float64 like the
// reference's (a division, the round-to-even trick, a float32 rounding), and
// the sums follow the reference's lane order (8 lanes, a fixed tree), so the
// AVX-512 path (8 doubles per vector) and the portable one give the
// reference's values bit for bit. No fused multiply-adds: the AVX-512
// function turns contraction off, and the portable code is built for
// baseline x86-64. Rows are split across the thread pool; each row's sums
// land in their own slot and are added in row order at the end.
#include "rtn_error.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "cpu.h"
#include "half.h"
#include "background.h"
#include "thread_pool.h"

namespace qkd {
namespace {

constexpr double kRoundMagic = 6755399441055744.0;  // 1.5·2^52
constexpr double kF16MinSubnormal = 5.9604644775390625e-8;  // 2^-24
constexpr int kMaxWidths = 16;

double round_half_even(double x) { return std::fabs(x) < 2251799813685248.0 ? (x + kRoundMagic) - kRoundMagic : x; }

// rtnGroupParams of the reference; false when the scale exceeds f16.
bool group_params(double lo, double hi, int bits, bool symmetric, double* scale, double* zero) {
  const double qmax = static_cast<double>((1 << bits) - 1);
  double raw;
  if (symmetric) {
    raw = std::max(-lo, hi) / static_cast<double>((1 << (bits - 1)) - 1);
  } else {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    raw = (hi - lo) / qmax;
  }
  if (!(raw > 0)) {
    *scale = 1.0;
    *zero = symmetric ? static_cast<double>(1 << (bits - 1)) : 0.0;
    return true;
  }
  double s = half_bits_to_float(to_half(static_cast<float>(raw)));
  if (!std::isfinite(s)) return false;
  if (s == 0) s = kF16MinSubnormal;
  *scale = s;
  *zero = symmetric ? static_cast<double>(1 << (bits - 1)) : std::min(std::max(round_half_even(-lo / s), 0.0), qmax);
  return true;
}

struct Params {
  double scale[kMaxWidths];
  double zero[kMaxWidths];
};

float value(const float* w, int64_t i) { return w[i]; }
float value(const uint16_t* w, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(w[i]) << 16;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// Range of w[start, start + len); the index of a NaN, or −1.
template <typename T>
int64_t range_of(const T* w, int64_t start, int64_t len, double* lo, double* hi) {
  float mn = std::numeric_limits<float>::infinity();
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = start; i < start + len; ++i) {
    const float v = value(w, i);
    if (v != v) return i;
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  *lo = mn;
  *hi = mx;
  return -1;
}

bool params_for(const RtnErrorArgs& a, double lo, double hi, Params* p) {
  for (int j = 0; j < a.count; ++j) {
    if (!group_params(lo, hi, a.bits[j], a.symmetric, &p->scale[j], &p->zero[j])) return false;
  }
  return true;
}

double lane_sum(const double* l) { return l[0] + l[1] + (l[2] + l[3]) + (l[4] + l[5] + (l[6] + l[7])); }

// One group's Σ (ŵ − w)² (and, when norm != nullptr, Σ w²), lane-ordered.
template <typename T>
double group_error_portable(const T* w, int64_t n, double scale, double zero, double qmax, double* norm) {
  double lanes[8] = {0};
  if (norm != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const double v = value(w, i);
      lanes[i & 7] += v * v;
    }
    *norm = lane_sum(lanes);
    for (double& l : lanes) l = 0.0;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double v = value(w, i);
    double q = v / scale + kRoundMagic - kRoundMagic + zero;
    q = q < 0.0 ? 0.0 : (q > qmax ? qmax : q);
    const double d = static_cast<double>(static_cast<float>((q - zero) * scale)) - v;
    lanes[i & 7] += d * d;
  }
  return lane_sum(lanes);
}

// GCC 12 reports its own intrinsics' deliberately undefined pass-through
// operands as maybe-uninitialized under the optimize attribute: a false alarm.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Eight values as float32 (bf16 widened by a shift).
__attribute__((target("avx512f"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx512f"))) inline __m256 load8(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

// Every width's error of one group in a single pass: each value is loaded
// and widened once; width j's 8 lanes take the values in the order
// group_error_portable's lanes do (lane i & 7), so the sums are the same bits.
// The last partial vector is padded with zeros, which add exactly 0 to both
// sums (0 quantizes to 0).
template <int kCount, typename T>
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void group_errors_fixed(const T* w, int64_t n, const Params& p, const double* qmax, double* sums, double* norm) {
  constexpr int count = kCount;
  const __m512d magic = _mm512_set1_pd(kRoundMagic), vzero = _mm512_setzero_pd();
  __m512d acc[kMaxWidths], vs[kMaxWidths], vz[kMaxWidths], vq[kMaxWidths];
  for (int j = 0; j < count; ++j) {
    acc[j] = vzero;
    vs[j] = _mm512_set1_pd(p.scale[j]);
    vz[j] = _mm512_set1_pd(p.zero[j]);
    vq[j] = _mm512_set1_pd(qmax[j]);
  }
  __m512d sq = vzero;
  alignas(32) T tail[8] = {};
  for (int64_t i = 0; i < n; i += 8) {
    const T* src = w + i;
    if (n - i < 8) {
      std::memcpy(tail, src, static_cast<size_t>(n - i) * sizeof(T));
      src = tail;
    }
    const __m512d v = _mm512_cvtps_pd(load8(src));
    sq = _mm512_add_pd(sq, _mm512_mul_pd(v, v));
#pragma GCC unroll 16
    for (int j = 0; j < count; ++j) {
      __m512d q = _mm512_add_pd(_mm512_sub_pd(_mm512_add_pd(_mm512_div_pd(v, vs[j]), magic), magic), vz[j]);
      q = _mm512_min_pd(_mm512_max_pd(q, vzero), vq[j]);
      const __m512d what = _mm512_cvtps_pd(_mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(q, vz[j]), vs[j])));
      const __m512d d = _mm512_sub_pd(what, v);
      acc[j] = _mm512_add_pd(acc[j], _mm512_mul_pd(d, d));
    }
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, sq);
  *norm = lane_sum(lanes);
  for (int j = 0; j < count; ++j) {
    _mm512_store_pd(lanes, acc[j]);
    sums[j] += lane_sum(lanes);
  }
}

// bfloat16 weights: the same sums with the quantizer in float32, 16 values
// per vector, bit-identical to the float64 arithmetic (docs/algorithms.md,
// "The bit plan's errors"):
// - ŵ = (q − zero)·s is exact in float32: |q − zero| ≤ 255 (8 bits) times
//   an f16 scale (11 bits, at least 2⁻²⁴);
// - d = ŵ − v is exact in float32: ŵ = 0 gives −v, else |v − ŵ| ≤ |ŵ|
//   (Sterbenz), or a clamped edge value a multiple of ŵ's ulp within 2·|ŵ|;
// - round(v·RN(1/s)) in float32 equals round(v/s) unless v/s is exactly a
//   half-integer h: v has 8 significant bits and s 11, so a v/s that is not
//   h lies at least min(|v/s|·2⁻⁸, 2⁻¹²) from it, while the float32 product
//   is within 2⁻²³·|v/s| ≤ 2⁻¹⁴ of v/s (|v/s| ≤ 2⁹ for every value the
//   group's own range quantizes). At a tie the two may round to different
//   neighbours, h − ½ or h + ½, but both are s/2 from v, and at the grid's
//   ends both clamp to the same end point: d² is the same bits either way.
// Only d² and the sums are float64: lane j takes the values at j and j + 8
// of each 16, in order, as the 8-lane sums do.
// Three rewrites that change no bit of the result:
// - round(t) + zero clamped to [0, qmax], minus zero, is round(t) clamped
//   to [−zero, qmax − zero] (integers, exact in float32);
// - round(t) by vrndscaleps (nearest even) instead of the 1.5·2^23 trick:
//   they agree for |t| < 2^22, and beyond it both are far outside the clamp
//   range (|q − zero| ≤ 255), on the same side;
// - d² is exact in float64 (d has at most 24 significant bits), so
//   acc + d·d rounded once (a fused multiply-add) is acc + d² rounded, the
//   reference's sum; likewise for v² in the norm.
template <int kCount>
__attribute__((target("avx512f"), optimize("fp-contract=off"))) void group_errors_bf16(const uint16_t* w, int64_t n, const Params& p, const double* qmax, double* sums, double* norm) {
  __m512d acc[kCount];
  __m512 vs[kCount], vinv[kCount], vlo[kCount], vhi[kCount];
  for (int j = 0; j < kCount; ++j) {
    acc[j] = _mm512_setzero_pd();
    const float scale = static_cast<float>(p.scale[j]);
    vs[j] = _mm512_set1_ps(scale);
    vinv[j] = _mm512_set1_ps(1.0f / scale);
    vlo[j] = _mm512_set1_ps(static_cast<float>(-p.zero[j]));
    vhi[j] = _mm512_set1_ps(static_cast<float>(qmax[j] - p.zero[j]));
  }
  __m512d sq = _mm512_setzero_pd();
  alignas(64) uint16_t tail[16] = {};
  for (int64_t i = 0; i < n; i += 16) {
    const uint16_t* src = w + i;
    if (n - i < 16) {
      std::memset(tail, 0, sizeof tail);
      std::memcpy(tail, src, static_cast<size_t>(n - i) * sizeof(uint16_t));
      src = tail;
    }
    const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))), 16));
    const __m512d v_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d v_hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    sq = _mm512_fmadd_pd(v_lo, v_lo, sq);
    sq = _mm512_fmadd_pd(v_hi, v_hi, sq);
#pragma GCC unroll 4
    for (int j = 0; j < kCount; ++j) {
      const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv[j]), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512 code = _mm512_min_ps(_mm512_max_ps(r, vlo[j]), vhi[j]);  // q − zero
      const __m512 d = _mm512_sub_ps(_mm512_mul_ps(code, vs[j]), v);
      const __m512d d_lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
      const __m512d d_hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(d), 1)));
      acc[j] = _mm512_fmadd_pd(d_lo, d_lo, acc[j]);
      acc[j] = _mm512_fmadd_pd(d_hi, d_hi, acc[j]);
    }
  }
  alignas(64) double lanes[8];
  _mm512_store_pd(lanes, sq);
  *norm = lane_sum(lanes);
  for (int j = 0; j < kCount; ++j) {
    _mm512_store_pd(lanes, acc[j]);
    sums[j] += lane_sum(lanes);
  }
}

template <typename T>
void group_errors_avx512(const T* w, int64_t n, const Params& p, const double* qmax, int count, double* sums, double* norm);

// More widths than one fused pass holds: `chunk` at a time (the first call
// also gives the norm).
template <typename T>
void group_errors_chunked(const T* w, int64_t n, const Params& p, const double* qmax, int count, int chunk, double* sums, double* norm) {
  double ignored = 0.0;
  for (int first = 0; first < count; first += chunk) {
    Params part;
    const int take = std::min(chunk, count - first);
    for (int j = 0; j < take; ++j) {
      part.scale[j] = p.scale[first + j];
      part.zero[j] = p.zero[first + j];
    }
    group_errors_avx512(w, n, part, qmax + first, take, sums + first, first == 0 ? norm : &ignored);
  }
}

// The fused passes for a width count known at compile time (so the
// accumulators stay in registers): up to 4 for bf16 weights (float32
// quantizer), up to 6 for float32 ones.
template <typename T>
void group_errors_avx512(const T* w, int64_t n, const Params& p, const double* qmax, int count, double* sums, double* norm) {
  if constexpr (sizeof(T) == 2) {
    switch (count) {
      case 1: return group_errors_bf16<1>(w, n, p, qmax, sums, norm);
      case 2: return group_errors_bf16<2>(w, n, p, qmax, sums, norm);
      case 3: return group_errors_bf16<3>(w, n, p, qmax, sums, norm);
      case 4: return group_errors_bf16<4>(w, n, p, qmax, sums, norm);
      default: return group_errors_chunked(w, n, p, qmax, count, 4, sums, norm);
    }
  } else {
    switch (count) {
      case 1: return group_errors_fixed<1>(w, n, p, qmax, sums, norm);
      case 2: return group_errors_fixed<2>(w, n, p, qmax, sums, norm);
      case 3: return group_errors_fixed<3>(w, n, p, qmax, sums, norm);
      case 4: return group_errors_fixed<4>(w, n, p, qmax, sums, norm);
      case 5: return group_errors_fixed<5>(w, n, p, qmax, sums, norm);
      case 6: return group_errors_fixed<6>(w, n, p, qmax, sums, norm);
      default: return group_errors_chunked(w, n, p, qmax, count, 6, sums, norm);
    }
  }
}

// group_params for the groups of one row, 8 at a time as the lanes of a
// vector, one width after another: the same float64 divisions, float32
// rounding and f16 rounding (vcvtps2ph, nearest even, as to_half) per group
// and width, so the same scales and zero points, while 8 groups share each
// instruction instead of every group waiting on its own chain of divisions.
// Returns the first group whose scale exceeds f16, or −1.
__attribute__((target("avx512f"))) int64_t params_groups_avx512(const RtnErrorArgs& a, const double* qmax_all, const double* half_all, const double* lo, const double* hi, int64_t groups, Params* p) {
  const __m512d one = _mm512_set1_pd(1.0), vzero = _mm512_setzero_pd();
  const __m512d inf = _mm512_set1_pd(std::numeric_limits<double>::infinity());
  for (int64_t g0 = 0; g0 < groups; g0 += 8) {
    const int take = static_cast<int>(std::min<int64_t>(8, groups - g0));
    const __mmask8 lanes = static_cast<__mmask8>((1u << take) - 1u);
    const __m512d vlo = _mm512_mask_loadu_pd(vzero, lanes, lo + g0), vhi = _mm512_mask_loadu_pd(vzero, lanes, hi + g0);
    const __m512d lo_used = a.symmetric ? vlo : _mm512_min_pd(vlo, vzero);
    const __m512d hi_used = a.symmetric ? vhi : _mm512_max_pd(vhi, vzero);
    int64_t failed = -1;
    for (int j = 0; j < a.count; ++j) {
      const __m512d qmax = _mm512_set1_pd(qmax_all[j]), half_range = _mm512_set1_pd(half_all[j]);
      // group_params' operands: max(−lo, hi) or hi − lo (with lo ≤ 0 ≤ hi), then the division.
      const __m512d raw = a.symmetric ? _mm512_div_pd(_mm512_max_pd(_mm512_sub_pd(vzero, vlo), vhi), _mm512_sub_pd(half_range, one))
                                      : _mm512_div_pd(_mm512_sub_pd(hi_used, lo_used), qmax);
      const __m256 raw32 = _mm512_cvtpd_ps(raw);
      const __m256i halves = _mm512_cvtps_ph(_mm512_castps256_ps512(raw32), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m512d scale = _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_cvtph_ps(halves)));
      const __mmask8 positive = _mm512_cmp_pd_mask(raw, vzero, _CMP_GT_OQ) & lanes;
      const __mmask8 beyond = _mm512_mask_cmp_pd_mask(positive, _mm512_abs_pd(scale), inf, _CMP_EQ_OQ);
      if (beyond != 0) {
        const int64_t g = g0 + __builtin_ctz(beyond);
        if (failed < 0 || g < failed) failed = g;
      }
      scale = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(scale, vzero, _CMP_EQ_OQ), scale, _mm512_set1_pd(kF16MinSubnormal));
      scale = _mm512_mask_blend_pd(positive, one, scale);
      __m512d zero;
      if (a.symmetric) {
        zero = half_range;
      } else {
        const __m512d magic = _mm512_set1_pd(kRoundMagic);
        const __m512d q = _mm512_div_pd(_mm512_sub_pd(vzero, lo_used), scale);
        const __mmask8 small = _mm512_cmp_pd_mask(_mm512_abs_pd(q), _mm512_set1_pd(2251799813685248.0), _CMP_LT_OQ);
        const __m512d rounded = _mm512_mask_blend_pd(small, q, _mm512_sub_pd(_mm512_add_pd(q, magic), magic));
        zero = _mm512_mask_blend_pd(positive, vzero, _mm512_min_pd(_mm512_max_pd(rounded, vzero), qmax));
      }
      alignas(64) double s_out[8], z_out[8];
      _mm512_store_pd(s_out, scale);
      _mm512_store_pd(z_out, zero);
      for (int t = 0; t < take; ++t) {
        p[g0 + t].scale[j] = s_out[t];
        p[g0 + t].zero[j] = z_out[t];
      }
    }
    if (failed >= 0) return failed;
  }
  return -1;
}

// range_of with 16 values per step; a NaN sends it to range_of for the index.
template <typename T>
__attribute__((target("avx512f"))) int64_t range_avx512(const T* w, int64_t start, int64_t len, double* lo, double* hi) {
  __m512 mn = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    __m512 v;
    if constexpr (sizeof(T) == 4) {
      v = _mm512_loadu_ps(reinterpret_cast<const float*>(w) + start + i);
    } else {
      const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + start + i)));
      v = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
    }
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
  }
  if (nan != 0) return range_of(w, start, len, lo, hi);
  float a = _mm512_reduce_min_ps(mn), b = _mm512_reduce_max_ps(mx);
  for (; i < len; ++i) {
    const float v = value(w, start + i);
    if (v != v) return range_of(w, start, len, lo, hi);
    a = v < a ? v : a;
    b = v > b ? v : b;
  }
  *lo = a;
  *hi = b;
  return -1;
}
#pragma GCC diagnostic pop

struct Job {
  const RtnErrorArgs* a;
  const Params* tensor_params;  // per_tensor only
  int64_t rows_per_task;
  double* row_sums;     // rows × (count + 1): the errors, then ‖row‖²
  int64_t* status;      // per task: −1, a NaN index, or −2
  bool avx512;
  double qmax[kMaxWidths];  // 2^bits − 1 per width
  double half[kMaxWidths];  // 2^(bits − 1) per width
};

template <typename T>
void run_rows(const Job& job, const T* w, int64_t task) {
  const RtnErrorArgs& a = *job.a;
  const int64_t r0 = task * job.rows_per_task;
  const int64_t r1 = std::min(a.rows, r0 + job.rows_per_task);
  const int64_t span = a.per_tensor || a.group_size <= 0 ? a.cols : a.group_size;
  const int n = a.count;
  Params local;
  job.status[task] = -1;
  // AVX-512 with groups of their own: a row's ranges first, then the parameters of all its groups
  // with the groups as vector lanes (params_groups_avx512), then the errors. The first NaN or
  // out-of-range scale in row order is reported, as the group-by-group loop below would.
  const bool batched = job.avx512 && job.tensor_params == nullptr;
  const int64_t row_groups = (a.cols + span - 1) / span;
  std::vector<double> los(batched ? row_groups : 0), his(batched ? row_groups : 0);
  std::vector<Params> row_params(batched ? row_groups : 0);
  for (int64_t r = r0; r < r1; ++r) {
    double* sums = job.row_sums + r * (n + 1);
    for (int j = 0; j <= n; ++j) sums[j] = 0.0;
    if (batched) {
      int64_t nan = -1, ranged = 0;
      for (; ranged < row_groups; ++ranged) {
        const int64_t start = r * a.cols + ranged * span;
        nan = range_avx512(w, start, std::min(span, a.cols - ranged * span), &los[ranged], &his[ranged]);
        if (nan >= 0) break;
      }
      if (params_groups_avx512(a, job.qmax, job.half, los.data(), his.data(), ranged, row_params.data()) >= 0) {
        job.status[task] = -2;
        return;
      }
      if (nan >= 0) {
        job.status[task] = nan;
        return;
      }
      for (int64_t g = 0; g < row_groups; ++g) {
        const int64_t start = r * a.cols + g * span;
        double group_norm = 0.0;
        group_errors_avx512(w + start, std::min(span, a.cols - g * span), row_params[g], job.qmax, n, sums, &group_norm);
        sums[n] += group_norm;
      }
      continue;
    }
    for (int64_t c = 0; c < a.cols; c += span) {
      const int64_t start = r * a.cols + c;
      const int64_t end = start + std::min(span, a.cols - c);
      const Params* p = job.tensor_params;
      if (p == nullptr) {
        double lo = 0.0, hi = 0.0;
        const int64_t nan = range_of(w, start, end - start, &lo, &hi);
        if (nan >= 0) {
          job.status[task] = nan;
          return;
        }
        if (!params_for(a, lo, hi, &local)) {
          job.status[task] = -2;
          return;
        }
        p = &local;
      }
      double group_norm = 0.0;
      if (job.avx512) {
        group_errors_avx512(w + start, end - start, *p, job.qmax, n, sums, &group_norm);
        sums[n] += group_norm;
        continue;
      }
      for (int j = 0; j < n; ++j) {
        const double qmax = std::ldexp(1.0, a.bits[j]) - 1.0;
        double* norm = j == 0 ? &group_norm : nullptr;
        sums[j] += group_error_portable(w + start, end - start, p->scale[j], p->zero[j], qmax, norm);
      }
      sums[n] += group_norm;
    }
  }
}

void run_task(void* context, int64_t task, int /*worker*/) {
  const Job& job = *static_cast<const Job*>(context);
  if (job.a->w != nullptr) run_rows(job, job.a->w, task);
  else run_rows(job, job.a->w16, task);
}

// One rtn_errors call as a job of row tasks (background.h): the setup in the
// constructor, the rows in run(), the sums in finish(). The widths are copied,
// so only w and out must outlive the job.
class RtnErrorsJob final : public BackgroundJob {
 public:
  RtnErrorsJob(const RtnErrorArgs& args, double* out) : a_(args), bits_(args.bits, args.bits + args.count), out_(out) {
    a_.bits = bits_.data();
    const int n = a_.count;
    for (int j = 0; j < n; ++j) out_[j] = 0.0;
    if (a_.rows <= 0 || a_.cols <= 0 || n == 0) return;
    if (a_.per_tensor) {
      double lo = 0.0, hi = 0.0;
      const int64_t nan = a_.w != nullptr ? range_of(a_.w, 0, a_.rows * a_.cols, &lo, &hi) : range_of(a_.w16, 0, a_.rows * a_.cols, &lo, &hi);
      if (nan >= 0) {
        early_ = nan;
        return;
      }
      if (!params_for(a_, lo, hi, &tensor_)) {
        early_ = -2;
        return;
      }
    }
    row_sums_.resize(static_cast<size_t>(a_.rows) * (n + 1));
    // About 16k values per task: enough to amortise the hand-off, small enough that a
    // 256×256 weight still splits across threads.
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 14) / a_.cols);
    tasks_ = (a_.rows + rows_per_task - 1) / rows_per_task;
    status_.assign(static_cast<size_t>(tasks_), -1);
    job_ = Job{&a_, a_.per_tensor ? &tensor_ : nullptr, rows_per_task, row_sums_.data(), status_.data(), active_isa() == Isa::kAvx512, {}, {}};
    for (int j = 0; j < n; ++j) {
      job_.qmax[j] = std::ldexp(1.0, a_.bits[j]) - 1.0;
      job_.half[j] = std::ldexp(1.0, a_.bits[j] - 1);
    }
  }

  int64_t tasks() const override { return tasks_; }
  void run(int64_t task) override { run_task(&job_, task, 0); }

  int64_t finish() override {
    if (tasks_ == 0) return early_;
    // The first failure in row order is what the reference (which stops there) reports.
    for (int64_t s : status_) {
      if (s != -1) return s;
    }
    const int n = a_.count;
    double err[kMaxWidths] = {0};
    double norm = 0.0;
    for (int64_t r = 0; r < a_.rows; ++r) {
      const double* sums = row_sums_.data() + r * (n + 1);
      norm += sums[n];
      for (int j = 0; j < n; ++j) err[j] += sums[j];
    }
    for (int j = 0; j < n; ++j) out_[j] = norm > 0 ? std::sqrt(err[j] / norm) : 0.0;
    return -1;
  }

 private:
  RtnErrorArgs a_;
  std::vector<int32_t> bits_;
  double* out_;
  Params tensor_{};
  std::vector<double> row_sums_;
  std::vector<int64_t> status_;
  Job job_{};
  int64_t tasks_ = 0;
  int64_t early_ = -1;
};

}  // namespace

int64_t rtn_errors(const RtnErrorArgs& a, double* out) {
  RtnErrorsJob job(a, out);
  const int64_t tasks = job.tasks();
  if (tasks > 1 && ThreadPool::shared().size() > 1) {
    ThreadPool::shared().run(tasks, [](void* context, int64_t task, int) { static_cast<RtnErrorsJob*>(context)->run(task); }, &job);
  } else {
    for (int64_t t = 0; t < tasks; ++t) job.run(t);
  }
  return job.finish();
}

int64_t rtn_errors_start(const RtnErrorArgs& a, double* out) { return background_start(std::make_unique<RtnErrorsJob>(a, out)); }

}  // namespace qkd
