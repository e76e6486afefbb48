// IEEE binary16 ("half") conversions, scalar and exact: float32 → half
// rounds to nearest even (NaN stays a quiet NaN with its sign, overflow
// gives ±Inf, subnormals kept), as tensor/dtype.ts's f32ToF16Bits; half →
// float32 is exact. Shared by the ggml codecs and the RTN error kernel.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace qkd {

// float32 → IEEE half, round to nearest even (NaN → quiet NaN with the sign), as tensor/dtype.ts.
inline uint16_t to_half(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu);
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant != 0 ? 0x200u : 0u));
  const int32_t e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    const uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t mid = 1u << (shift - 1);
    return static_cast<uint16_t>(sign | ((rem > mid || (rem == mid && (half & 1u))) ? half + 1 : half));
  }
  const uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  return static_cast<uint16_t>(sign | ((rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ? half + 1 : half));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  const uint32_t bits = exp == 0x1f ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112u) << 23) | (mant << 13));
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

}  // namespace qkd
