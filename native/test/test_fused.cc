// Checks every fused kernel (kernels/fused.h) against a straightforward
// double-precision reference, on every ISA path this CPU has: odd sizes
// (1 … 1000 columns, 1 … 300 rows), every rope style / direction /
// accumulate, skipped (nullptr) gradients, in-place calls, masked scores
// holding NaN (never read), threaded sizes (2048 × 704), and that results are
// bit-identical from run to run and between 1 and 2 threads.
//
// Errors are measured against the magnitude of the terms that make up each
// result (the sum of their absolute values), so a cancelling sum is judged
// by what float inputs allow; "inherent" terms are the rounding of a float
// argument that the interface itself implies (e.g. exp(z − lse) with lse a
// float). The worst error per kernel and path is printed.
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_fused.cc kernels/*.cc -o /tmp/test_fused
//   /tmp/test_fused
#include <algorithm>
#include <cstdarg>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "fused.h"

namespace {

using Floats = std::vector<float>;
constexpr double kTolerance = 1e-5;  // the brief's bound; most kernels stay near 1e-7
const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

int g_checks = 0;
int g_failures = 0;
std::map<std::string, double> g_worst;  // "kernel path" -> worst error seen

// Tracks the worst normalised error of one check.
struct Worst {
  double value = 0.0;
  // |got − want| beyond `inherent`, over `magnitude`; NaN where a number was
  // expected counts as infinitely wrong.
  void add(double got, double want, double magnitude, double inherent = 0.0) {
    double err;
    if (std::isnan(want)) {
      err = std::isnan(got) ? 0.0 : INFINITY;
    } else if (std::isinf(want)) {
      err = got == want ? 0.0 : INFINITY;
    } else {
      err = (std::fabs(got - want) - inherent) / (magnitude + 1e-300);
      if (std::isnan(err)) err = INFINITY;
    }
    if (err > value) value = err;
  }
};

void expect(bool ok, qkd::Isa isa, const std::string& what, double detail = 0.0) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %-8s %s (%g)\n", qkd::isa_name(isa), what.c_str(), detail);
  }
}

void expect_error(const Worst& worst, qkd::Isa isa, const std::string& kernel, const std::string& what,
                  double tolerance = kTolerance) {
  double& seen = g_worst[kernel + " " + qkd::isa_name(isa)];
  seen = std::max(seen, worst.value);
  expect(worst.value <= tolerance, isa, kernel + " " + what + ": error", worst.value);
}

std::string describe(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string describe(const char* format, ...) {
  char text[256];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  return text;
}

Floats random_floats(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

bool same_bits(const Floats& a, const Floats& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double sigmoid_ref(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

const int64_t kCols[] = {1, 3, 7, 17, 33, 255, 257, 1000};

// ---- RMSNorm -------------------------------------------------------------------

void check_rmsnorm(qkd::Isa isa, int64_t rows, int64_t cols, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const float spread = cols % 2 == 0 ? 30.0f : 1.5f;
  Floats x = random_floats(rng, rows * cols, -spread, spread), w = random_floats(rng, cols, -2, 2);
  Floats y(rows * cols, kNan), rstd(rows, kNan);
  const float eps = 1e-5f;
  qkd::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, eps, exec);
  Worst wy, ws;
  std::vector<double> s_ref(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double squares = 0.0;
    for (int64_t c = 0; c < cols; ++c) squares += double(x[r * cols + c]) * x[r * cols + c];
    s_ref[r] = 1.0 / std::sqrt(squares / cols + eps);
    ws.add(rstd[r], s_ref[r], s_ref[r]);
    for (int64_t c = 0; c < cols; ++c) {
      const double want = x[r * cols + c] * s_ref[r] * w[c];
      wy.add(y[r * cols + c], want, std::fabs(want));
    }
  }
  const std::string what = describe("rows=%lld cols=%lld threads=%d", (long long)rows, (long long)cols, threads);
  expect_error(ws, isa, "rmsnormForward", what + " rstd", 1e-6);
  expect_error(wy, isa, "rmsnormForward", what + " y", 1e-6);
  // In place gives the same bits.
  Floats in_place = x, rstd2(rows);
  qkd::rmsnorm_forward(in_place.data(), w.data(), in_place.data(), rstd2.data(), rows, cols, eps, exec);
  expect(same_bits(in_place, y) && same_bits(rstd2, rstd), isa, "rmsnormForward in place " + what);

  // Backward, with either gradient skipped.
  const Floats dy = random_floats(rng, rows * cols, -1, 1);
  const Floats dx0 = random_floats(rng, rows * cols, -1, 1), dw0 = random_floats(rng, cols, -1, 1);
  for (int skip = 0; skip < 3; ++skip) {  // 0: both, 1: no dx, 2: no dw
    Floats dx = dx0, dw = dw0;
    qkd::rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), skip == 1 ? nullptr : dx.data(),
                          skip == 2 ? nullptr : dw.data(), rows, cols, exec);
    Worst wdx, wdw;
    std::vector<double> dw_sum(cols, 0.0), dw_mag(cols, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const double s = rstd[r];
      double dot = 0.0, dot_mag = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        const double term = double(dy[r * cols + c]) * w[c] * x[r * cols + c];
        dot += term;
        dot_mag += std::fabs(term);
        dw_sum[c] += double(dy[r * cols + c]) * x[r * cols + c] * s;
        dw_mag[c] += std::fabs(double(dy[r * cols + c]) * x[r * cols + c] * s);
      }
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        const double g = double(dy[i]) * w[c];
        const double k = s * s * s / cols;
        const double want = dx0[i] + s * g - k * x[i] * dot;
        wdx.add(dx[i], want, std::fabs(dx0[i]) + std::fabs(s * g) + std::fabs(k * x[i]) * dot_mag);
      }
    }
    for (int64_t c = 0; c < cols; ++c) wdw.add(dw[c], dw0[c] + dw_sum[c], std::fabs(dw0[c]) + dw_mag[c]);
    if (skip == 1) expect(same_bits(dx, dx0), isa, "rmsnormBackward skipped dx untouched " + what);
    else expect_error(wdx, isa, "rmsnormBackward", what + " dx");
    if (skip == 2) expect(same_bits(dw, dw0), isa, "rmsnormBackward skipped dw untouched " + what);
    else expect_error(wdw, isa, "rmsnormBackward", what + " dw");
  }
}

// ---- SwiGLU and sigmoid ---------------------------------------------------------------

void check_sigmoid(qkd::Isa isa) {
  Floats x;
  for (float v = -110.0f; v <= 110.0f; v += 0.00137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.7f, -88.7f, 104.0f, -104.0f, 200.0f, -200.0f, kInf, -kInf}) {
    x.push_back(v);
  }
  Floats s(x.size());
  qkd::sigmoid_with(x.data(), s.data(), x.size(), isa);
  Worst worst;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = sigmoid_ref(x[i]);
    // Results below the normal range are judged in absolute terms.
    worst.add(s[i], want, std::max(want, 1e-37));
  }
  expect_error(worst, isa, "sigmoid", "dense sweep", 1e-6);
  Floats nan_in = {kNan}, nan_out(1);
  qkd::sigmoid_with(nan_in.data(), nan_out.data(), 1, isa);
  expect(std::isnan(nan_out[0]), isa, "sigmoid(NaN) is NaN");
}

void check_swiglu(qkd::Isa isa, int64_t n, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  Floats gate = random_floats(rng, n, -12, 12), up = random_floats(rng, n, -3, 3);
  // Large |g| where sigmoid saturates or exp overflows.
  const float extremes[] = {0.0f, -0.0f, 30.0f, -30.0f, 90.0f, -90.0f, 120.0f, -120.0f, 1e-4f, -1e-4f};
  for (int64_t i = 0; i < n && i < 10; ++i) gate[(i * 7919) % n] = extremes[i];
  Floats y(n, kNan);
  qkd::swiglu_forward(gate.data(), up.data(), y.data(), n, exec);
  Worst wy;
  for (int64_t i = 0; i < n; ++i) {
    const double want = gate[i] * sigmoid_ref(gate[i]) * up[i];
    wy.add(y[i], want, std::max(std::fabs(want), 1e-37));
  }
  const std::string what = describe("n=%lld threads=%d", (long long)n, threads);
  expect_error(wy, isa, "swigluForward", what, 1e-6);
  Floats alias = gate;
  qkd::swiglu_forward(alias.data(), up.data(), alias.data(), n, exec);
  expect(same_bits(alias, y), isa, "swigluForward y = gate in place " + what);

  const Floats dy = random_floats(rng, n, -1, 1);
  const Floats dgate0 = random_floats(rng, n, -1, 1), dup0 = random_floats(rng, n, -1, 1);
  for (int skip = 0; skip < 3; ++skip) {
    Floats dgate = dgate0, dup = dup0;
    qkd::swiglu_backward(gate.data(), up.data(), dy.data(), skip == 1 ? nullptr : dgate.data(),
                         skip == 2 ? nullptr : dup.data(), n, exec);
    Worst wg, wu;
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate[i], s = sigmoid_ref(g), du = double(dy[i]) * up[i];
      const double slope = s * (1.0 + g * (1.0 - s));
      wg.add(dgate[i], dgate0[i] + du * slope,
             std::fabs(dgate0[i]) + std::fabs(du) * (s + std::fabs(g * s * (1.0 - s))));
      wu.add(dup[i], dup0[i] + dy[i] * g * s, std::fabs(dup0[i]) + std::fabs(dy[i] * g * s));
    }
    if (skip == 1) expect(same_bits(dgate, dgate0), isa, "swigluBackward skipped dgate " + what);
    else expect_error(wg, isa, "swigluBackward", what + " dgate", 1e-6);
    if (skip == 2) expect(same_bits(dup, dup0), isa, "swigluBackward skipped dup " + what);
    else expect_error(wu, isa, "swigluBackward", what + " dup", 1e-6);
  }
}

// ---- RoPE ------------------------------------------------------------------------

void check_rope(qkd::Isa isa, int64_t B, int64_t T, int64_t H, int64_t D, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const int64_t n = B * T * H * D, half = D / 2;
  const Floats src = random_floats(rng, n, -2, 2);
  Floats cos(T * half), sin(T * half);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = (t + 3) * std::pow(10000.0, -2.0 * i / D);
      cos[t * half + i] = static_cast<float>(std::cos(angle));
      sin[t * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  const Floats dst0 = random_floats(rng, n, -1, 1);
  for (int interleaved = 0; interleaved < 2; ++interleaved) {
    for (float direction : {1.0f, -1.0f}) {
      for (int accumulate = 0; accumulate < 2; ++accumulate) {
        Floats dst = dst0;
        qkd::RopeArgs a;
        a.src = src.data();
        a.dst = dst.data();
        a.cos = cos.data();
        a.sin = sin.data();
        a.batch = B, a.time = T, a.heads = H, a.dim = D;
        a.interleaved = interleaved == 1;
        a.direction = direction;
        a.accumulate = accumulate == 1;
        qkd::rope(a, exec);
        Worst worst;
        for (int64_t row = 0; row < B * T * H; ++row) {
          const int64_t t = (row / H) % T;
          for (int64_t i = 0; i < half; ++i) {
            const int64_t ia = row * D + (interleaved ? 2 * i : i);
            const int64_t ib = row * D + (interleaved ? 2 * i + 1 : i + half);
            const double c = cos[t * half + i], s = direction * double(sin[t * half + i]);
            const double xa = src[ia], xb = src[ib];
            const double base_a = accumulate ? dst0[ia] : 0.0, base_b = accumulate ? dst0[ib] : 0.0;
            const double magnitude = std::fabs(xa) + std::fabs(xb);
            worst.add(dst[ia], base_a + xa * c - xb * s, std::fabs(base_a) + magnitude);
            worst.add(dst[ib], base_b + xa * s + xb * c, std::fabs(base_b) + magnitude);
          }
        }
        const std::string what =
            describe("B=%lld T=%lld H=%lld D=%lld %s dir=%+g acc=%d threads=%d", (long long)B, (long long)T,
                     (long long)H, (long long)D, interleaved ? "interleaved" : "half", direction, accumulate, threads);
        expect_error(worst, isa, "rope", what, 1e-6);
        if (!accumulate) {
          Floats in_place = src;
          a.src = in_place.data();
          a.dst = in_place.data();
          qkd::rope(a, exec);
          expect(same_bits(in_place, dst), isa, "rope in place " + what);
        }
      }
    }
  }
}

// ---- AdamW ---------------------------------------------------------------------------

void check_adamw(qkd::Isa isa, int64_t n, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const Floats w0 = random_floats(rng, n, -1, 1), g = random_floats(rng, n, -0.1f, 0.1f);
  const Floats m0 = random_floats(rng, n, -0.01f, 0.01f), v0 = random_floats(rng, n, 0, 1e-3f);
  Floats w = w0, m = m0, v = v0;
  qkd::AdamwArgs a;
  a.w = w.data(), a.g = g.data(), a.m = m.data(), a.v = v.data(), a.n = n;
  a.lr = 3e-4f, a.beta1 = 0.9f, a.beta2 = 0.999f, a.eps = 1e-8f, a.shrink = 1.0f - 3e-4f * 0.1f;
  a.c1 = static_cast<float>(1.0 / (1.0 - std::pow(0.9, 7)));
  a.c2 = static_cast<float>(1.0 / (1.0 - std::pow(0.999, 7)));
  qkd::adamw(a, exec);
  Worst wm, wv, ww;
  for (int64_t i = 0; i < n; ++i) {
    const double b1 = a.beta1, b2 = a.beta2;
    const double mi = b1 * m0[i] + (1 - b1) * g[i];
    const double vi = b2 * v0[i] + (1 - b2) * double(g[i]) * g[i];
    const double denom = std::sqrt(vi * a.c2) + a.eps;
    const double step = a.lr * (mi * a.c1) / denom;
    wm.add(m[i], mi, std::fabs(b1 * m0[i]) + std::fabs((1 - b1) * g[i]));
    wv.add(v[i], vi, vi);
    ww.add(w[i], w0[i] * double(a.shrink) - step, std::fabs(w0[i]) + std::fabs(step));
  }
  const std::string what = describe("n=%lld threads=%d", (long long)n, threads);
  expect_error(wm, isa, "adamw", what + " m", 1e-6);
  expect_error(wv, isa, "adamw", what + " v", 1e-6);
  expect_error(ww, isa, "adamw", what + " w", 1e-6);
}

// ---- Cross-entropy -----------------------------------------------------------------------

double lse_ref(const float* z, int64_t n, double scale) {
  double maximum = -INFINITY;
  for (int64_t j = 0; j < n; ++j) maximum = std::max(maximum, z[j] * scale);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(z[j] * scale - maximum);
  return maximum + std::log(sum);
}

void check_cross_entropy(qkd::Isa isa, int64_t rows, int64_t V, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const int32_t ignore = -100;
  Floats z = random_floats(rng, rows * V, -12, 12);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) {
    targets[r] = r % 5 == 3 ? ignore : static_cast<int32_t>(rng() % V);
    // A masked (−Inf) logit that is not the target.
    if (V > 1 && r % 3 == 0) z[r * V + (targets[r] + 1 + V) % V] = -kInf;
  }
  Floats lse(rows, 1234.5f);
  double loss = NAN;
  expect(qkd::cross_entropy_forward(z.data(), targets.data(), lse.data(), rows, V, ignore, &loss, exec), isa,
         "crossEntropyForward returns true");
  Worst wl, wt;
  double total = 0.0, total_mag = 0.0;
  bool ignored_untouched = true;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore) {
      ignored_untouched = ignored_untouched && lse[r] == 1234.5f;
      continue;
    }
    const double l = lse_ref(&z[r * V], V, 1.0);
    wl.add(lse[r], l, std::fabs(l) + 1.0);
    total += l - z[r * V + targets[r]];
    total_mag += std::fabs(l) + std::fabs(z[r * V + targets[r]]) + 1.0;
  }
  wt.add(loss, total, total_mag);
  const std::string what = describe("rows=%lld V=%lld threads=%d", (long long)rows, (long long)V, threads);
  expect_error(wl, isa, "crossEntropyForward", what + " lse", 1e-6);
  expect_error(wt, isa, "crossEntropyForward", what + " loss", 1e-6);
  expect(ignored_untouched, isa, "crossEntropyForward leaves lse of ignored rows " + what);

  const Floats dz0 = random_floats(rng, rows * V, -1e-3f, 1e-3f);
  Floats dz = dz0;
  const float scale = 1.0f / 37.0f;
  qkd::cross_entropy_backward(z.data(), targets.data(), lse.data(), dz.data(), rows, V, ignore, scale, exec);
  Worst wd;
  bool ignored_rows_untouched = true;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < V; ++j) {
      const int64_t i = r * V + j;
      if (targets[r] == ignore) {
        ignored_rows_untouched = ignored_rows_untouched && dz[i] == dz0[i];
        continue;
      }
      const double arg = double(z[i]) - lse[r];
      const double p = std::exp(arg);
      const double hot = j == targets[r] ? 1.0 : 0.0;
      // exp of a float argument z − lse: its rounding is inherent.
      wd.add(dz[i], dz0[i] + scale * (p - hot), std::fabs(dz0[i]) + scale * (p + hot),
             p == 0.0 ? 0.0 : scale * p * std::fabs(arg) * 0x1p-24);
    }
  }
  expect_error(wd, isa, "crossEntropyBackward", what, 1e-6);
  expect(ignored_rows_untouched, isa, "crossEntropyBackward leaves ignored rows " + what);
}

// ---- KL --------------------------------------------------------------------------------

constexpr double kKlFloor = 2.5e-7;

void check_kl(qkd::Isa isa, int64_t rows, int64_t V, float inv_tau, bool close, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  Floats zT = random_floats(rng, rows * V, -8, 8), zS(rows * V);
  for (float& z : zT) z *= 1.0123457f;  // use every mantissa bit
  const Floats noise = random_floats(rng, rows * V, -1, 1);
  for (int64_t i = 0; i < rows * V; ++i) zS[i] = close ? zT[i] + 0.01f * noise[i] + 3.0f : 6.0f * noise[i];
  // A vocabulary entry the teacher masks (pT = 0), sometimes masked by both.
  for (int64_t r = 0; r < rows && V > 1; r += 2) {
    zT[r * V + (r % V)] = -kInf;
    if (r % 4 == 0) zS[r * V + (r % V)] = -kInf;
  }
  Floats lseT(rows, kNan), lseS(rows, kNan), rowKl(rows, kNan);
  double total = NAN;
  expect(qkd::kl_forward(zT.data(), zS.data(), lseT.data(), lseS.data(), rowKl.data(), rows, V, inv_tau, &total, exec),
         isa, "klForward returns true");
  Worst wl, wk, wt;
  double want_total = 0.0, total_mag = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double lt = lse_ref(&zT[r * V], V, inv_tau), ls = lse_ref(&zS[r * V], V, inv_tau);
    wl.add(lseT[r], lt, std::fabs(lt) + 1.0);
    wl.add(lseS[r], ls, std::fabs(ls) + 1.0);
    double kl = 0.0, magnitude = 0.0;
    for (int64_t j = 0; j < V; ++j) {
      const double log_pt = zT[r * V + j] * double(inv_tau) - lt;
      if (log_pt == -INFINITY) continue;
      const double log_ps = zS[r * V + j] * double(inv_tau) - ls;
      const double p = std::exp(log_pt);
      kl += p * (log_pt - log_ps);
      // The float exp of a float argument: ~3e-7·(1 + |log pT|) relative on pT.
      magnitude += p * std::fabs(log_pt - log_ps) * (1.0 + std::fabs(log_pt));
    }
    // lseT − lseS inherits the rounding of the float exp values near 1 that
    // dominate each sum: an absolute error of a few 1e-8 in every row's KL
    // (kKlFloor), whatever its size.
    wk.add(rowKl[r], kl, magnitude, kKlFloor);
    want_total += kl;
    total_mag += magnitude;
  }
  wt.add(total, want_total, total_mag, kKlFloor * rows);
  const std::string what = describe("rows=%lld V=%lld invTau=%g %s threads=%d", (long long)rows, (long long)V,
                                    inv_tau, close ? "close" : "far", threads);
  expect_error(wl, isa, "klForward", what + " lse", 1e-6);
  expect_error(wk, isa, "klForward", what + " rowKl", 1e-6);
  expect_error(wt, isa, "klForward", what + " total", 1e-6);

  const Floats dT0 = random_floats(rng, rows * V, -1e-3f, 1e-3f), dS0 = random_floats(rng, rows * V, -1e-3f, 1e-3f);
  const float g = 0.75f;
  for (int skip = 0; skip < 3; ++skip) {
    Floats dT = dT0, dS = dS0;
    qkd::kl_backward(zT.data(), zS.data(), lseT.data(), lseS.data(), rowKl.data(), skip == 1 ? nullptr : dT.data(),
                     skip == 2 ? nullptr : dS.data(), rows, V, inv_tau, g, exec);
    Worst wdt, wds;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < V; ++j) {
        const int64_t i = r * V + j;
        const double log_pt = zT[i] * double(inv_tau) - lseT[r];
        const double log_ps = zS[i] * double(inv_tau) - lseS[r];
        const double pt = std::exp(log_pt), ps = std::exp(log_ps);
        // Relative error of a float exp(log p): ~(1 + |log p|)·2^-24.
        const double ft = pt == 0.0 ? 0.0 : pt * (1.0 + std::fabs(log_pt));
        const double fs = ps == 0.0 ? 0.0 : ps * (1.0 + std::fabs(log_ps));
        wds.add(dS[i], dS0[i] + g * (ps - pt), std::fabs(dS0[i]) + g * (fs + ft));
        if (pt == 0.0) {
          wdt.add(dT[i], dT0[i], std::fabs(dT0[i]));
        } else {
          const double centred = log_pt - log_ps - rowKl[r];
          wdt.add(dT[i], dT0[i] + g * pt * centred,
                  std::fabs(dT0[i]) + g * ft * (std::fabs(log_pt - log_ps) + std::fabs(rowKl[r])));
        }
      }
    }
    if (skip == 1) expect(same_bits(dT, dT0), isa, "klBackward skipped dT " + what);
    else expect_error(wdt, isa, "klBackward", what + " dT", 1e-6);
    if (skip == 2) expect(same_bits(dS, dS0), isa, "klBackward skipped dS " + what);
    else expect_error(wds, isa, "klBackward", what + " dS", 1e-6);
  }
}

// ---- Causal softmax --------------------------------------------------------------------

void check_causal(qkd::Isa isa, int64_t BH, int64_t T, int64_t S, int64_t offset, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const int64_t n = BH * T * S;
  const auto valid_of = [&](int64_t row) { return std::min<int64_t>(S, offset + row % T + 1); };
  Floats x = random_floats(rng, n, -10, 10);
  for (int64_t row = 0; row < BH * T; ++row) {
    for (int64_t j = valid_of(row); j < S; ++j) x[row * S + j] = kNan;  // garbage: must never be read
  }
  Floats y(n, 7.0f);
  qkd::causal_softmax_forward(x.data(), y.data(), BH, T, S, offset, exec);
  Worst wy;
  bool masked_zero = true;
  for (int64_t row = 0; row < BH * T; ++row) {
    const int64_t valid = valid_of(row);
    const float* xr = &x[row * S];
    double maximum = -INFINITY;
    for (int64_t j = 0; j < valid; ++j) maximum = std::max(maximum, double(xr[j]));
    double sum = 0.0;
    for (int64_t j = 0; j < valid; ++j) sum += std::exp(xr[j] - maximum);
    for (int64_t j = 0; j < valid; ++j) {
      const double want = std::exp(xr[j] - maximum) / sum;
      wy.add(y[row * S + j], want, want, want * std::fabs(xr[j] - maximum) * 0x1p-24);
    }
    for (int64_t j = valid; j < S; ++j) masked_zero = masked_zero && y[row * S + j] == 0.0f;
  }
  const std::string what = describe("BH=%lld T=%lld S=%lld offset=%lld threads=%d", (long long)BH, (long long)T,
                                    (long long)S, (long long)offset, threads);
  expect_error(wy, isa, "causalSoftmaxForward", what, 1e-6);
  expect(masked_zero, isa, "causalSoftmaxForward masked columns are 0 " + what);
  Floats in_place = x;
  qkd::causal_softmax_forward(in_place.data(), in_place.data(), BH, T, S, offset, exec);
  expect(same_bits(in_place, y), isa, "causalSoftmaxForward in place " + what);

  // Backward: garbage in the masked part of y and dy as well.
  Floats yb = y, dy = random_floats(rng, n, -2, 2);
  for (int64_t row = 0; row < BH * T; ++row) {
    for (int64_t j = valid_of(row); j < S; ++j) yb[row * S + j] = dy[row * S + j] = kNan;
  }
  const Floats dx0 = random_floats(rng, n, -1, 1);
  for (int mode = 0; mode < 3; ++mode) {  // 0: accumulate, 1: write, 2: write in place into dy
    const bool accumulate = mode == 0;
    // In place: one buffer holds dy on the way in and dx on the way out.
    Floats dx = mode == 2 ? dy : dx0;
    qkd::causal_softmax_backward(yb.data(), mode == 2 ? dx.data() : dy.data(), dx.data(), BH, T, S, offset,
                                 accumulate, exec);
    Worst wd;
    bool masked_ok = true;
    for (int64_t row = 0; row < BH * T; ++row) {
      const int64_t valid = valid_of(row);
      double dot = 0.0, dot_mag = 0.0;
      for (int64_t j = 0; j < valid; ++j) {
        dot += double(yb[row * S + j]) * dy[row * S + j];
        dot_mag += std::fabs(double(yb[row * S + j]) * dy[row * S + j]);
      }
      for (int64_t j = 0; j < valid; ++j) {
        const int64_t i = row * S + j;
        const double base = accumulate ? dx0[i] : 0.0;
        wd.add(dx[i], base + yb[i] * (dy[i] - dot), std::fabs(base) + yb[i] * (std::fabs(dy[i]) + dot_mag));
      }
      for (int64_t j = valid; j < S; ++j) {
        const int64_t i = row * S + j;
        masked_ok = masked_ok && (accumulate ? std::memcmp(&dx[i], &dx0[i], 4) == 0 : dx[i] == 0.0f);
      }
    }
    const char* names[] = {" accumulate", " write", " in place"};
    expect_error(wd, isa, "causalSoftmaxBackward", what + names[mode], 1e-6);
    expect(masked_ok, isa, std::string("causalSoftmaxBackward masked columns") + names[mode] + " " + what);
  }
}

// ---- Adds ------------------------------------------------------------------------------

void check_adds(qkd::Isa isa, int64_t n, int threads, std::mt19937& rng) {
  const qkd::Exec exec{isa, threads};
  const Floats a = random_floats(rng, n, -1, 1), b = random_floats(rng, n, -1, 1);
  Floats out(n, kNan), dst = a;
  qkd::add(a.data(), b.data(), out.data(), n, exec);
  qkd::add_into(dst.data(), b.data(), n, exec);
  bool exact = true;
  for (int64_t i = 0; i < n; ++i) exact = exact && out[i] == a[i] + b[i];
  const std::string what = describe("n=%lld threads=%d", (long long)n, threads);
  expect(exact, isa, "add is exact " + what);
  expect(same_bits(dst, out), isa, "addInto matches add " + what);
  Floats alias = a;
  qkd::add(alias.data(), b.data(), alias.data(), n, exec);
  expect(same_bits(alias, out), isa, "add with out = a " + what);
  g_worst[std::string("add/addInto ") + qkd::isa_name(isa)] += 0.0;
}

// ---- Determinism at threaded sizes ---------------------------------------------------------

// Runs every kernel at training sizes on `threads` threads; returns all outputs.
std::vector<Floats> run_all(qkd::Isa isa, int threads) {
  const qkd::Exec exec{isa, threads};
  std::mt19937 rng(99);
  const int64_t rows = 2048, cols = 704, V = 256;
  std::vector<Floats> out;
  const Floats x = random_floats(rng, rows * cols, -2, 2), w = random_floats(rng, cols, -1, 1);
  const Floats dy = random_floats(rng, rows * cols, -1, 1);
  Floats y(rows * cols), rstd(rows), dx = dy, dw(cols, 0.5f);
  qkd::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, 1e-5f, exec);
  qkd::rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), rows, cols, exec);
  out.insert(out.end(), {y, rstd, dx, dw});
  Floats sy(rows * cols), dgate = dy, dup = dy;
  qkd::swiglu_forward(x.data(), dy.data(), sy.data(), rows * cols, exec);
  qkd::swiglu_backward(x.data(), dy.data(), y.data(), dgate.data(), dup.data(), rows * cols, exec);
  out.insert(out.end(), {sy, dgate, dup});
  Floats roped = dy, table = random_floats(rng, 256 * 32, -1, 1);
  qkd::RopeArgs ra;
  ra.src = x.data(), ra.dst = roped.data(), ra.cos = table.data(), ra.sin = table.data() + 128 * 32;
  ra.batch = 8, ra.time = 128, ra.heads = 11, ra.dim = 64, ra.interleaved = true, ra.accumulate = true;
  qkd::rope(ra, exec);
  out.push_back(roped);
  Floats pw = x, pm(rows * cols, 0.01f), pv(rows * cols, 0.001f);
  qkd::AdamwArgs aa;
  aa.w = pw.data(), aa.g = dy.data(), aa.m = pm.data(), aa.v = pv.data(), aa.n = rows * cols;
  aa.lr = 1e-3f, aa.beta1 = 0.9f, aa.beta2 = 0.95f, aa.eps = 1e-8f, aa.shrink = 0.9999f, aa.c1 = 1.5f, aa.c2 = 2.5f;
  qkd::adamw(aa, exec);
  out.insert(out.end(), {pw, pm, pv});
  const Floats zT = random_floats(rng, rows * V, -6, 6), zS = random_floats(rng, rows * V, -6, 6);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = r % 9 == 0 ? -1 : static_cast<int32_t>(rng() % V);
  Floats lse(rows), dz = zS, lseT(rows), lseS(rows), kl(rows), dT = zT, dS = zS;
  double loss = 0.0, total = 0.0;
  qkd::cross_entropy_forward(zT.data(), targets.data(), lse.data(), rows, V, -1, &loss, exec);
  qkd::cross_entropy_backward(zT.data(), targets.data(), lse.data(), dz.data(), rows, V, -1, 0.001f, exec);
  qkd::kl_forward(zT.data(), zS.data(), lseT.data(), lseS.data(), kl.data(), rows, V, 0.5f, &total, exec);
  qkd::kl_backward(zT.data(), zS.data(), lseT.data(), lseS.data(), kl.data(), dT.data(), dS.data(), rows, V, 0.5f,
                   0.25f, exec);
  out.insert(out.end(), {lse, dz, lseT, lseS, kl, dT, dS});
  out.push_back({static_cast<float>(loss), static_cast<float>(loss - static_cast<float>(loss)),
                 static_cast<float>(total), static_cast<float>(total - static_cast<float>(total))});
  const int64_t BH = 16, T = 128, S = 128;
  Floats scores = random_floats(rng, BH * T * S, -5, 5), probs(BH * T * S), dscores = scores;
  qkd::causal_softmax_forward(scores.data(), probs.data(), BH, T, S, 0, exec);
  qkd::causal_softmax_backward(probs.data(), scores.data(), dscores.data(), BH, T, S, 0, true, exec);
  out.insert(out.end(), {probs, dscores});
  Floats sum(rows * cols), acc = x;
  qkd::add(x.data(), dy.data(), sum.data(), rows * cols, exec);
  qkd::add_into(acc.data(), dy.data(), rows * cols, exec);
  out.insert(out.end(), {sum, acc});
  return out;
}

void check_determinism(qkd::Isa isa) {
  const std::vector<Floats> first = run_all(isa, 2), second = run_all(isa, 2), single = run_all(isa, 1);
  for (size_t i = 0; i < first.size(); ++i) {
    expect(same_bits(first[i], second[i]), isa, describe("output %zu bit-identical across two 2-thread runs", i));
    expect(same_bits(first[i], single[i]), isa, describe("output %zu bit-identical for 1 and 2 threads", i));
  }
}

}  // namespace

int main() {
  std::vector<qkd::Isa> paths = {qkd::Isa::kPortable};
  if (qkd::detected_isa() >= qkd::Isa::kAvx2) paths.push_back(qkd::Isa::kAvx2);
  if (qkd::detected_isa() >= qkd::Isa::kAvx512) paths.push_back(qkd::Isa::kAvx512);
  std::mt19937 rng(2024);
  for (qkd::Isa isa : paths) {
    const int before = g_failures;
    check_sigmoid(isa);
    for (int64_t cols : kCols) {
      for (int64_t rows : {1, 3, 37}) check_rmsnorm(isa, rows, cols, 1, rng);
      check_swiglu(isa, cols, 1, rng);
      check_swiglu(isa, cols * 3 + 1, 1, rng);
      check_adamw(isa, cols, 1, rng);
      check_adds(isa, cols, 1, rng);
      for (int64_t rows : {1, 5, 33}) check_cross_entropy(isa, rows, cols, 1, rng);
      for (float inv_tau : {1.0f, 0.5f, 2.5f}) {
        check_kl(isa, 3, cols, inv_tau, true, 1, rng);
        check_kl(isa, 4, cols, inv_tau, false, 1, rng);
      }
    }
    check_rmsnorm(isa, 300, 257, 1, rng);
    check_cross_entropy(isa, 300, 33, 1, rng);
    for (int64_t D : {2, 6, 32, 66}) {
      check_rope(isa, 1, 1, 1, D, 1, rng);
      check_rope(isa, 2, 5, 3, D, 1, rng);
    }
    for (int64_t S : {1, 3, 7, 17, 33, 255, 257}) {
      check_causal(isa, 2, S, S, 0, 1, rng);                  // training: T = S
      check_causal(isa, 3, 1, S, S - 1, 1, rng);              // decoding: one query
      if (S > 4) check_causal(isa, 1, S / 3, S, S - S / 3, 1, rng);  // a cached prefix
    }
    // Threaded sizes (≥ 32k elements of work).
    check_rmsnorm(isa, 2048, 704, 2, rng);
    check_swiglu(isa, 2048 * 704 + 5, 2, rng);
    check_adamw(isa, 2048 * 704 + 7, 2, rng);
    check_adds(isa, 2048 * 704 + 3, 2, rng);
    check_rope(isa, 4, 64, 8, 64, 2, rng);
    check_rope(isa, 2, 33, 5, 6, 2, rng);
    check_cross_entropy(isa, 2048, 256, 2, rng);
    check_kl(isa, 2048, 256, 0.5f, true, 2, rng);
    check_causal(isa, 8, 128, 128, 0, 2, rng);
    check_determinism(isa);
    std::printf("%-8s %s\n", qkd::isa_name(isa), g_failures == before ? "ok" : "FAILED");
  }
  std::printf("worst normalised error per kernel and path:\n");
  for (const auto& [name, worst] : g_worst) std::printf("  %-36s %.3g\n", name.c_str(), worst);
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
