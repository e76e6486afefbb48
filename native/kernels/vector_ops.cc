// See vector_ops.h. The AVX-512 bodies widen to double in 8-lane vectors;
// the portable ones are plain loops (the compiler vectorises them for the
// baseline ISA). Work is split over the pool in chunks fixed by n alone.
#include "vector_ops.h"

#include <algorithm>
#include <vector>

#include "cpu.h"
#include "thread_pool.h"

#if QKD_X86
#include <immintrin.h>
#endif

namespace qkd {
namespace {

constexpr int64_t kChunk = 65536;

double chunk_sum_portable(const float* x, int64_t n) {
  double lanes[8] = {0};
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    lanes[i & 7] += v * v;
  }
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

#if QKD_X86
QKD_TARGET_AVX512 double chunk_sum_avx512(const float* x, int64_t n) {
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    const __m512d b = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
    acc0 = _mm512_fmadd_pd(a, a, acc0);
    acc1 = _mm512_fmadd_pd(b, b, acc1);
  }
  double s = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
  for (; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

QKD_TARGET_AVX512 void scale_avx512(float* x, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
  for (; i < n; ++i) x[i] *= s;
}
#endif

void scale_portable(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

struct SumJob {
  const float* x;
  int64_t n;
  bool avx512;
  double* sums;
};

struct ScaleJob {
  float* x;
  int64_t n;
  float s;
  bool avx512;
};

}  // namespace

double sum_squares(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> sums(static_cast<size_t>(chunks));
  SumJob job{x, n, active_isa() == Isa::kAvx512, sums.data()};
  ThreadPool::shared().run(
      chunks,
      [](void* context, int64_t c, int) {
        const SumJob& j = *static_cast<const SumJob*>(context);
        const int64_t first = c * kChunk, count = std::min(kChunk, j.n - first);
#if QKD_X86
        if (j.avx512) {
          j.sums[c] = chunk_sum_avx512(j.x + first, count);
          return;
        }
#endif
        j.sums[c] = chunk_sum_portable(j.x + first, count);
      },
      &job);
  double total = 0.0;
  for (const double s : sums) total += s;
  return total;
}

void scale_in_place(float* x, int64_t n, float s) {
  if (n <= 0) return;
  ScaleJob job{x, n, s, active_isa() == Isa::kAvx512};
  ThreadPool::shared().run(
      (n + kChunk - 1) / kChunk,
      [](void* context, int64_t c, int) {
        const ScaleJob& j = *static_cast<const ScaleJob*>(context);
        const int64_t first = c * kChunk, count = std::min(kChunk, j.n - first);
#if QKD_X86
        if (j.avx512) {
          scale_avx512(j.x + first, count, j.s);
          return;
        }
#endif
        scale_portable(j.x + first, count, j.s);
      },
      &job);
}

}  // namespace qkd
