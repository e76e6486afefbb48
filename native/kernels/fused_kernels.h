// The per-ISA kernels behind fused.h: one table per path, each entry
// working on a range of rows or elements on the calling thread. fused.cc
// picks the table and spreads the ranges over the pool.
#pragma once

#include <cstdint>

#include "fused.h"

namespace qkd {

// The parameters of one fake-quantization group (fused.h).
struct FakeQuantStep {
  double scale = 0.0, zero = 0.0, qmin = 0.0, qmax = 0.0;
  bool copy = true;  // !(scale > 0) or not finite: out = w, mask = 1
};

struct FusedKernels {
  // Rows [0, rows) of the given pointers.
  void (*rmsnorm_forward)(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t cols,
                          float eps);
  // s = x + delta (stored), then rmsnorm_forward of s.
  void (*add_rmsnorm_forward)(const float* x, const float* delta, float* s, const float* w, float* y, float* rstd,
                              int64_t rows, int64_t cols, float eps);
  // dw_partial: C doubles this range of rows adds into (nullptr: skip dw).
  void (*rmsnorm_backward)(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                           double* dw_partial, int64_t rows, int64_t cols);
  void (*swiglu_forward)(const float* gate, const float* up, float* y, int64_t n);
  void (*swiglu_backward)(const float* gate, const float* up, const float* dy, float* dgate, float* dup,
                          int64_t n);
  // Rows (b, t, h) numbered first..last-1 in B×T×H order.
  void (*rope)(const RopeArgs& args, int64_t first_row, int64_t last_row);
  // Elements [first, last).
  void (*adamw)(const AdamwArgs& args, float one_minus_beta1, float one_minus_beta2, int64_t first, int64_t last);
  // row_loss[r]: the row's lse − z[target] in double, 0 for ignored rows.
  void (*cross_entropy_forward)(const float* logits, const int32_t* targets, float* lse, double* row_loss,
                                int64_t rows, int64_t vocab, int32_t ignore_index);
  void (*cross_entropy_backward)(const float* logits, const int32_t* targets, const float* lse, float* dz,
                                 int64_t rows, int64_t vocab, int32_t ignore_index, float scale);
  // row_kl[r]: rowKl[r] in double.
  void (*kl_forward)(const float* zT, const float* zS, float* lseT, float* lseS, float* rowKl, double* row_kl,
                     int64_t rows, int64_t vocab, float inv_tau);
  void (*kl_backward)(const float* zT, const float* zS, const float* lseT, const float* lseS, const float* rowKl,
                      float* dT, float* dS, int64_t rows, int64_t vocab, float inv_tau, float g);
  // Rows first..last-1 of the BH×T rows of y, dy, dx (row index mod T is t).
  void (*causal_softmax_backward)(const float* y, const float* dy, float* dx, int64_t first_row, int64_t last_row,
                                  int64_t t, int64_t s, int64_t offset, bool accumulate);
  void (*add_into)(float* dst, const float* src, int64_t n);
  void (*add)(const float* a, const float* b, float* out, int64_t n);
  void (*sigmoid)(const float* x, float* sig, int64_t n);
  // Fake quantization. A group's parameters from its minimum and maximum.
  FakeQuantStep (*fake_quant_step)(float lo, float hi, const FakeQuantArgs& args);
  // Minimum and maximum of w[0, n) (n ≥ 1), NaN skipped
  // (+Inf and −Inf when all are NaN).
  void (*fake_quant_minmax)(const float* w, int64_t n, float* lo, float* hi);
  // Elements [0, n) of one group with its parameters (mask may be nullptr).
  void (*fake_quant_apply)(const float* w, float* out, uint8_t* mask, int64_t n, const FakeQuantStep& step);
  // Whole groups first..last-1 (row-major, ceil(C/span) per row) of args.
  void (*fake_quant_groups)(const FakeQuantArgs& args, int64_t span, int64_t first_group, int64_t last_group);
  void (*fake_quant_backward)(const float* dy, const uint8_t* mask, float* dw, int64_t n);
};

// nullptr when the path is not compiled in (non-x86 builds).
const FusedKernels* avx512_fused_kernels();
const FusedKernels* avx2_fused_kernels();
const FusedKernels* portable_fused_kernels();

}  // namespace qkd
