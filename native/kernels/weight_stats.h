// One read of a weight matrix for the profiler's memory-bound metrics
// (SPEC section 1): the power sums behind the excess kurtosis, ‖W‖_F², each
// row's minimum and maximum (the 4-bit step of the noise metric), and the
// squared error of per-row asymmetric round-to-nearest (the reconstruction
// error), instead of five passes over W.
//
// The weight is float32 or raw bfloat16 bits, rows × cols row-major. Each
// row is read from memory once: its moments and extremes first, then its
// quantization error while it is still in L1.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

struct WeightStatsArgs {
  const float* w32 = nullptr;     // exactly one of w32 and w16 (bf16 bits)
  const uint16_t* w16 = nullptr;
  int64_t rows = 0, cols = 0;
  int bits = 0;        // 2..8: the RTN error at this width; 0: skip it
  double shift = 0.0;  // the power sums are of (w − shift): pick it near the mean
  float* row_min = nullptr;  // rows each, NaN skipped (+Inf / −Inf for a row of NaN)
  float* row_max = nullptr;
};

// All in double. With d = w − shift over the rows·cols entries:
//   s1..s4 = Σ d, Σ d², Σ d³, Σ d⁴;  sum_squares = Σ w²;
//   rtn_error = Σ (ŵ − w)², ŵ the per-row b-bit asymmetric quantize-dequantize
//   of fused.h's fakeQuant (granularity 1, clip ratio 1), computed with the
//   same arithmetic (ŵ identical to it); rows whose step is not positive and
//   finite add 0.
// The sums are taken in an order fixed by the sizes, so they are the same
// for any thread count and run to run.
struct WeightStatsTotals {
  double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, sum_squares = 0.0, rtn_error = 0.0;
};

WeightStatsTotals weight_stats(const WeightStatsArgs& args);
WeightStatsTotals weight_stats_with(const WeightStatsArgs& args, Isa isa, int max_threads);

}  // namespace qkd
