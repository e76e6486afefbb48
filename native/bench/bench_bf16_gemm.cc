// GFLOPS of the bf16 GEMM (dot path and widening fallback) next to the
// float32 SGEMM on the same shapes: the randomised-SVD passes of the
// profiler (a weight times a thin block, and its transpose).
//
// Build and run (from the repository root):
//   g++ -O3 -std=c++17 -pthread -Inative/kernels native/bench/bench_bf16_gemm.cc native/kernels/*.cc -o /tmp/bench_bf16_gemm
//   /tmp/bench_bf16_gemm                       # default shapes
//   /tmp/bench_bf16_gemm n:32000x32x1024 t:1024x32x32000   # n: C = A·B, t: C = Aᵀ·B (M×N×K)
//   BENCH_THREADS=1 /tmp/bench_bf16_gemm
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "gemm_bf16.h"
#include "sgemm.h"
#include "thread_pool.h"

namespace {

struct Shape {
  bool trans;
  int64_t m, n, k;
};

template <typename F>
double best_seconds(F&& run, double budget = 0.4) {
  run();
  double best = 1e30, spent = 0.0;
  int reps = 0;
  while (reps < 3 || (spent < budget && reps < 200)) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    spent += s;
    ++reps;
  }
  return best;
}

void bench(const Shape& s, int threads) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  const int64_t a_elems = s.m * s.k;
  std::vector<uint16_t> a16(a_elems);
  std::vector<float> a32(a_elems), b(s.k * s.n), c(s.m * s.n);
  for (int64_t i = 0; i < a_elems; ++i) {
    a16[i] = qkd::float_to_bf16_bits(dist(rng));
    a32[i] = qkd::bf16_bits_to_float(a16[i]);
  }
  for (float& x : b) x = dist(rng);
  qkd::Bf16GemmArgs g;
  g.trans_a = s.trans;
  g.m = s.m;
  g.n = s.n;
  g.k = s.k;
  g.a = a16.data();
  g.lda = s.trans ? s.m : s.k;
  g.b = b.data();
  g.ldb = s.n;
  g.c = c.data();
  g.ldc = s.n;
  qkd::SgemmArgs f;
  f.trans_a = s.trans;
  f.m = s.m;
  f.n = s.n;
  f.k = s.k;
  f.a = a32.data();
  f.lda = g.lda;
  f.b = b.data();
  f.ldb = s.n;
  f.c = c.data();
  f.ldc = s.n;
  const double flops = 2.0 * s.m * s.n * s.k;
  const bool dot = qkd::cpu_has_avx512_bf16();
  const double t_dot = dot ? best_seconds([&] { qkd::bf16_gemm_with(g, qkd::Isa::kAvx512, threads, true); }) : 0.0;
  const double t_fb = best_seconds([&] { qkd::bf16_gemm_with(g, qkd::Isa::kAvx512, threads, false); }, 0.2);
  const double t_f32 = best_seconds([&] { qkd::sgemm_with(f, qkd::Isa::kAvx512, threads); });
  std::printf("%s %6lldx%4lldx%6lld  threads %d  bf16 dot %7.1f GFLOPS (%7.2f ms)  fallback %6.1f  sgemm %6.1f (%7.2f ms)\n",
              s.trans ? "t" : "n", static_cast<long long>(s.m), static_cast<long long>(s.n),
              static_cast<long long>(s.k), threads, dot ? flops / t_dot / 1e9 : 0.0, t_dot * 1e3,
              flops / t_fb / 1e9, flops / t_f32 / 1e9, t_f32 * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Shape> shapes;
  for (int i = 1; i < argc; ++i) {
    Shape s;
    long long m, n, k;
    char kind;
    if (std::sscanf(argv[i], "%c:%lldx%lldx%lld", &kind, &m, &n, &k) != 4) {
      std::fprintf(stderr, "bad shape %s (want n:MxNxK or t:MxNxK)\n", argv[i]);
      return 1;
    }
    s.trans = kind == 't';
    s.m = m;
    s.n = n;
    s.k = k;
    shapes.push_back(s);
  }
  if (shapes.empty()) {
    shapes = {{false, 32000, 32, 1024}, {true, 1024, 32, 32000}, {false, 1024, 32, 1024}, {true, 1024, 32, 1024},
              {false, 2816, 32, 1024},  {true, 1024, 32, 2816},  {false, 1024, 32, 2816}, {true, 2816, 32, 1024}};
  }
  const char* env = std::getenv("BENCH_THREADS");
  std::vector<int> threads;
  if (env != nullptr) {
    threads.push_back(std::atoi(env));
  } else {
    threads = {1, qkd::ThreadPool::shared().size()};
  }
  for (const Shape& s : shapes) {
    for (int t : threads) bench(s, t);
  }
  return 0;
}
