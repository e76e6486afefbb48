// See transpose.h. AVX-512: 16×16 register tiles (transpose_avx512.h);
// elsewhere, and at the edges, 8×8 scalar blocks (cache-friendly both ways).
// Threads take bands of 16 source rows.
#include "transpose.h"

#include <algorithm>

#include "thread_pool.h"
#include "transpose_avx512.h"

namespace qkd {
namespace {

constexpr int64_t kBand = 16;

void transpose_block_scalar(const float* src, float* dst, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t rb = r0; rb < r1; rb += 8) {
    for (int64_t cb = c0; cb < c1; cb += 8) {
      const int64_t re = std::min(r1, rb + 8), ce = std::min(c1, cb + 8);
      for (int64_t c = cb; c < ce; ++c) {
        for (int64_t r = rb; r < re; ++r) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

#if QKD_X86
QKD_TARGET_AVX512 void transpose_band_avx512(const float* src, float* dst, int64_t rows, int64_t cols, int64_t r0) {
  const int64_t r1 = std::min(rows, r0 + kBand);
  if (r1 - r0 < kBand) {
    transpose_block_scalar(src, dst, rows, cols, r0, r1, 0, cols);
    return;
  }
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    __m512 t[16];
    for (int i = 0; i < 16; ++i) t[i] = _mm512_loadu_ps(src + (r0 + i) * cols + c);
    transpose16x16(t);
    for (int j = 0; j < 16; ++j) _mm512_storeu_ps(dst + (c + j) * rows + r0, t[j]);
  }
  if (c < cols) transpose_block_scalar(src, dst, rows, cols, r0, r1, c, cols);
}
#endif

struct Job {
  const float* src;
  float* dst;
  int64_t rows, cols;
  Isa isa;
};

void run_band(void* context, int64_t band, int /*worker*/) {
  const Job& j = *static_cast<const Job*>(context);
  const int64_t r0 = band * kBand;
#if QKD_X86
  if (j.isa == Isa::kAvx512) {
    transpose_band_avx512(j.src, j.dst, j.rows, j.cols, r0);
    return;
  }
#endif
  transpose_block_scalar(j.src, j.dst, j.rows, j.cols, r0, std::min(j.rows, r0 + kBand), 0, j.cols);
}

}  // namespace

void transpose_with(const float* src, float* dst, int64_t rows, int64_t cols, Isa isa, int max_threads) {
  if (rows <= 0 || cols <= 0) return;
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) isa = detected_isa();
  Job job{src, dst, rows, cols, isa};
  const int64_t bands = (rows + kBand - 1) / kBand;
  // Small matrices are cheaper on the caller than handed to the pool.
  if (bands > 1 && max_threads > 1 && rows * cols >= (int64_t(1) << 16)) ThreadPool::shared().run(bands, run_band, &job);
  else for (int64_t b = 0; b < bands; ++b) run_band(&job, b, 0);
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols) {
  transpose_with(src, dst, rows, cols, active_isa(), ThreadPool::shared().size());
}

}  // namespace qkd
