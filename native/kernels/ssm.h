// Kernels of the Mamba-2-style state-space mixer (docs/mohawk.md): the
// selective scan, its materialised mixing matrix and the depthwise causal
// convolution, forward and backward. The TypeScript definitions in
// src/tensor/reference/ssm.ts are the oracle; these follow them loop for loop
// (state and sums in double) and run the independent (batch row, head) or
// channel slices on the shared thread pool. Backward kernels ADD into
// gradient buffers; a nullptr gradient is skipped.
//
// Legend: B batch, T time, H heads, P head (value) width, N state width,
// C channels, K kernel length, L scan chunk length. Layouts: x, y [B,T,H,P];
// b, c [B,T,H,N]; logit [B,T,H] with the decay a = sigmoid(-logit);
// states [B,H,ceil(T/L),N,P]; m [B,H,T,T]; conv x, y [B,T,C], w [C,K], bias [C].
#pragma once

#include <cstdint>

namespace qkd {

struct ScanDims {
  int64_t B, T, H, P, N, L;
};

void ssm_scan_forward(const float* x, const float* b, const float* c, const float* logit, float* y, float* states,
                      const ScanDims& d);

void ssm_scan_backward(const float* x, const float* b, const float* c, const float* logit, const float* states,
                       const float* dy, float* dx, float* db, float* dc, float* dlogit, const ScanDims& d);

void ssm_matrix_forward(const float* b, const float* c, const float* logit, float* m, int64_t B, int64_t T, int64_t H,
                        int64_t N);

void ssm_matrix_backward(const float* b, const float* c, const float* logit, const float* m, const float* dm, float* db,
                         float* dc, float* dlogit, int64_t B, int64_t T, int64_t H, int64_t N);

// bias may be nullptr (no bias).
void causal_conv_forward(const float* x, const float* w, const float* bias, float* y, int64_t B, int64_t T, int64_t C,
                         int64_t K);

void causal_conv_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* dbias,
                          int64_t B, int64_t T, int64_t C, int64_t K);

}  // namespace qkd
