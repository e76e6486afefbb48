// `Portable`, the one-lane "vector" type the fused kernels (fused_rows.h)
// are compiled with on the portable path: plain floats, std::exp (like the
// portable softmax rows), doubles for the double accumulators.
//
// Internal linkage on purpose, as in simd_avx512.h.
#pragma once

#include <cmath>
#include <cstdint>

namespace qkd {
namespace {

struct Portable {
  static constexpr int kWidth = 1;
  using F = float;
  using D = double;

  static F zero() { return 0.0f; }
  static F set1(float v) { return v; }
  // `left` ≥ 1 always holds for one lane.
  static F loadn(const float* p, int64_t /*left*/) { return *p; }
  static F loadn_fill(const float* p, int64_t /*left*/, F /*fill*/) { return *p; }
  static void storen(float* p, int64_t /*left*/, F v) { *p = v; }

  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F sqrt(F a) { return std::sqrt(a); }
  // a·b + c and c − a·b. Baseline x86-64 has no FMA instruction (and
  // std::fma would be a slow library call), but a product of two floats is
  // exact in double: one rounding of the sum, like an FMA up to the rare
  // double rounding. Kernels rely on it, e.g. for exp(z·invTau − max).
  static F fmadd(F a, F b, F c) { return static_cast<float>(double(a) * double(b) + double(c)); }
  static F fnmadd(F a, F b, F c) { return static_cast<float>(double(c) - double(a) * double(b)); }
  // Like maxps: the second operand when either is NaN.
  static F max(F a, F b) { return a > b ? a : b; }
  static float reduce_max(F a) { return a; }
  // Like minps: the second operand when either is NaN.
  static F min(F a, F b) { return a < b ? a : b; }
  static float reduce_min(F a) { return a; }
  static F exp(F x) { return std::exp(x); }
  static F zero_where_zero(F p, F t) { return p != 0.0f ? t : 0.0f; }

  // See Avx512::sigmoid_parts.
  static void sigmoid_parts(F g, F* sig, F* one_minus_sig) {
    const float e = std::exp(-std::fabs(g));
    const float q = 1.0f / (1.0f + e);
    const bool negative = std::signbit(g);
    *sig = negative ? e * q : q;
    *one_minus_sig = negative ? q : e * q;
  }

  static D dzero() { return 0.0; }
  static D dset1(double v) { return v; }
  static D to_double(F v) { return v; }
  static F to_float(D v) { return static_cast<float>(v); }
  static D dadd(D a, D b) { return a + b; }
  static D dsub(D a, D b) { return a - b; }
  static D dmul(D a, D b) { return a * b; }
  static D dfma(D a, D b, D c) { return a * b + c; }
  static double dsum(D a) { return a; }
  static D dloadn(const double* p, int64_t /*left*/) { return *p; }
  static void dstoren(double* p, int64_t /*left*/, D v) { *p = v; }

  using FM = bool;
  using DM = bool;
  static D ddiv(D a, D b) { return a / b; }
  // Ties to even in the default rounding mode.
  static D dround(D a) { return std::nearbyint(a); }
  // Like minpd / maxpd: the second operand when either is NaN.
  static D dmin(D a, D b) { return a < b ? a : b; }
  static D dmax(D a, D b) { return a > b ? a : b; }
  static DM deq(D a, D b) { return a == b; }
  static F select(FM m, F a, F b) { return m ? b : a; }
  static void store_flags(uint8_t* p, int64_t /*left*/, DM m) { *p = m ? 1 : 0; }
  static FM load_flags(const uint8_t* p, int64_t /*left*/) { return *p != 0; }
};

}  // namespace
}  // namespace qkd
