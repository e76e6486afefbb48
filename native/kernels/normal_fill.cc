// See normal_fill.h. The arithmetic mirrors Rng.uniform and Rng.normal
// step for step (the same 53-bit uniform from two 32-bit draws, the same
// Box–Muller pair, cosine first).
#include "normal_fill.h"

#include <cmath>

namespace qkd {
namespace {

inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

struct Xoshiro128 {
  uint32_t s0, s1, s2, s3;
  uint32_t next() {
    const uint32_t result = rotl(s1 * 5u, 7) * 9u;
    const uint32_t t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  }
  double uniform() {
    const double hi = static_cast<double>(next() >> 5);  // 27 bits
    const double lo = static_cast<double>(next() >> 6);  // 26 bits
    return (hi * 67108864.0 + lo) / 9007199254740992.0;
  }
};

constexpr double kTwoPi = 6.283185307179586;  // 2·Math.PI, as JavaScript rounds it

// Rng.normal() on a generator and its cached value.
struct Normals {
  Xoshiro128 g;
  bool cached;
  double spare;
  double next() {
    if (cached) {
      cached = false;
      return spare;
    }
    double u = 0.0;
    while (u == 0.0) u = g.uniform();
    const double v = g.uniform();
    const double r = std::sqrt(-2.0 * std::log(u));
    const double angle = kTwoPi * v;
    cached = true;
    spare = r * std::sin(angle);
    return r * std::cos(angle);
  }
  Normals(const uint32_t* state, const double* cache)
      : g{state[0], state[1], state[2], state[3]}, cached(cache[0] != 0.0), spare(cached ? cache[1] : 0.0) {}
  void store(uint32_t* state, double* cache) const {
    state[0] = g.s0;
    state[1] = g.s1;
    state[2] = g.s2;
    state[3] = g.s3;
    cache[0] = cached ? 1.0 : 0.0;
    cache[1] = cached ? spare : 0.0;
  }
};

}  // namespace

void normal_fill(uint32_t* state, double* spare, double* out, int64_t n) {
  Normals normals(state, spare);
  for (int64_t i = 0; i < n; ++i) out[i] = normals.next();
  normals.store(state, spare);
}

void start_block_fill(uint32_t* state, double* spare, float* out, int64_t n, int64_t width, int64_t gaussian) {
  Normals normals(state, spare);
  uint32_t bits = 0;
  int left = 0;
  for (int64_t i = 0; i < n; ++i) {
    float* row = out + i * width;
    for (int64_t j = 0; j < width; ++j) {
      if (j < gaussian) {
        row[j] = static_cast<float>(normals.next());
        continue;
      }
      if (left == 0) {
        bits = normals.g.next();
        left = 32;
      }
      row[j] = (bits & 1u) != 0 ? 1.0f : -1.0f;
      bits >>= 1;
      --left;
    }
  }
  normals.store(state, spare);
}

}  // namespace qkd
