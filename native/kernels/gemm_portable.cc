// Portable SGEMM micro-kernel in plain C++: fixed-size loops over a 4×8
// accumulator tile that the compiler keeps in vector registers (eight xmm
// accumulators with SSE2 on a baseline x86-64 build, NEON on arm64). Of
// 4×8, 6×8, 8×8, 4×12 and 4×16, 4×8 measured fastest: the larger tiles
// spill their accumulators to the stack.
#include "gemm_micro.h"
#include "gemm_pack.h"

namespace qkd {
namespace {

constexpr int kRows = 4;
constexpr int kCols = 8;

void compute_tile(int64_t kc, const float* __restrict ap, const float* __restrict bp,
                  float* __restrict c, int64_t ldc, float alpha, float beta, int m_valid,
                  int n_valid) {
  float acc[kRows][kCols] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int r = 0; r < kRows; ++r) {
      const float a = ap[r];
      for (int j = 0; j < kCols; ++j) acc[r][j] += a * bp[j];
    }
    ap += kRows;
    bp += kCols;
  }
  for (int r = 0; r < m_valid; ++r) {
    float* out = c + r * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < n_valid; ++j) out[j] = alpha * acc[r][j];
    } else {
      for (int j = 0; j < n_valid; ++j) out[j] = alpha * acc[r][j] + beta * out[j];
    }
  }
}

const MicroKernel kPortableKernel = {
    kRows, kCols, /*kc=*/256, /*nc=*/512, /*mc=*/2048, compute_tile, pack_a_panel<kRows>, pack_b_panel<kCols>,
};

}  // namespace

const MicroKernel* portable_micro_kernel() { return &kPortableKernel; }

}  // namespace qkd
