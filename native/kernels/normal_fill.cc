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

}  // namespace

void normal_fill(uint32_t* state, double* spare, double* out, int64_t n) {
  Xoshiro128 g{state[0], state[1], state[2], state[3]};
  int64_t i = 0;
  if (n > 0 && spare[0] != 0.0) {
    out[i++] = spare[1];
    spare[0] = 0.0;
    spare[1] = 0.0;
  }
  while (i < n) {
    double u = 0.0;
    while (u == 0.0) u = g.uniform();
    const double v = g.uniform();
    const double r = std::sqrt(-2.0 * std::log(u));
    const double angle = kTwoPi * v;
    out[i++] = r * std::cos(angle);
    const double second = r * std::sin(angle);
    if (i < n) {
      out[i++] = second;
    } else {
      spare[0] = 1.0;
      spare[1] = second;
    }
  }
  state[0] = g.s0;
  state[1] = g.s1;
  state[2] = g.s2;
  state[3] = g.s3;
}

}  // namespace qkd
