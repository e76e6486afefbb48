// Fused, memory-bound kernels of a training step: RMSNorm, SwiGLU, RoPE,
// AdamW, cross-entropy, KL divergence, causal softmax, adds and fake
// quantization.
//
// Legend: R rows, C columns; B batch, T time (queries), S keys, H heads,
// D head dimension, V vocabulary, BH = B·H attention blocks, N elements.
//
// Conventions, for every function here:
// - Buffers are contiguous float32 arrays; the caller guarantees they are
//   long enough (binding.cc checks). Where a gradient may be skipped the
//   pointer may be nullptr.
// - Backward kernels ADD into gradient buffers.
// - Reductions over a row (sums of squares, log-sum-exp, dot products, the
//   KL sum) are accumulated in double; the returned totals are summed in
//   row order, so they do not depend on the thread count.
// - Results are bit-identical from run to run for a given path, and do not
//   depend on the number of threads.
// - Work of at least kMinParallelWork elements is spread over the thread
//   pool (rows, or element ranges); smaller calls stay on the caller.
//
// Each function takes an `Exec` last: the ISA path and the thread limit.
// The default is the path of cpu.h's active_isa() on the whole pool; tests
// and benchmarks pass others.
#pragma once

#include <cstdint>

#include "cpu.h"

namespace qkd {

// Below this many elements of work a call stays on the calling thread.
constexpr int64_t kMinParallelWork = 32768;

struct Exec {
  Isa isa;
  int max_threads;
  // active_isa() on every thread of the shared pool.
  static Exec active();
};

// ---- RMSNorm --------------------------------------------------------------

// Per row r: s = 1/sqrt(mean_c x[r,c]² + eps); rstd[r] = s;
// y[r,c] = x[r,c]·s·w[c].
//   x: R×C, w: C, y: R×C (may be x), rstd: R.
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t cols,
                     float eps, Exec exec = Exec::active());

// The residual add fused with the norm that reads its result: s = x + delta
// (stored: the residual stream goes on), then rmsnorm_forward(s) into y and
// rstd, in one pass over each row. s may be x or delta; y must not overlap
// x, delta or s. Bit-identical to add, then rmsnorm_forward.
void add_rmsnorm_forward(const float* x, const float* delta, float* s, const float* w, float* y, float* rstd,
                         int64_t rows, int64_t cols, float eps, Exec exec = Exec::active());

// With g = dy⊙w and s = rstd[r]:
//   dx[r,c] += s·g[c] − s³·x[r,c]·(Σ_c' g[c']·x[r,c'])/C
//   dw[c]   += Σ_r dy[r,c]·x[r,c]·s_r
//   x, dy: R×C, w: C, rstd: R, dx: R×C or nullptr, dw: C or nullptr.
// dw is summed in double over fixed blocks of rows (chosen from R alone,
// never from the thread count), the blocks then added in order.
// Returns false only if the scratch for dw could not be allocated (nothing
// is then written).
bool rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      int64_t rows, int64_t cols, Exec exec = Exec::active());

// ---- SwiGLU ---------------------------------------------------------------

// y = silu(gate)·up, silu(g) = g·sigmoid(g).   gate, up, y: N (y may be either input).
void swiglu_forward(const float* gate, const float* up, float* y, int64_t n, Exec exec = Exec::active());

// dgate += dy·up·sigmoid(g)·(1 + g·(1 − sigmoid(g))); dup += dy·silu(g).
//   gate, up, dy: N; dgate, dup: N or nullptr.
void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n,
                     Exec exec = Exec::active());

// ---- Rotary position embedding --------------------------------------------

struct RopeArgs {
  const float* src = nullptr;  // B×T×H×D
  float* dst = nullptr;        // B×T×H×D; may be src only when !accumulate
  const float* cos = nullptr;  // T×(D/2)
  const float* sin = nullptr;  // T×(D/2)
  int64_t batch = 0, time = 0, heads = 0, dim = 0;  // B, T, H, D (D even)
  bool interleaved = false;  // pairs (2i, 2i+1); else (i, i + D/2)
  float direction = 1.0f;    // +1 or −1: the sign of the angle
  bool accumulate = false;   // add into dst instead of writing it
};

// For each pair (a, b) of a row at time t, with c = cos[t,i] and
// s = direction·sin[t,i]: a' = a·c − b·s, b' = a·s + b·c.
void rope(const RopeArgs& args, Exec exec = Exec::active());

// ---- AdamW -----------------------------------------------------------------

struct AdamwArgs {
  float* w = nullptr;        // N
  const float* g = nullptr;  // N
  float* m = nullptr;        // N, first moment
  float* v = nullptr;        // N, second moment
  int64_t n = 0;
  float lr = 0.0f, beta1 = 0.0f, beta2 = 0.0f, eps = 0.0f;
  float shrink = 1.0f;  // 1 − lr·weight_decay
  float c1 = 1.0f;      // 1/(1 − beta1^step)
  float c2 = 1.0f;      // 1/(1 − beta2^step)
};

// m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; w = w·shrink − lr·(m·c1)/(sqrt(v·c2) + eps).
void adamw(const AdamwArgs& args, Exec exec = Exec::active());

// ---- Cross-entropy ---------------------------------------------------------

// For rows whose target is not ignore_index: lse[r] = log Σ_j exp(z[r,j])
// (shifted by the row maximum), and *loss = Σ_r (lse[r] − z[r, target_r]) in
// double (not divided). Ignored rows leave lse[r] alone. The caller
// guarantees 0 ≤ target < V on the other rows.
//   logits: R×V, targets: R, lse: R.
// Returns false only if the per-row scratch could not be allocated.
bool cross_entropy_forward(const float* logits, const int32_t* targets, float* lse, int64_t rows, int64_t vocab,
                           int32_t ignore_index, double* loss, Exec exec = Exec::active());

// Rows not ignored: dz[r,j] += scale·exp(z[r,j] − lse[r]); dz[r,target] −= scale.
//   logits, dz: R×V, targets, lse: R.
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse, float* dz, int64_t rows,
                            int64_t vocab, int32_t ignore_index, float scale, Exec exec = Exec::active());

// ---- KL divergence (teacher ‖ student) at a temperature ---------------------

// Per row, with u_j = z_j·inv_tau: lseT[r] = log Σ exp(uT), lseS[r] likewise;
// rowKl[r] = Σ_j pT_j·(log pT_j − log pS_j), terms with pT_j = 0 being 0.
// *total = Σ_r rowKl[r] in double.
//   zT, zS: R×V; lseT, lseS, rowKl: R.
// Returns false only if the per-row scratch could not be allocated.
bool kl_forward(const float* zT, const float* zS, float* lseT, float* lseS, float* rowKl, int64_t rows,
                int64_t vocab, float inv_tau, double* total, Exec exec = Exec::active());

// dS += g·(pS − pT); dT += g·pT·(log pT − log pS − rowKl[r]) (0 where pT = 0),
// with log p = z·inv_tau − lse.
//   zT, zS: R×V; lseT, lseS, rowKl: R; dT, dS: R×V or nullptr.
void kl_backward(const float* zT, const float* zS, const float* lseT, const float* lseS, const float* rowKl,
                 float* dT, float* dS, int64_t rows, int64_t vocab, float inv_tau, float g,
                 Exec exec = Exec::active());

// ---- Causal softmax over attention scores ------------------------------------

// x, y: BH×T×S. Row t of each block keeps columns j < valid(t) =
// min(S, offset + t + 1) (offset = S − T for a causal block): y = softmax
// over them, 0 elsewhere. The masked part of x is never read; y may be x.
void causal_softmax_forward(const float* x, float* y, int64_t bh, int64_t t, int64_t s, int64_t offset,
                            Exec exec = Exec::active());

// Over the kept columns: dx = y·(dy − Σ_kept y·dy), added to dx when
// `accumulate`, else written, with the masked columns of dx set to 0 (and dx
// may then be dy). With `accumulate` the masked columns are untouched.
//   y, dy, dx: BH×T×S.
void causal_softmax_backward(const float* y, const float* dy, float* dx, int64_t bh, int64_t t, int64_t s,
                             int64_t offset, bool accumulate, Exec exec = Exec::active());

// ---- Adds -------------------------------------------------------------------

// dst += src.   dst, src: N.
void add_into(float* dst, const float* src, int64_t n, Exec exec = Exec::active());

// out = a + b.   a, b, out: N (out may be a or b).
void add(const float* a, const float* b, float* out, int64_t n, Exec exec = Exec::active());

// ---- Fake quantization (uniform affine, straight-through estimator) --------------

enum class QuantGranularity { kTensor = 0, kChannel = 1, kGroup = 2 };

struct FakeQuantArgs {
  const float* w = nullptr;  // R×C
  float* out = nullptr;      // R×C; may be w
  uint8_t* mask = nullptr;   // R×C, or nullptr: skip
  int64_t rows = 0, cols = 0;
  int bits = 8;              // 2..8
  bool symmetric = false;
  QuantGranularity granularity = QuantGranularity::kChannel;
  int64_t group_size = 128;  // ≥ 1, for kGroup
  double clip_ratio = 1.0;   // (0, 1]
};

// Groups: the whole tensor (kTensor), each row (kChannel), or each run of
// min(group_size, C) consecutive columns of a row, the last run of a row
// possibly shorter (kGroup). Per group, in double from the float inputs:
//   lo = min w · clip_ratio, hi = max w · clip_ratio (NaN elements are
//   skipped by the min and max);
//   asymmetric: scale = (hi − lo)/(2^b − 1), zero = round(−lo/scale),
//               [qmin, qmax] = [0, 2^b − 1];
//   symmetric:  scale = max(|lo|, |hi|)/(2^(b−1) − 1), zero = 0,
//               [qmin, qmax] = [−2^(b−1), 2^(b−1) − 1];
//   if !(scale > 0) or scale is ±Inf: out = w, mask = 1 over the group;
//   else per element: q = round(w/scale) + zero (a true division),
//   inside = qmin ≤ q ≤ qmax (false for NaN), qc = inside ? q :
//   q < qmin ? qmin : qmax, out = float((qc − zero)·scale), mask = inside.
// round is nearbyint in the default mode (half to even). This is the
// arithmetic of the TypeScript quantizeDequantize (JS numbers are doubles;
// the clamp is a min/max with the same results, see fused_rows.h), so the
// results are bit-identical to it and do not depend on the path or the
// thread count.
void fake_quant_forward(const FakeQuantArgs& args, Exec exec = Exec::active());

// dw[i] += dy[i] where mask[i] ≠ 0; dw[i] is left as it is (not even + 0)
// elsewhere.   dy, dw: N (dw may be dy), mask: N.
void fake_quant_backward(const float* dy, const uint8_t* mask, float* dw, int64_t n, Exec exec = Exec::active());

// ---- For accuracy tests ------------------------------------------------------

// sig[i] = sigmoid(x[i]) with the path's vectorised sigmoid.
void sigmoid_with(const float* x, float* sig, int64_t n, Isa isa);

}  // namespace qkd
