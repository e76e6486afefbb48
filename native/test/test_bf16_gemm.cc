// Checks qkd::bf16_gemm against a double-precision loop over the widened A
// and the rounded B, on the dot-product path (when the CPU has AVX-512 BF16)
// and the widening fallback on every ISA path: both transposes of A, odd K
// (a half k-pair), edge tiles in M and N, padded leading dimensions, one
// and all threads, K split between threads, accumulation into C. Also checks that the padding of C is not touched and the
// rounding of B (nearest even, NaN quiet).
//
// Build and run (from native/):
//   g++ -O2 -std=c++17 -pthread -Ikernels test/test_bf16_gemm.cc kernels/*.cc -o /tmp/test_bf16_gemm
//   /tmp/test_bf16_gemm
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu.h"
#include "gemm_bf16.h"

namespace {

int g_failures = 0;
int g_checks = 0;

struct Case {
  bool trans;
  int64_t m, n, k, pad;
  int threads;
  bool accumulate = false;
};

// max |C − ref| / Σ|a·b| over C, or +Inf when the padding of C changed.
double run_case(const Case& t, qkd::Isa isa, bool dot, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t a_rows = t.trans ? t.k : t.m, a_cols = t.trans ? t.m : t.k;
  const int64_t lda = a_cols + t.pad, ldb = t.n + t.pad, ldc = t.n + t.pad;
  std::vector<uint16_t> a(static_cast<size_t>(a_rows * lda + 1));
  std::vector<float> b(static_cast<size_t>(t.k * ldb + 1)), c(static_cast<size_t>(t.m * ldc + 1), 7.0f);
  for (uint16_t& x : a) x = qkd::float_to_bf16_bits(dist(rng));
  for (float& x : b) x = dist(rng);
  if (t.accumulate) {
    for (int64_t r = 0; r < t.m; ++r) {
      for (int64_t col = 0; col < t.n; ++col) c[r * ldc + col] = dist(rng);
    }
  }
  const std::vector<float> c0 = c;
  qkd::Bf16GemmArgs g;
  g.trans_a = t.trans;
  g.m = t.m;
  g.n = t.n;
  g.k = t.k;
  g.a = a.data();
  g.lda = lda;
  g.b = b.data();
  g.ldb = ldb;
  g.c = c.data();
  g.ldc = ldc;
  g.accumulate = t.accumulate;
  qkd::bf16_gemm_with(g, isa, t.threads, dot);
  double worst = 0.0;
  for (int64_t r = 0; r < t.m; ++r) {
    for (int64_t col = 0; col < ldc; ++col) {
      if (col >= t.n) {
        if (c[r * ldc + col] != 7.0f && r * ldc + col < t.m * ldc) return INFINITY;
        continue;
      }
      double sum = t.accumulate ? c0[r * ldc + col] : 0.0, magnitude = 1e-30 + std::fabs(sum);
      for (int64_t p = 0; p < t.k; ++p) {
        const double x = qkd::bf16_bits_to_float(t.trans ? a[p * lda + r] : a[r * lda + p]);
        const double y = qkd::bf16_bits_to_float(qkd::float_to_bf16_bits(b[p * ldb + col]));
        sum += x * y;
        magnitude += std::fabs(x * y);
      }
      const double err = std::fabs(c[r * ldc + col] - sum) / magnitude;
      if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
    }
  }
  return worst;
}

void check(bool ok, const char* what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s\n", what);
  }
}

}  // namespace

int main() {
  check(qkd::float_to_bf16_bits(1.0f) == 0x3f80, "bf16(1)");
  check(qkd::float_to_bf16_bits(1.00390625f) == 0x3f80, "tie rounds to even (down)");
  check(qkd::float_to_bf16_bits(1.01171875f) == 0x3f82, "tie rounds to even (up)");
  check((qkd::float_to_bf16_bits(NAN) & 0x7fc0) == 0x7fc0, "NaN stays a quiet NaN");

  // float_to_bf16 on every path: normal values, ties, subnormals, ±0, ±Inf, NaN, odd lengths.
  {
    std::vector<float> src;
    std::mt19937 values(7);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (int i = 0; i < 1000; ++i) src.push_back(normal(values));
    for (float special : {0.0f, -0.0f, 1.00390625f, 1.01171875f, 1e-40f, -3e-39f, 3.4e38f, INFINITY, -INFINITY, NAN}) {
      src.push_back(special);
    }
    for (qkd::Isa isa : {qkd::Isa::kAvx512, qkd::Isa::kAvx2, qkd::Isa::kPortable}) {
      if (static_cast<int>(isa) > static_cast<int>(qkd::detected_isa())) continue;
      for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{17}, static_cast<int64_t>(src.size())}) {
        std::vector<uint16_t> got(src.size() + 1, 0xabcd);
        qkd::float_to_bf16_with(src.data(), got.data(), n, isa, 2);
        bool same = got[static_cast<size_t>(n)] == 0xabcd;
        for (int64_t i = 0; i < n; ++i) same = same && got[i] == qkd::float_to_bf16_bits(src[i]);
        char what[96];
        std::snprintf(what, sizeof what, "float_to_bf16 %s n=%lld", qkd::isa_name(isa), static_cast<long long>(n));
        check(same, what);
      }
    }
  }

  std::mt19937 rng(12345);
  const Case cases[] = {
      {false, 1, 1, 1, 0, 1},     {true, 1, 1, 1, 0, 1},      {false, 14, 32, 2, 0, 1},
      {true, 14, 32, 2, 0, 1},    {false, 15, 33, 3, 1, 1},   {true, 15, 33, 3, 1, 1},
      {false, 29, 7, 255, 3, 1},  {true, 29, 7, 255, 3, 1},   {false, 100, 64, 257, 0, 2},
      {true, 100, 64, 257, 0, 2}, {false, 300, 40, 1030, 5, 2}, {true, 300, 40, 1030, 5, 2},
      {false, 1000, 32, 513, 0, 2}, {true, 513, 32, 2001, 2, 2}, {false, 64, 96, 4099, 1, 2},
      {true, 100, 40, 3001, 1, 2},  // K ≥ 8·M: the threads split K
      {true, 14, 8, 20000, 0, 2},
      {false, 300, 40, 1030, 5, 2, true},  {true, 300, 40, 1030, 5, 2, true},  // C +=
      {true, 100, 40, 3001, 1, 2, true},   {false, 29, 7, 0, 3, 1, true},
  };
  const qkd::Isa isas[] = {qkd::Isa::kAvx512, qkd::Isa::kAvx2, qkd::Isa::kPortable};
  for (qkd::Isa isa : isas) {
    if (static_cast<int>(isa) > static_cast<int>(qkd::detected_isa())) continue;
    for (int dot = 0; dot < 2; ++dot) {
      if (dot == 1 && !(isa == qkd::Isa::kAvx512 && qkd::cpu_has_avx512_bf16())) continue;
      double worst = 0.0;
      for (const Case& t : cases) {
        const double err = run_case(t, isa, dot == 1, rng);
        char what[160];
        std::snprintf(what, sizeof what, "%s %s trans=%d %lldx%lldx%lld pad %lld threads %d acc %d: error %.3g",
                      qkd::isa_name(isa), dot ? "dot" : "fallback", t.trans, static_cast<long long>(t.m),
                      static_cast<long long>(t.n), static_cast<long long>(t.k), static_cast<long long>(t.pad),
                      t.threads, t.accumulate, err);
        check(err < 1e-5, what);
        if (err > worst) worst = err;
      }
      std::printf("%-8s %-8s worst relative error %.3g\n", qkd::isa_name(isa), dot ? "dot" : "fallback", worst);
    }
  }
  std::printf("%d/%d checks passed\n", g_checks - g_failures, g_checks);
  return g_failures == 0 ? 0 : 1;
}
