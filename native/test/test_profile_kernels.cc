// Checks the profiler's kernels on every ISA path this CPU has:
//   weight_stats against a plain double loop (float32 and bf16 input, odd
//   shapes, a constant row, 1 and all threads giving identical bits);
//   symmetric_eigenvalues against matrices built from a known spectrum.
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_profile_kernels.cc kernels/*.cc -o /tmp/test_profile_kernels
//   /tmp/test_profile_kernels
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "cpu.h"
#include "gemm_bf16.h"
#include "sym_eig.h"
#include "weight_stats.h"

namespace {

int g_failures = 0;
int g_checks = 0;

void check(bool ok, const char* format, double a = 0, double b = 0) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL ");
    std::printf(format, a, b);
    std::printf("\n");
  }
}

// The definition, one element at a time in double.
qkd::WeightStatsTotals reference(const std::vector<float>& w, int64_t rows, int64_t cols, int bits, double shift,
                                 std::vector<float>* lo, std::vector<float>* hi) {
  qkd::WeightStatsTotals t;
  for (int64_t r = 0; r < rows; ++r) {
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    for (int64_t c = 0; c < cols; ++c) {
      const double x = w[r * cols + c], d = x - shift;
      mn = std::min(mn, w[r * cols + c]);
      mx = std::max(mx, w[r * cols + c]);
      t.s1 += d;
      t.s2 += d * d;
      t.s3 += d * d * d;
      t.s4 += d * d * d * d;
      t.sum_squares += x * x;
    }
    (*lo)[r] = mn;
    (*hi)[r] = mx;
    if (bits == 0) continue;
    const double qmax = (1 << bits) - 1, scale = (static_cast<double>(mx) - mn) / qmax;
    if (!(scale > 0.0) || !std::isfinite(scale)) continue;
    const double zero = std::nearbyint(-static_cast<double>(mn) / scale);
    for (int64_t c = 0; c < cols; ++c) {
      const double x = w[r * cols + c];
      const double q = std::min(qmax, std::max(0.0, std::nearbyint(x / scale) + zero));
      const double e = static_cast<double>(static_cast<float>((q - zero) * scale)) - x;
      t.rtn_error += e * e;
    }
  }
  return t;
}

void test_weight_stats(qkd::Isa isa, std::mt19937& rng) {
  struct Shape {
    int64_t rows, cols;
    int bits;
  };
  const Shape shapes[] = {{1, 1, 4}, {3, 17, 4}, {5, 16, 2}, {64, 1000, 4}, {300, 257, 8}, {7, 70000, 3}, {2, 33, 0}};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Shape& s : shapes) {
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      const int64_t n = s.rows * s.cols;
      std::vector<float> w(n);
      std::vector<uint16_t> w16(n);
      for (int64_t i = 0; i < n; ++i) {
        float x = normal(rng) * 0.05f + 0.3f;
        if (i % 97 == 5) x *= 40.0f;  // outliers
        w16[i] = qkd::float_to_bf16_bits(x);
        w[i] = bf16 ? qkd::bf16_bits_to_float(w16[i]) : x;
      }
      if (s.rows > 2) std::fill(w.begin() + s.cols, w.begin() + 2 * s.cols, 0.25f);  // a constant row
      if (s.rows > 2) {
        for (int64_t c = 0; c < s.cols; ++c) w16[s.cols + c] = qkd::float_to_bf16_bits(0.25f);
      }
      const double shift = 0.29;
      std::vector<float> lo_want(s.rows), hi_want(s.rows), lo(s.rows), hi(s.rows), lo1(s.rows), hi1(s.rows);
      const qkd::WeightStatsTotals want = reference(w, s.rows, s.cols, s.bits, shift, &lo_want, &hi_want);
      qkd::WeightStatsArgs a;
      if (bf16) {
        a.w16 = w16.data();
      } else {
        a.w32 = w.data();
      }
      a.rows = s.rows;
      a.cols = s.cols;
      a.bits = s.bits;
      a.shift = shift;
      a.row_min = lo.data();
      a.row_max = hi.data();
      const qkd::WeightStatsTotals got = qkd::weight_stats_with(a, isa, 64);
      a.row_min = lo1.data();
      a.row_max = hi1.data();
      const qkd::WeightStatsTotals one = qkd::weight_stats_with(a, isa, 1);
      char what[200];
      std::snprintf(what, sizeof what, "weight_stats %s %s %lldx%lld bits %d", qkd::isa_name(isa),
                    bf16 ? "bf16" : "f32", static_cast<long long>(s.rows), static_cast<long long>(s.cols), s.bits);
      check(lo == lo_want && hi == hi_want, "%s: row minimum / maximum", 0, 0);
      if (!(lo == lo_want && hi == hi_want)) std::printf("  (%s)\n", what);
      const double sums[][2] = {{got.s1, want.s1}, {got.s2, want.s2}, {got.s3, want.s3},
                                {got.s4, want.s4}, {got.sum_squares, want.sum_squares}, {got.rtn_error, want.rtn_error}};
      for (int i = 0; i < 6; ++i) {
        // s1 and s3 cancel: compare against the magnitude of their terms.
        const double scale = i == 0 ? std::sqrt(want.s2 * n) : i == 2 ? std::sqrt(want.s2 * want.s4) : std::fabs(sums[i][1]);
        const bool ok = std::fabs(sums[i][0] - sums[i][1]) <= 1e-11 * scale + 1e-300;
        check(ok, "sum %g: got %.17g", i, sums[i][0]);
        if (!ok) std::printf("  (%s, want %.17g)\n", what, sums[i][1]);
      }
      const bool same = std::memcmp(&got, &one, sizeof got) == 0 && lo == lo1 && hi == hi1;
      check(same, "threads change the result %g %g", got.s2, one.s2);
      if (s.bits == 0) check(got.rtn_error == 0.0, "bits 0 skips the error %g", got.rtn_error);
    }
  }
}

void test_eigenvalues(qkd::Isa isa, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  for (int64_t n : {1, 2, 3, 5, 17, 64, 300}) {
    // Q from Gram–Schmidt of a Gaussian matrix; A = Q diag(λ) Qᵀ.
    std::vector<double> q(n * n), lambda(n), a(n * n), got(n);
    for (double& x : q) x = normal(rng);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t k = 0; k < j; ++k) {
        double dot = 0.0;
        for (int64_t i = 0; i < n; ++i) dot += q[i * n + j] * q[i * n + k];
        for (int64_t i = 0; i < n; ++i) q[i * n + j] -= dot * q[i * n + k];
      }
      double norm = 0.0;
      for (int64_t i = 0; i < n; ++i) norm += q[i * n + j] * q[i * n + j];
      for (int64_t i = 0; i < n; ++i) q[i * n + j] /= std::sqrt(norm);
    }
    for (int64_t i = 0; i < n; ++i) lambda[i] = (i % 4 == 1 ? -1.0 : 1.0) * (1.0 + i * 0.37) * (i % 7 == 0 ? 10.0 : 1.0);
    if (n > 5) lambda[3] = lambda[4];  // a repeated eigenvalue
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < n; ++k) s += q[i * n + k] * lambda[k] * q[j * n + k];
        a[i * n + j] = s;
      }
    }
    const bool ok = qkd::symmetric_eigenvalues_with(a.data(), n, n, got.data(), isa);
    check(ok, "eigenvalues converge (n = %g)", static_cast<double>(n));
    std::sort(lambda.begin(), lambda.end(), std::greater<double>());
    double worst = 0.0, biggest = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::fabs(got[i] - lambda[i]));
      biggest = std::max(biggest, std::fabs(lambda[i]));
    }
    check(worst <= 1e-11 * biggest, "eigenvalues n = %g: error %g", static_cast<double>(n), worst);
    // The largest third by bisection.
    const int64_t count = (n + 2) / 3;
    std::vector<double> top(count);
    check(qkd::symmetric_eigenvalues_with(a.data(), n, count, top.data(), isa), "bisection n = %g", static_cast<double>(n));
    double top_worst = 0.0;
    for (int64_t i = 0; i < count; ++i) top_worst = std::max(top_worst, std::fabs(top[i] - lambda[i]));
    check(top_worst <= 1e-11 * biggest, "largest third n = %g: error %g", static_cast<double>(n), top_worst);
  }
  // Rank 2 (the Gram matrix of an exactly low-rank weight): two eigenvalues,
  // the rest zero to rounding; a purely relative deflation test stalls here.
  {
    const int64_t n = 90;
    std::vector<double> a(n * n), got(n), u(n), v(n);
    for (int64_t i = 0; i < n; ++i) {
      u[i] = std::sin(1.0 + i);
      v[i] = std::cos(0.5 * i);
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) a[i * n + j] = 300.0 * u[i] * u[j] + 7.0 * v[i] * v[j];
    }
    const bool ok = qkd::symmetric_eigenvalues_with(a.data(), n, n, got.data(), isa);
    check(ok, "rank-2 matrix converges");
    std::vector<double> top(10);
    check(qkd::symmetric_eigenvalues_with(a.data(), n, 10, top.data(), isa) && std::fabs(top[0] - got[0]) < 1e-11 * got[0] &&
              std::fabs(top[9]) < 1e-10 * got[0], "rank-2 matrix by bisection");
    double tail = 0.0;
    for (int64_t i = 2; i < n; ++i) tail = std::max(tail, std::fabs(got[i]));
    check(tail < 1e-10 * got[0] && got[1] > 1.0, "rank-2 matrix: tail %g, second %g", tail, got[1]);
  }
  // Diagonal, zero and already tridiagonal matrices.
  const double diagonal[9] = {3, 0, 0, 0, -1, 0, 0, 0, 2};
  double out[3];
  check(qkd::symmetric_eigenvalues_with(diagonal, 3, 3, out, isa) && out[0] == 3 && out[1] == 2 && out[2] == -1,
        "diagonal matrix %g %g", out[0], out[2]);
  const double zero[4] = {0, 0, 0, 0};
  check(qkd::symmetric_eigenvalues_with(zero, 2, 2, out, isa) && out[0] == 0 && out[1] == 0, "zero matrix");
  const double nan[4] = {NAN, 0, 1, 1};
  check(!qkd::symmetric_eigenvalues_with(nan, 2, 2, out, isa) && !qkd::symmetric_eigenvalues_with(nan, 2, 1, out, isa),
        "NaN input is refused");
}

}  // namespace

int main() {
  std::mt19937 rng(99);
  const qkd::Isa isas[] = {qkd::Isa::kAvx512, qkd::Isa::kAvx2, qkd::Isa::kPortable};
  for (qkd::Isa isa : isas) {
    if (static_cast<int>(isa) > static_cast<int>(qkd::detected_isa())) continue;
    test_weight_stats(isa, rng);
    test_eigenvalues(isa, rng);
  }
  std::printf("%d/%d checks passed\n", g_checks - g_failures, g_checks);
  return g_failures == 0 ? 0 : 1;
}
