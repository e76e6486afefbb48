// Checks the vectorised exp against std::exp in double, and softmax forward
// and backward against double-precision references, on every ISA path this
// CPU has, single- and multi-threaded, including in-place calls and rows of
// -Infinity / NaN.
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_softmax.cc kernels/*.cc -o /tmp/test_softmax
//   /tmp/test_softmax
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu.h"
#include "softmax.h"

namespace {

int g_checks = 0;
int g_failures = 0;

void expect(bool ok, const char* what, qkd::Isa isa, double detail = 0.0) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s: %s (%g)\n", qkd::isa_name(isa), what, detail);
  }
}

// Max relative error of exp over results in the normal float range, plus
// subnormal results within one subnormal step, plus the special values.
void check_exp(qkd::Isa isa) {
  std::vector<float> x;
  // Every 97th float bit pattern between -87.33 and 88.72, and a random spray.
  const float lo = -87.33f, hi = 88.72f;
  for (float v = lo; v < hi;) {
    x.push_back(v);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits = v < 0 ? bits - 97 : bits + 97;
    if (v < 0 && bits < 0x00800000u) bits = 0;  // crossed zero
    std::memcpy(&v, &bits, 4);
    if (v == 0.0f || (v > 0 && v < 1e-30f)) v = 1e-30f;
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int i = 0; i < 1000000; ++i) x.push_back(dist(rng));
  std::vector<float> y(x.size());
  qkd::exp_with(x.data(), y.data(), static_cast<int64_t>(x.size()), isa);
  double worst = 0.0, worst_at = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    const double err = std::fabs(y[i] - want) / want;
    if (!(err <= worst)) {
      worst = err;
      worst_at = x[i];
    }
  }
  std::printf("%-8s exp: max relative error %.3g at x=%.8g over %zu points\n", qkd::isa_name(isa), worst,
              worst_at, x.size());
  expect(worst <= 1e-6, "exp relative error above 1e-6", isa, worst);

  // Subnormal results: within one step of the subnormal grid.
  double worst_sub = 0.0;
  std::vector<float> xs, ys;
  for (float v = -103.9f; v < -87.4f; v += 0.001f) xs.push_back(v);
  ys.resize(xs.size());
  qkd::exp_with(xs.data(), ys.data(), static_cast<int64_t>(xs.size()), isa);
  for (size_t i = 0; i < xs.size(); ++i) {
    worst_sub = std::max(worst_sub, std::fabs(ys[i] - std::exp(static_cast<double>(xs[i]))));
  }
  expect(worst_sub <= std::numeric_limits<float>::denorm_min(), "exp subnormal results", isa, worst_sub);

  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {-inf, inf, std::nanf(""), -200.0f, 89.0f, 200.0f, 0.0f, -0.0f};
  float out[8];
  qkd::exp_with(specials, out, 8, isa);
  expect(out[0] == 0.0f, "exp(-inf) == 0", isa, out[0]);
  expect(out[1] == inf, "exp(+inf) == inf", isa, out[1]);
  expect(std::isnan(out[2]), "exp(NaN) is NaN", isa, out[2]);
  expect(out[3] == 0.0f, "exp(-200) == 0", isa, out[3]);
  expect(out[4] == inf && out[5] == inf, "exp(89), exp(200) == inf", isa, out[4]);
  expect(out[6] == 1.0f && out[7] == 1.0f, "exp(±0) == 1", isa, out[6]);
}

void reference_forward(const float* x, double* y, int64_t cols) {
  double maximum = -INFINITY;
  for (int64_t c = 0; c < cols; ++c) maximum = std::max(maximum, static_cast<double>(x[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[c] - maximum);
  for (int64_t c = 0; c < cols; ++c) y[c] = std::exp(x[c] - maximum) / sum;
}

void check_forward(qkd::Isa isa, int64_t rows, int64_t cols, float spread, bool in_place, int threads,
                   std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-spread, spread);
  std::vector<float> x(rows * cols), y(rows * cols, NAN);
  for (float& v : x) v = dist(rng);
  // A few -Infinity entries (masked positions) in some rows.
  for (int64_t r = 0; r < rows; r += 3) x[r * cols + (r % cols)] = -INFINITY;
  const std::vector<float> x0 = x;
  float* out = in_place ? x.data() : y.data();
  qkd::softmax_forward_with(x.data(), out, rows, cols, isa, threads);
  std::vector<double> want(cols);
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    reference_forward(x0.data() + r * cols, want.data(), cols);
    double maximum = -INFINITY;
    for (int64_t c = 0; c < cols; ++c) maximum = std::max(maximum, static_cast<double>(x0[r * cols + c]));
    for (int64_t c = 0; c < cols; ++c) {
      // Float kernels round x - max to float first: a relative error of up
      // to |x - max|·2^-24 in the result is inherent, not the kernel's.
      const double inherent = std::fabs(x0[r * cols + c] - maximum) * 0x1p-24;
      const double err = std::fabs(out[r * cols + c] - want[c]) / (want[c] + 1e-30) - inherent;
      const bool tiny = want[c] < 1e-30 && std::fabs(out[r * cols + c]) < 1e-30;
      if (!tiny && !(err <= worst)) worst = err;
    }
  }
  char what[160];
  std::snprintf(what, sizeof what, "softmax forward rows=%lld cols=%lld spread=%g in_place=%d threads=%d",
                (long long)rows, (long long)cols, spread, in_place, threads);
  expect(worst <= 1e-6, what, isa, worst);
}

void check_special_rows(qkd::Isa isa) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t cols : {1, 5, 16, 37}) {
    std::vector<float> x(3 * cols, -inf), y(3 * cols, 123.0f);
    x[cols + cols / 2] = std::nanf("");  // row 1: -inf and a NaN
    for (int64_t c = 0; c < cols; ++c) x[2 * cols + c] = c == cols - 1 ? std::nanf("") : 1.0f;  // row 2
    qkd::softmax_forward_with(x.data(), y.data(), 3, cols, isa, 1);
    bool zeros = true, nan1 = true, nan2 = true;
    for (int64_t c = 0; c < cols; ++c) {
      zeros = zeros && y[c] == 0.0f;
      nan1 = nan1 && std::isnan(y[cols + c]);
      nan2 = nan2 && std::isnan(y[2 * cols + c]);
    }
    expect(zeros, "a row of -Infinity gives zeros", isa, static_cast<double>(cols));
    expect(nan1, "a row of -Infinity and NaN gives NaN", isa, static_cast<double>(cols));
    expect(nan2, "a row with NaN gives NaN", isa, static_cast<double>(cols));
  }
}

void check_backward(qkd::Isa isa, int64_t rows, int64_t cols, bool in_place, int threads, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(rows * cols), y(rows * cols), dy(rows * cols), dx(rows * cols);
  for (float& v : x) v = dist(rng);
  for (float& v : dy) v = dist(rng);
  for (float& v : dx) v = dist(rng);
  qkd::softmax_forward_with(x.data(), y.data(), rows, cols, isa, 1);
  const std::vector<float> dx0 = in_place ? dy : dx;
  float* out = in_place ? dy.data() : dx.data();
  const std::vector<float> dy0 = dy;
  qkd::softmax_backward_with(y.data(), dy.data(), out, rows, cols, isa, threads);
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0.0, magnitude = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      dot += static_cast<double>(y[r * cols + c]) * dy0[r * cols + c];
      magnitude += std::fabs(static_cast<double>(y[r * cols + c]) * dy0[r * cols + c]);
    }
    for (int64_t c = 0; c < cols; ++c) {
      const size_t at = r * cols + c;
      const double want = dx0[at] + y[at] * (dy0[at] - dot);
      const double scale = std::fabs(dx0[at]) + y[at] * (std::fabs(dy0[at]) + magnitude) + 1e-30;
      worst = std::max(worst, std::fabs(out[at] - want) / scale);
    }
  }
  char what[160];
  std::snprintf(what, sizeof what, "softmax backward rows=%lld cols=%lld in_place=%d threads=%d", (long long)rows,
                (long long)cols, in_place, threads);
  expect(worst <= 1e-6, what, isa, worst);
}

}  // namespace

int main() {
  std::vector<qkd::Isa> paths = {qkd::Isa::kPortable};
  if (qkd::detected_isa() >= qkd::Isa::kAvx2) paths.push_back(qkd::Isa::kAvx2);
  if (qkd::detected_isa() >= qkd::Isa::kAvx512) paths.push_back(qkd::Isa::kAvx512);
  std::mt19937 rng(11);
  for (qkd::Isa isa : paths) {
    const int before = g_failures;
    check_exp(isa);
    check_special_rows(isa);
    for (int64_t cols : {1, 2, 7, 8, 15, 16, 17, 33, 100, 1000, 50257}) {
      for (float spread : {1.0f, 30.0f, 200.0f}) {
        const int64_t rows = cols > 1000 ? 3 : 9;
        check_forward(isa, rows, cols, spread, false, 1, rng);
        check_forward(isa, rows, cols, spread, true, 1, rng);
      }
      check_backward(isa, 5, cols, false, 1, rng);
      check_backward(isa, 5, cols, true, 1, rng);
    }
    check_forward(isa, 300, 999, 10.0f, false, 2, rng);  // multi-threaded
    check_forward(isa, 300, 999, 10.0f, true, 2, rng);
    check_backward(isa, 300, 999, false, 2, rng);
    std::printf("%-8s %s\n", qkd::isa_name(isa), g_failures == before ? "ok" : "FAILED");
  }
  std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
