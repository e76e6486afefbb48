// weight_stats (weight_stats.h): rows split into tasks whose size depends
// only on the shape; each task sums into its own double accumulators
// (16 lanes on AVX-512, one on the portable path) and the task totals are
// added in task order.
#include "weight_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "thread_pool.h"

#if QKD_X86
#include <immintrin.h>

// GCC 12's _mm512_undefined_* (inside some intrinsics) trips
// -Wmaybe-uninitialized by design; the value is never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qkd {
namespace {

constexpr int64_t kTaskElements = 1 << 16;  // elements per task (whole rows)

// The per-row quantizer of fakeQuant (granularity 1, clip ratio 1).
struct RowStep {
  double scale = 0.0, zero = 0.0, qmax = 0.0;
  bool skip = true;
};

RowStep row_step(float lo_f, float hi_f, int bits) {
  RowStep s;
  if (bits == 0) return s;
  const double lo = lo_f, hi = hi_f;
  s.qmax = static_cast<double>((1 << bits) - 1);
  s.scale = (hi - lo) / s.qmax;
  s.zero = s.scale > 0.0 ? std::nearbyint(-lo / s.scale) : 0.0;
  s.skip = !(s.scale > 0.0) || !std::isfinite(s.scale);
  return s;
}

inline float load_value(const float* w, int64_t i) { return w[i]; }
inline float load_value(const uint16_t* w, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(w[i]) << 16;
  float v;
  __builtin_memcpy(&v, &bits, sizeof v);
  return v;
}

// Rows [r0, r1), scalar: the portable path.
template <typename T>
WeightStatsTotals rows_portable(const T* w, const WeightStatsArgs& a, int64_t r0, int64_t r1) {
  WeightStatsTotals t;
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = w + r * a.cols;
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (int64_t c = 0; c < a.cols; ++c) {
      const float x = load_value(row, c);
      if (x < lo) lo = x;
      if (x > hi) hi = x;
      const double d = static_cast<double>(x) - a.shift, d2 = d * d;
      t.s1 += d;
      t.s2 += d2;
      t.s3 += d2 * d;
      t.s4 += d2 * d2;
      t.sum_squares += static_cast<double>(x) * x;
    }
    a.row_min[r] = lo;
    a.row_max[r] = hi;
    const RowStep s = row_step(lo, hi, a.bits);
    if (s.skip) continue;
    for (int64_t c = 0; c < a.cols; ++c) {
      const double x = load_value(row, c);
      double q = std::nearbyint(x / s.scale) + s.zero;
      q = q >= 0.0 && q <= s.qmax ? q : q < 0.0 ? 0.0 : s.qmax;
      const double e = static_cast<double>(static_cast<float>((q - s.zero) * s.scale)) - x;
      t.rtn_error += e * e;
    }
  }
  return t;
}

#if QKD_X86

QKD_TARGET_AVX512 inline __mmask16 lanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

// 16 values from p (lanes past `left` are 0, not read).
QKD_TARGET_AVX512 inline __m512 load16(const float* p, int64_t left) {
  return left >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(left), p);
}
QKD_TARGET_AVX512 inline __m512 load16(const uint16_t* p, int64_t left) {
  const __m256i bits = left >= 16 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                  : _mm256_maskz_loadu_epi16(lanes(left), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

struct Lanes {  // 16 double lanes as two zmm
  __m512d lo, hi;
};

QKD_TARGET_AVX512 inline Lanes zero_lanes() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }
QKD_TARGET_AVX512 inline Lanes widen(__m512 v) {
  return {_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))};
}
QKD_TARGET_AVX512 inline double lane_sum(const Lanes& v) { return _mm512_reduce_add_pd(_mm512_add_pd(v.lo, v.hi)); }

// Rows [r0, r1) with AVX-512. Masked tail lanes contribute 0 to every sum.
template <typename T>
QKD_TARGET_AVX512 WeightStatsTotals rows_avx512(const T* w, const WeightStatsArgs& a, int64_t r0, int64_t r1) {
  Lanes s1 = zero_lanes(), s2 = s1, s3 = s1, s4 = s1, sq = s1, err = s1;
  const __m512d shift = _mm512_set1_pd(a.shift);
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = w + r * a.cols;
    __m512 lo = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    __m512 hi = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t c = 0; c < a.cols; c += 16) {
      const int64_t left = a.cols - c;
      const __mmask16 m = lanes(left);
      const __m512 x = load16(row + c, left);
      // min(x, lo) keeps lo where x is NaN: NaN entries are skipped.
      lo = _mm512_mask_min_ps(lo, m, x, lo);
      hi = _mm512_mask_max_ps(hi, m, x, hi);
      const Lanes xd = widen(x);
      const __m512d d_lo = _mm512_maskz_sub_pd(static_cast<__mmask8>(m), xd.lo, shift);
      const __m512d d_hi = _mm512_maskz_sub_pd(static_cast<__mmask8>(m >> 8), xd.hi, shift);
      const __m512d q_lo = _mm512_mul_pd(d_lo, d_lo), q_hi = _mm512_mul_pd(d_hi, d_hi);
      s1.lo = _mm512_add_pd(s1.lo, d_lo);
      s1.hi = _mm512_add_pd(s1.hi, d_hi);
      s2.lo = _mm512_add_pd(s2.lo, q_lo);
      s2.hi = _mm512_add_pd(s2.hi, q_hi);
      s3.lo = _mm512_fmadd_pd(q_lo, d_lo, s3.lo);
      s3.hi = _mm512_fmadd_pd(q_hi, d_hi, s3.hi);
      s4.lo = _mm512_fmadd_pd(q_lo, q_lo, s4.lo);
      s4.hi = _mm512_fmadd_pd(q_hi, q_hi, s4.hi);
      sq.lo = _mm512_fmadd_pd(xd.lo, xd.lo, sq.lo);
      sq.hi = _mm512_fmadd_pd(xd.hi, xd.hi, sq.hi);
    }
    const float row_lo = _mm512_reduce_min_ps(lo), row_hi = _mm512_reduce_max_ps(hi);
    a.row_min[r] = row_lo;
    a.row_max[r] = row_hi;
    const RowStep s = row_step(row_lo, row_hi, a.bits);
    if (s.skip) continue;
    const __m512d scale = _mm512_set1_pd(s.scale), zero = _mm512_set1_pd(s.zero);
    const __m512d qmax = _mm512_set1_pd(s.qmax), qmin = _mm512_setzero_pd();
    // The next row is asked for while this one's error is computed from L1: a row is
    // often a 4 KiB page, which the hardware prefetchers do not cross, so the first
    // pass over it would otherwise start with a cache miss after a stretch with no loads.
    const char* next = r + 1 < a.rows ? reinterpret_cast<const char*>(row + a.cols) : nullptr;
    const int64_t next_bytes = next != nullptr ? a.cols * static_cast<int64_t>(sizeof(T)) : 0;
    for (int64_t c = 0; c < a.cols; c += 16) {
      const int64_t ahead = c * static_cast<int64_t>(sizeof(T));  // the same place in the next row
      if (ahead < next_bytes) _mm_prefetch(next + ahead, _MM_HINT_T0);
      const int64_t left = a.cols - c;
      const __mmask16 m = lanes(left);
      const Lanes x = widen(load16(row + c, left));
      __m512d v[2] = {x.lo, x.hi};
      for (int h = 0; h < 2; ++h) {
        // q = nearbyint(x / scale) + zero, clamped (a NaN q becomes qmax, like fakeQuant).
        __m512d r = _mm512_roundscale_pd(_mm512_div_pd(v[h], scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512d q = _mm512_add_pd(r, zero);
        // max(qmin, q) keeps a NaN q (second operand), min(·, qmax) then gives qmax.
        q = _mm512_min_pd(_mm512_max_pd(qmin, q), qmax);
        const __m256 y = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(q, zero), scale));
        const __m512d e = _mm512_maskz_sub_pd(static_cast<__mmask8>(h == 0 ? m : m >> 8), _mm512_cvtps_pd(y), v[h]);
        if (h == 0) {
          err.lo = _mm512_fmadd_pd(e, e, err.lo);
        } else {
          err.hi = _mm512_fmadd_pd(e, e, err.hi);
        }
      }
    }
  }
  WeightStatsTotals t;
  t.s1 = lane_sum(s1);
  t.s2 = lane_sum(s2);
  t.s3 = lane_sum(s3);
  t.s4 = lane_sum(s4);
  t.sum_squares = lane_sum(sq);
  t.rtn_error = lane_sum(err);
  return t;
}

#endif  // QKD_X86

struct Job {
  const WeightStatsArgs* args;
  Isa isa;
  int64_t rows_per_task;
  std::vector<WeightStatsTotals>* parts;
};

void run_task(void* context, int64_t task, int /*worker*/) {
  Job& job = *static_cast<Job*>(context);
  const WeightStatsArgs& a = *job.args;
  const int64_t r0 = task * job.rows_per_task, r1 = std::min(a.rows, r0 + job.rows_per_task);
  WeightStatsTotals t;
#if QKD_X86
  if (job.isa == Isa::kAvx512) {
    t = a.w32 != nullptr ? rows_avx512(a.w32, a, r0, r1) : rows_avx512(a.w16, a, r0, r1);
  } else
#endif
  {
    t = a.w32 != nullptr ? rows_portable(a.w32, a, r0, r1) : rows_portable(a.w16, a, r0, r1);
  }
  (*job.parts)[static_cast<size_t>(task)] = t;
}

}  // namespace

WeightStatsTotals weight_stats_with(const WeightStatsArgs& a, Isa isa, int max_threads) {
  WeightStatsTotals total;
  if (a.rows <= 0) return total;
  if (a.cols <= 0) {
    for (int64_t r = 0; r < a.rows; ++r) {
      a.row_min[r] = std::numeric_limits<float>::infinity();
      a.row_max[r] = -std::numeric_limits<float>::infinity();
    }
    return total;
  }
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  std::vector<WeightStatsTotals> parts;
  Job job{&a, isa, std::max<int64_t>(1, kTaskElements / a.cols), &parts};
  const int64_t tasks = (a.rows + job.rows_per_task - 1) / job.rows_per_task;
  parts.resize(static_cast<size_t>(tasks));
  if (tasks > 1 && max_threads > 1) {
    ThreadPool::shared().run(tasks, run_task, &job);
  } else {
    for (int64_t t = 0; t < tasks; ++t) run_task(&job, t, 0);
  }
  for (const WeightStatsTotals& p : parts) {
    total.s1 += p.s1;
    total.s2 += p.s2;
    total.s3 += p.s3;
    total.s4 += p.s4;
    total.sum_squares += p.sum_squares;
    total.rtn_error += p.rtn_error;
  }
  return total;
}

WeightStatsTotals weight_stats(const WeightStatsArgs& args) {
  return weight_stats_with(args, active_isa(), ThreadPool::shared().size());
}

}  // namespace qkd
