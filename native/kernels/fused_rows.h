// The kernels of fused_kernels.h, written once against a vector type V
// (Avx512 in simd_avx512.h, Avx2 in simd_avx2.h, Portable in
// simd_portable.h) and compiled once per path by fused_avx512.cc,
// fused_avx2.cc and fused_portable.cc.
//
// The SIMD files include this header after `#pragma GCC target(...)`, so
// every function here is built for that ISA and inlines V's intrinsics.
// Hence the two rules of this file: everything lives in an anonymous
// namespace (each path keeps its own copy; the linker must never merge an
// AVX-512 body into the portable path), and nothing here defines or
// instantiates a function outside it (no std templates; the .cc includes
// the standard headers before the pragma).
//
// Loops walk a row in steps of V::kWidth; `left` is what remains of the
// row, and V's loads and stores touch only the lanes below it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fused_kernels.h"

namespace qkd {
namespace {

constexpr float kInfinity = __builtin_inff();

// ---- RMSNorm ------------------------------------------------------------------

// y = x·s·w for one row, s = 1/sqrt(mean + eps) (returned, as rstd).
template <class V>
float normalise_row(const float* x, const float* w, float* y, int64_t cols, double mean, float eps) {
  const float s = static_cast<float>(1.0 / std::sqrt(mean + static_cast<double>(eps)));
  const typename V::F sv = V::set1(s);
  for (int64_t c = 0; c < cols; c += V::kWidth) {
    const int64_t left = cols - c;
    V::storen(y + c, left, V::mul(V::mul(V::loadn(x + c, left), sv), V::loadn(w + c, left)));
  }
  return s;
}

template <class V>
void rmsnorm_forward_rows(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t cols,
                          float eps) {
  using D = typename V::D;
  for (int64_t r = 0; r < rows; ++r, x += cols, y += cols) {
    D squares = V::dzero();
    for (int64_t c = 0; c < cols; c += V::kWidth) {
      const D xd = V::to_double(V::loadn(x + c, cols - c));
      squares = V::dfma(xd, xd, squares);
    }
    const double mean = V::dsum(squares) / static_cast<double>(cols);
    rstd[r] = normalise_row<V>(x, w, y, cols, mean, eps);
  }
}

// The residual add and the next norm in one pass over the row: s = x + δ is
// rounded to float and stored, its squares summed (in double) as it is
// written; then y from s, still in L1. The same numbers as add, then
// rmsnorm_forward_rows.
template <class V>
void add_rmsnorm_forward_rows(const float* x, const float* delta, float* s, const float* w, float* y, float* rstd,
                              int64_t rows, int64_t cols, float eps) {
  using F = typename V::F;
  using D = typename V::D;
  for (int64_t r = 0; r < rows; ++r, x += cols, delta += cols, s += cols, y += cols) {
    D squares = V::dzero();
    for (int64_t c = 0; c < cols; c += V::kWidth) {
      const int64_t left = cols - c;
      const F sum = V::add(V::loadn(x + c, left), V::loadn(delta + c, left));
      V::storen(s + c, left, sum);
      const D sd = V::to_double(V::loadn(s + c, left));
      squares = V::dfma(sd, sd, squares);
    }
    rstd[r] = normalise_row<V>(s, w, y, cols, V::dsum(squares) / static_cast<double>(cols), eps);
  }
}

// One pass over x and dy for dw and the row's Σ g·x, a second for dx (the
// row is then in L1).
template <class V>
void rmsnorm_backward_rows(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                           double* dw_partial, int64_t rows, int64_t cols) {
  using F = typename V::F;
  using D = typename V::D;
  for (int64_t r = 0; r < rows; ++r, x += cols, dy += cols) {
    const float s = rstd[r];
    const F sv = V::set1(s);
    D dot = V::dzero();
    for (int64_t c = 0; c < cols; c += V::kWidth) {
      const int64_t left = cols - c;
      const F xv = V::loadn(x + c, left);
      const F dyv = V::loadn(dy + c, left);
      if (dw_partial != nullptr) {
        const D product = V::to_double(V::mul(V::mul(dyv, xv), sv));
        V::dstoren(dw_partial + c, left, V::dadd(V::dloadn(dw_partial + c, left), product));
      }
      if (dx != nullptr) dot = V::dfma(V::to_double(V::mul(dyv, V::loadn(w + c, left))), V::to_double(xv), dot);
    }
    if (dx == nullptr) continue;
    const double sd = s;
    const F k = V::set1(static_cast<float>(sd * sd * sd * V::dsum(dot) / static_cast<double>(cols)));
    float* dxr = dx + r * cols;
    for (int64_t c = 0; c < cols; c += V::kWidth) {
      const int64_t left = cols - c;
      const F g = V::mul(V::loadn(dy + c, left), V::loadn(w + c, left));
      const F out = V::fmadd(sv, g, V::loadn(dxr + c, left));
      V::storen(dxr + c, left, V::fnmadd(k, V::loadn(x + c, left), out));
    }
  }
}

// ---- SwiGLU -----------------------------------------------------------------

template <class V>
void swiglu_forward_range(const float* gate, const float* up, float* y, int64_t n) {
  using F = typename V::F;
  for (int64_t i = 0; i < n; i += V::kWidth) {
    const int64_t left = n - i;
    const F g = V::loadn(gate + i, left);
    F sig, one_minus_sig;
    V::sigmoid_parts(g, &sig, &one_minus_sig);
    V::storen(y + i, left, V::mul(V::mul(g, sig), V::loadn(up + i, left)));
  }
}

template <class V>
void swiglu_backward_range(const float* gate, const float* up, const float* dy, float* dgate, float* dup,
                           int64_t n) {
  using F = typename V::F;
  const F one = V::set1(1.0f);
  for (int64_t i = 0; i < n; i += V::kWidth) {
    const int64_t left = n - i;
    const F g = V::loadn(gate + i, left);
    const F d = V::loadn(dy + i, left);
    F sig, one_minus_sig;
    V::sigmoid_parts(g, &sig, &one_minus_sig);
    if (dgate != nullptr) {
      // silu'(g) = sigmoid(g)·(1 + g·(1 − sigmoid(g)))
      const F slope = V::mul(sig, V::fmadd(g, one_minus_sig, one));
      const F du = V::mul(d, V::loadn(up + i, left));
      V::storen(dgate + i, left, V::fmadd(du, slope, V::loadn(dgate + i, left)));
    }
    if (dup != nullptr) V::storen(dup + i, left, V::fmadd(d, V::mul(g, sig), V::loadn(dup + i, left)));
  }
}

// ---- Rotary position embedding --------------------------------------------------

// Pairs (i, i + D/2): both halves are contiguous, so whole vectors rotate.
template <class V>
void rotate_half(const float* src, float* dst, const float* cos, const float* sin, int64_t half,
                 float direction, bool accumulate) {
  using F = typename V::F;
  const F sign = V::set1(direction);
  for (int64_t i = 0; i < half; i += V::kWidth) {
    const int64_t left = half - i;
    const F a = V::loadn(src + i, left);
    const F b = V::loadn(src + half + i, left);
    const F c = V::loadn(cos + i, left);
    const F s = V::mul(V::loadn(sin + i, left), sign);
    F a2 = V::fnmadd(b, s, V::mul(a, c));
    F b2 = V::fmadd(a, s, V::mul(b, c));
    if (accumulate) {
      a2 = V::add(V::loadn(dst + i, left), a2);
      b2 = V::add(V::loadn(dst + half + i, left), b2);
    }
    V::storen(dst + i, left, a2);
    V::storen(dst + half + i, left, b2);
  }
}

// Pairs (2i, 2i+1): with v = [a0, b0, a1, b1, ...], the rotation is
// v·[c0, c0, c1, c1, ...] + swap(v)·[−s0, s0, −s1, s1, ...].
template <class V>
void rotate_interleaved(const float* src, float* dst, const float* cos, const float* sin, int64_t dim,
                        float direction, bool accumulate) {
  if constexpr (V::kWidth == 1) {
    for (int64_t i = 0; i < dim / 2; ++i) {
      const float a = src[2 * i], b = src[2 * i + 1];
      const float c = cos[i], s = direction * sin[i];
      const float a2 = a * c - b * s, b2 = a * s + b * c;
      dst[2 * i] = accumulate ? dst[2 * i] + a2 : a2;
      dst[2 * i + 1] = accumulate ? dst[2 * i + 1] + b2 : b2;
    }
  } else {
    using F = typename V::F;
    const F signs = V::pair_signs(-direction, direction);
    for (int64_t j = 0; j < dim; j += V::kWidth) {
      const int64_t left = dim - j;  // even, like j
      const F v = V::loadn(src + j, left);
      const F c = V::load_dup_pairs(cos + j / 2, left / 2);
      const F s = V::mul(V::load_dup_pairs(sin + j / 2, left / 2), signs);
      F out = V::fmadd(V::swap_pairs(v), s, V::mul(v, c));
      if (accumulate) out = V::add(V::loadn(dst + j, left), out);
      V::storen(dst + j, left, out);
    }
  }
}

template <class V>
void rope_rows(const RopeArgs& a, int64_t first_row, int64_t last_row) {
  const int64_t half = a.dim / 2;
  for (int64_t row = first_row; row < last_row; ++row) {
    const int64_t t = (row / a.heads) % a.time;
    const float* src = a.src + row * a.dim;
    float* dst = a.dst + row * a.dim;
    if (a.interleaved) {
      rotate_interleaved<V>(src, dst, a.cos + t * half, a.sin + t * half, a.dim, a.direction, a.accumulate);
    } else {
      rotate_half<V>(src, dst, a.cos + t * half, a.sin + t * half, half, a.direction, a.accumulate);
    }
  }
}

// ---- AdamW ----------------------------------------------------------------------

template <class V>
void adamw_range(const AdamwArgs& a, float one_minus_beta1, float one_minus_beta2, int64_t first, int64_t last) {
  using F = typename V::F;
  const F beta1 = V::set1(a.beta1), beta2 = V::set1(a.beta2);
  const F keep1 = V::set1(one_minus_beta1), keep2 = V::set1(one_minus_beta2);
  const F lr = V::set1(a.lr), eps = V::set1(a.eps), shrink = V::set1(a.shrink);
  const F c1 = V::set1(a.c1), c2 = V::set1(a.c2);
  for (int64_t i = first; i < last; i += V::kWidth) {
    const int64_t left = last - i;
    const F g = V::loadn(a.g + i, left);
    const F m = V::fmadd(beta1, V::loadn(a.m + i, left), V::mul(keep1, g));
    const F v = V::fmadd(beta2, V::loadn(a.v + i, left), V::mul(V::mul(keep2, g), g));
    V::storen(a.m + i, left, m);
    V::storen(a.v + i, left, v);
    const F step = V::div(V::mul(m, c1), V::add(V::sqrt(V::mul(v, c2)), eps));
    V::storen(a.w + i, left, V::fnmadd(lr, step, V::mul(V::loadn(a.w + i, left), shrink)));
  }
}

// ---- Log-sum-exp, cross-entropy ---------------------------------------------------

// log Σ exp(z[0..n)) in double, shifted by the maximum. A row of all −Inf
// gives −Inf; NaN (or +Inf) anywhere gives NaN.
template <class V>
double log_sum_exp(const float* z, int64_t n) {
  using F = typename V::F;
  using D = typename V::D;
  const F minus_inf = V::set1(-kInfinity);
  F maxima = minus_inf;
  for (int64_t c = 0; c < n; c += V::kWidth) maxima = V::max(maxima, V::loadn_fill(z + c, n - c, minus_inf));
  const float maximum = V::reduce_max(maxima);
  if (maximum == -kInfinity) return -static_cast<double>(kInfinity);
  // A NaN that max() skipped still reaches the sum through exp.
  const F shift = V::set1(maximum);
  D sum = V::dzero();
  for (int64_t c = 0; c < n; c += V::kWidth) {
    sum = V::dadd(sum, V::to_double(V::exp(V::sub(V::loadn_fill(z + c, n - c, minus_inf), shift))));
  }
  return static_cast<double>(maximum) + std::log(V::dsum(sum));
}

template <class V>
void cross_entropy_forward_rows(const float* logits, const int32_t* targets, float* lse, double* row_loss,
                                int64_t rows, int64_t vocab, int32_t ignore_index) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t target = targets[r];
    if (target == ignore_index) {
      row_loss[r] = 0.0;
      continue;
    }
    const float* z = logits + r * vocab;
    const double l = log_sum_exp<V>(z, vocab);
    lse[r] = static_cast<float>(l);
    row_loss[r] = l - static_cast<double>(z[target]);
  }
}

template <class V>
void cross_entropy_backward_rows(const float* logits, const int32_t* targets, const float* lse, float* dz,
                                 int64_t rows, int64_t vocab, int32_t ignore_index, float scale) {
  using F = typename V::F;
  const F sc = V::set1(scale);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t target = targets[r];
    if (target == ignore_index) continue;
    const float* z = logits + r * vocab;
    float* d = dz + r * vocab;
    const F l = V::set1(lse[r]);
    for (int64_t c = 0; c < vocab; c += V::kWidth) {
      const int64_t left = vocab - c;
      V::storen(d + c, left, V::fmadd(sc, V::exp(V::sub(V::loadn(z + c, left), l)), V::loadn(d + c, left)));
    }
    d[target] -= scale;
  }
}

// ---- KL divergence --------------------------------------------------------------

// log pT − log pS = (zT − zS)·invTau − (lseT − lseS) is formed in double
// from the float inputs: for nearby distributions the float difference of
// the two log-probabilities would lose most of the (small) result.
template <class V>
void kl_forward_rows(const float* zT, const float* zS, float* lseT, float* lseS, float* rowKl, double* row_kl,
                     int64_t rows, int64_t vocab, float inv_tau) {
  using F = typename V::F;
  using D = typename V::D;
  const F inv = V::set1(inv_tau);
  const D inv_d = V::dset1(inv_tau);
  const F minus_inf = V::set1(-kInfinity);
  for (int64_t r = 0; r < rows; ++r) {
    const float* t = zT + r * vocab;
    const float* s = zS + r * vocab;
    F max_t = minus_inf, max_s = minus_inf;
    for (int64_t c = 0; c < vocab; c += V::kWidth) {
      const int64_t left = vocab - c;
      max_t = V::max(max_t, V::mul(V::loadn_fill(t + c, left, minus_inf), inv));
      max_s = V::max(max_s, V::mul(V::loadn_fill(s + c, left, minus_inf), inv));
    }
    // exp(z·invTau − max) with one rounding of the argument.
    const float top_t = V::reduce_max(max_t), top_s = V::reduce_max(max_s);
    const F shift_t = V::set1(-top_t), shift_s = V::set1(-top_s);
    D sum_t = V::dzero(), sum_s = V::dzero();
    for (int64_t c = 0; c < vocab; c += V::kWidth) {
      const int64_t left = vocab - c;
      sum_t = V::dadd(sum_t, V::to_double(V::exp(V::fmadd(V::loadn_fill(t + c, left, minus_inf), inv, shift_t))));
      sum_s = V::dadd(sum_s, V::to_double(V::exp(V::fmadd(V::loadn_fill(s + c, left, minus_inf), inv, shift_s))));
    }
    const double total_t = V::dsum(sum_t), total_s = V::dsum(sum_s);
    const double lse_t = static_cast<double>(top_t) + std::log(total_t);
    const double lse_s = static_cast<double>(top_s) + std::log(total_s);
    lseT[r] = static_cast<float>(lse_t);
    lseS[r] = static_cast<float>(lse_s);
    // pT = exp(zT·invTau − max)/Σ; each term pT·(log pT − log pS).
    const F normalise_t = V::set1(static_cast<float>(1.0 / total_t));
    const D lse_gap = V::dset1(lse_t - lse_s);
    D kl = V::dzero();
    for (int64_t c = 0; c < vocab; c += V::kWidth) {
      const int64_t left = vocab - c;
      const F tv = V::loadn_fill(t + c, left, minus_inf);  // past the row: pT = 0
      const F sv = V::loadn(s + c, left);
      const F p_t = V::mul(V::exp(V::fmadd(tv, inv, shift_t)), normalise_t);
      const D log_ratio = V::dsub(V::dmul(V::dsub(V::to_double(tv), V::to_double(sv)), inv_d), lse_gap);
      kl = V::dadd(kl, V::to_double(V::zero_where_zero(p_t, V::mul(p_t, V::to_float(log_ratio)))));
    }
    const double row = V::dsum(kl);
    rowKl[r] = static_cast<float>(row);
    row_kl[r] = row;
  }
}

template <class V>
void kl_backward_rows(const float* zT, const float* zS, const float* lseT, const float* lseS, const float* rowKl,
                      float* dT, float* dS, int64_t rows, int64_t vocab, float inv_tau, float g) {
  using F = typename V::F;
  using D = typename V::D;
  const F inv = V::set1(inv_tau);
  const D inv_d = V::dset1(inv_tau);
  const F gv = V::set1(g);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * vocab;
    const float* t = zT + at;
    const float* s = zS + at;
    const F minus_lse_t = V::set1(-lseT[r]), minus_lse_s = V::set1(-lseS[r]);
    // log pT − log pS − KL = (zT − zS)·invTau − (lseT − lseS + KL); rowKl
    // is only read for dT.
    const double kl = dT != nullptr ? static_cast<double>(rowKl[r]) : 0.0;
    const D offset = V::dset1(static_cast<double>(lseT[r]) - static_cast<double>(lseS[r]) + kl);
    for (int64_t c = 0; c < vocab; c += V::kWidth) {
      const int64_t left = vocab - c;
      const F tv = V::loadn(t + c, left);
      const F sv = V::loadn(s + c, left);
      const F p_t = V::exp(V::fmadd(tv, inv, minus_lse_t));
      if (dS != nullptr) {
        const F p_s = V::exp(V::fmadd(sv, inv, minus_lse_s));
        V::storen(dS + at + c, left, V::fmadd(gv, V::sub(p_s, p_t), V::loadn(dS + at + c, left)));
      }
      if (dT != nullptr) {
        const F centred = V::to_float(V::dsub(V::dmul(V::dsub(V::to_double(tv), V::to_double(sv)), inv_d), offset));
        const F term = V::zero_where_zero(p_t, V::mul(V::mul(gv, p_t), centred));
        V::storen(dT + at + c, left, V::add(V::loadn(dT + at + c, left), term));
      }
    }
  }
}

// ---- Causal softmax backward ---------------------------------------------------------

template <class V>
void causal_softmax_backward_rows(const float* y, const float* dy, float* dx, int64_t first_row, int64_t last_row,
                                  int64_t time, int64_t keys, int64_t offset, bool accumulate) {
  using F = typename V::F;
  using D = typename V::D;
  for (int64_t row = first_row; row < last_row; ++row) {
    const int64_t wanted = offset + row % time + 1;
    const int64_t valid = wanted < keys ? wanted : keys;
    const float* yr = y + row * keys;
    const float* dyr = dy + row * keys;
    float* dxr = dx + row * keys;
    // The whole dot product comes first: dx may be dy.
    D dot = V::dzero();
    for (int64_t c = 0; c < valid; c += V::kWidth) {
      const int64_t left = valid - c;
      dot = V::dfma(V::to_double(V::loadn(yr + c, left)), V::to_double(V::loadn(dyr + c, left)), dot);
    }
    const F dv = V::set1(static_cast<float>(V::dsum(dot)));
    for (int64_t c = 0; c < valid; c += V::kWidth) {
      const int64_t left = valid - c;
      const F grad = V::sub(V::loadn(dyr + c, left), dv);
      const F base = accumulate ? V::loadn(dxr + c, left) : V::zero();
      V::storen(dxr + c, left, V::fmadd(V::loadn(yr + c, left), grad, base));
    }
    if (!accumulate) {
      for (int64_t c = valid; c < keys; c += V::kWidth) V::storen(dxr + c, keys - c, V::zero());
    }
  }
}

// ---- Adds, sigmoid ----------------------------------------------------------------

template <class V>
void add_into_range(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += V::kWidth) {
    V::storen(dst + i, n - i, V::add(V::loadn(dst + i, n - i), V::loadn(src + i, n - i)));
  }
}

template <class V>
void add_range(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += V::kWidth) {
    V::storen(out + i, n - i, V::add(V::loadn(a + i, n - i), V::loadn(b + i, n - i)));
  }
}

template <class V>
void sigmoid_range(const float* x, float* sig, int64_t n) {
  for (int64_t i = 0; i < n; i += V::kWidth) {
    typename V::F s, one_minus_s;
    V::sigmoid_parts(V::loadn(x + i, n - i), &s, &one_minus_s);
    V::storen(sig + i, n - i, s);
  }
}

// ---- Fake quantization ---------------------------------------------------------------
//
// Exactness: the result must equal the TypeScript reference bit for bit,
// so the arithmetic is the reference's own. Each float lane is widened to
// double, divided by the scale (a true division, not a reciprocal), rounded
// half to even, offset by the zero point, clamped to [qmin, qmax] (a NaN q
// gives qmax, as `q < qmin ? qmin : qmax` does), and (qc − zero)·scale is
// rounded to float once. Clamping with min/max instead of the reference's
// selection can differ only in the sign of a zero qc, which occurs only with
// zero = −0 and then vanishes in qc − zero (+0 either way). The minimum and
// maximum are exact in float (they are inputs) and order-free: only the sign
// of a zero bound could depend on the order, and it cannot change a result
// (see fake_quant_step).

// One group's scale, zero point and integer range from its float minimum
// and maximum (scalar double; the same IEEE operations on every path).
FakeQuantStep fake_quant_step(float lo_f, float hi_f, const FakeQuantArgs& args) {
  // The reference rounds lo·r and hi·r to double before subtracting them;
  // volatile keeps a build with FMA (the AVX2 / AVX-512 paths, which GCC
  // contracts by default) from fusing one product into the subtraction.
  volatile double lo_v = static_cast<double>(lo_f) * args.clip_ratio;
  volatile double hi_v = static_cast<double>(hi_f) * args.clip_ratio;
  const double lo = lo_v, hi = hi_v;
  FakeQuantStep step;
  if (args.symmetric) {
    const double qmax = static_cast<double>((1 << (args.bits - 1)) - 1);
    const double a = std::fabs(lo), b = std::fabs(hi);  // never NaN: lo, hi are finite or ±Inf
    step.scale = (a < b ? b : a) / qmax;
    step.zero = 0.0;
    step.qmin = -static_cast<double>(1 << (args.bits - 1));
    step.qmax = qmax;
  } else {
    const double qmax = static_cast<double>((1 << args.bits) - 1);
    step.scale = (hi - lo) / qmax;
    // The sign of a zero `zero` (lo = ±0) cannot show in a result: q = r + zero
    // is then r or +0, and (qc − zero)·scale of a zero qc is +0 either way.
    step.zero = step.scale > 0.0 ? std::nearbyint(-lo / step.scale) : 0.0;
    step.qmin = 0.0;
    step.qmax = qmax;
  }
  step.copy = !(step.scale > 0.0) || !std::isfinite(step.scale);
  return step;
}

template <class V>
void fake_quant_minmax_range(const float* w, int64_t n, float* lo_out, float* hi_out) {
  using F = typename V::F;
  // Lanes past the end load as NaN, which min/max skip like a NaN weight:
  // min(v, lo) and max(v, hi) return their second operand for a NaN v.
  const F nan = V::set1(__builtin_nanf(""));
  F lo = V::set1(__builtin_inff()), hi = V::set1(-__builtin_inff());
  for (int64_t i = 0; i < n; i += V::kWidth) {
    const F v = V::loadn_fill(w + i, n - i, nan);
    lo = V::min(v, lo);
    hi = V::max(v, hi);
  }
  *lo_out = V::reduce_min(lo);
  *hi_out = V::reduce_max(hi);
}

template <class V>
void fake_quant_apply_range(const float* w, float* out, uint8_t* mask, int64_t n, const FakeQuantStep& step) {
  using D = typename V::D;
  using DM = typename V::DM;
  if (step.copy) {
    if (out != w) {
      for (int64_t i = 0; i < n; i += V::kWidth) V::storen(out + i, n - i, V::loadn(w + i, n - i));
    }
    if (mask != nullptr) std::memset(mask, 1, static_cast<size_t>(n));
    return;
  }
  const D scale = V::dset1(step.scale), zero = V::dset1(step.zero);
  const D qmin = V::dset1(step.qmin), qmax = V::dset1(step.qmax);
  for (int64_t i = 0; i < n; i += V::kWidth) {
    const int64_t left = n - i;
    const D x = V::to_double(V::loadn(w + i, left));
    const D q = V::dadd(V::dround(V::ddiv(x, scale)), zero);
    // min(q, qmax) is qmax for a NaN q; then max(·, qmin). q is inside
    // exactly where clamping leaves it alone (never for NaN).
    const D clamped = V::dmax(V::dmin(q, qmax), qmin);
    const DM inside = V::deq(clamped, q);
    V::storen(out + i, left, V::to_float(V::dmul(V::dsub(clamped, zero), scale)));
    if (mask != nullptr) V::store_flags(mask + i, left, inside);
  }
}

// Groups are taken in batches: first the minima, maxima and parameters of
// the batch (short independent chains the CPU overlaps), then the elements.
template <class V>
void fake_quant_groups_range(const FakeQuantArgs& args, int64_t span, int64_t first_group, int64_t last_group) {
  constexpr int64_t kBatch = 8;
  const int64_t cols = args.cols;
  const int64_t per_row = (cols + span - 1) / span;
  int64_t row = first_group / per_row, index = first_group % per_row;
  FakeQuantStep steps[kBatch];
  int64_t starts[kBatch], lengths[kBatch];
  for (int64_t g = first_group; g < last_group; g += kBatch) {
    const int64_t count = last_group - g < kBatch ? last_group - g : kBatch;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t begin = index * span;
      lengths[k] = cols - begin < span ? cols - begin : span;
      starts[k] = row * cols + begin;
      float lo, hi;
      fake_quant_minmax_range<V>(args.w + starts[k], lengths[k], &lo, &hi);
      steps[k] = fake_quant_step(lo, hi, args);
      if (++index == per_row) index = 0, ++row;
    }
    for (int64_t k = 0; k < count; ++k) {
      const int64_t at = starts[k];
      fake_quant_apply_range<V>(args.w + at, args.out + at, args.mask == nullptr ? nullptr : args.mask + at,
                                lengths[k], steps[k]);
    }
  }
}

// Where the flag is 0, dw keeps its bits (no + 0, which would turn −0 into
// +0, and no NaN from dy).
template <class V>
void fake_quant_backward_range(const float* dy, const uint8_t* mask, float* dw, int64_t n) {
  using F = typename V::F;
  for (int64_t i = 0; i < n; i += V::kWidth) {
    const int64_t left = n - i;
    const F old = V::loadn(dw + i, left);
    const F sum = V::add(old, V::loadn(dy + i, left));
    V::storen(dw + i, left, V::select(V::load_flags(mask + i, left), old, sum));
  }
}

// The table of one path; constexpr, so that it is built by the compiler and
// no code of the path runs to build it.
template <class V>
constexpr FusedKernels make_fused_kernels() {
  return FusedKernels{
      rmsnorm_forward_rows<V>,
      add_rmsnorm_forward_rows<V>,
      rmsnorm_backward_rows<V>,
      swiglu_forward_range<V>,
      swiglu_backward_range<V>,
      rope_rows<V>,
      adamw_range<V>,
      cross_entropy_forward_rows<V>,
      cross_entropy_backward_rows<V>,
      kl_forward_rows<V>,
      kl_backward_rows<V>,
      causal_softmax_backward_rows<V>,
      add_into_range<V>,
      add_range<V>,
      sigmoid_range<V>,
      fake_quant_step,
      fake_quant_minmax_range<V>,
      fake_quant_apply_range<V>,
      fake_quant_groups_range<V>,
      fake_quant_backward_range<V>,
  };
}

}  // namespace
}  // namespace qkd
