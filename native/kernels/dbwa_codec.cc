// DBWA codecs: a port of src/tensor/reference/dbwa-codec.ts that must match
// it bit for bit (the tests compare every tier, both roundings, subnormal,
// huge and non-finite inputs). Integer work on the float32 bit patterns; the
// only floating-point operations are exact products and, on the stochastic
// subnormal path, one double addition, done exactly as the reference does.
#include "dbwa_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "thread_pool.h"

namespace qkd {
namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kChunk = 64 * kBlock;

struct MiniFloat {
  int exp_bits, mant_bits, top_exp;
  uint32_t huge_shift, top_mag;
  double table[1 << 12];  // decoded value of every code (sign included) for a block shift of 127
};

MiniFloat make_minifloat(int exp_bits, int mant_bits) {
  MiniFloat f{};
  f.exp_bits = exp_bits;
  f.mant_bits = mant_bits;
  f.top_exp = (1 << exp_bits) - 2;
  f.huge_shift = static_cast<uint32_t>(254 - f.top_exp);
  f.top_mag = static_cast<uint32_t>((f.top_exp << mant_bits) | ((1 << mant_bits) - 1));
  const int codes = 1 << (1 + exp_bits + mant_bits);
  const int mag_mask = (1 << (exp_bits + mant_bits)) - 1;
  for (int c = 0; c < codes; c++) {
    const int mag = c & mag_mask;
    const int exp = mag >> mant_bits;
    const double frac = static_cast<double>(mag & ((1 << mant_bits) - 1)) / (1 << mant_bits);
    const double value = exp == 0 ? frac * 2 : (1 + frac) * std::ldexp(1.0, exp);
    f.table[c] = c > mag_mask ? -value : value;
  }
  return f;
}

const MiniFloat kE4M3 = make_minifloat(4, 3);
const MiniFloat kE5M6 = make_minifloat(5, 6);

// 2^(s − 127) for each block shift s.
struct ShiftScale {
  double v[256];
  ShiftScale() {
    for (int s = 0; s < 256; s++) v[s] = std::ldexp(1.0, s - 127);
  }
};
const ShiftScale kShiftScale;

// xorshift128 (Marsaglia): 16 random bits per value, a chunk at a time.
struct RoundingBits {
  uint32_t x, y, z, w;
  uint16_t draws[kChunk];
  explicit RoundingBits(const uint32_t* seed) : x(seed[0]), y(seed[1]), z(seed[2]), w(seed[3]) {}
  const uint16_t* refill() {
    for (int64_t i = 0; i < kChunk; i += 2) {
      const uint32_t t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >> 19) ^ t ^ (t >> 8);
      draws[i] = static_cast<uint16_t>(w);
      draws[i + 1] = static_cast<uint16_t>(w >> 16);
    }
    return draws;
  }
};

inline uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

int64_t first_non_finite(const float* src, int64_t from, int64_t to) {
  for (int64_t i = from; i < to; i++) {
    if ((bits_of(src[i]) & 0x7f800000u) == 0x7f800000u) return i;
  }
  return -1;
}

// The block's shift (largest exponent to the minifloat's top exponent − 1), or −1 for a non-finite value.
int block_shift(const MiniFloat& f, const float* src, int64_t from, int64_t to) {
  uint32_t max_abs = 0;
  for (int64_t i = from; i < to; i++) max_abs = std::max(max_abs, bits_of(src[i]) & 0x7fffffffu);
  if (max_abs >= 0x7f800000u) return -1;
  return std::max(1, static_cast<int>(max_abs >> 23) - f.top_exp);
}

// Subnormal minifloat code of magnitude bits a (r16 < 0: nearest even; else stochastic with 16 random bits).
uint32_t subnormal_magnitude(uint32_t a, int shift, int k, int32_t r16) {
  const uint32_t e = a >> 23;
  const uint32_t sig = e == 0 ? a : ((a & 0x7fffffu) | 0x800000u);
  const int drop = k + 1 - (static_cast<int>(e == 0 ? 1 : e) - shift);
  if (r16 < 0) {
    if (drop > 24) return 0;
    return (sig + (1u << (drop - 1)) - 1 + ((sig >> drop) & 1u)) >> drop;
  }
  const double scaled = static_cast<double>(sig) * std::ldexp(1.0, -drop);
  const double noise = static_cast<double>(r16) * (1.0 / 65536);
  return static_cast<uint32_t>(std::floor(scaled + noise));
}

// Nearest-even magnitude code (k mantissa bits dropped after re-biasing by the shift).
inline uint32_t nearest_magnitude(uint32_t a, int shift, int k) {
  const int64_t x = static_cast<int64_t>(a) - (static_cast<int64_t>(shift) << 23);
  if (x >= 0x800000) {
    const uint32_t ux = static_cast<uint32_t>(x);
    return (ux + (1u << (k - 1)) - 1 + ((ux >> k) & 1u)) >> k;
  }
  return subnormal_magnitude(a, shift, k, -1);
}

// Stochastic magnitude code with 16 random bits r.
inline uint32_t stochastic_magnitude(uint32_t a, int shift, int k, uint32_t r) {
  const int64_t x = static_cast<int64_t>(a) - (static_cast<int64_t>(shift) << 23);
  if (x >= 0x800000) return (static_cast<uint32_t>(x) + (r << (k - 16))) >> k;
  return subnormal_magnitude(a, shift, k, static_cast<int32_t>(r));
}

inline uint16_t saturate_bf16(uint32_t h) {
  return static_cast<uint16_t>((h & 0x7f80u) == 0x7f80u ? ((h & 0x8000u) | 0x7f7fu) : h);
}

// The encoders work on values [from, n), from a multiple of kChunk, with rand
// positioned at chunk from / kChunk of the stream.
int64_t encode_bf16(const float* src, int64_t from, int64_t n, uint8_t* storage, RoundingBits* rand) {
  uint32_t bad = 0;
  for (int64_t chunk = from; chunk < n; chunk += kChunk) {
    const uint16_t* draws = rand ? rand->refill() : nullptr;
    const int64_t end = std::min(n, chunk + kChunk);
    for (int64_t i = chunk; i < end; i++) {
      const uint32_t b = bits_of(src[i]);
      bad |= (b & 0x7f800000u) + 0x00800000u;  // bit 31 set when the exponent is all ones
      const uint32_t rounded = draws ? b + draws[i - chunk] : b + 0x7fffu + ((b >> 16) & 1u);
      const uint16_t code = saturate_bf16(rounded >> 16);
      std::memcpy(storage + 2 * i, &code, 2);  // little-endian hosts only (x86-64, arm64)
    }
  }
  return (bad & 0x80000000u) ? first_non_finite(src, from, n) : -1;
}

// Walks src block by block: refills the random draws at each chunk (nullptr
// when rounding to nearest), computes the block's shift, writes its scale
// byte and calls encode_block(start, end, shift, draws, chunk). Returns −1,
// or the index of a non-finite value (its block gets no codes).
template <typename EncodeBlock>
int64_t for_each_block(const MiniFloat& f, const float* src, int64_t from, int64_t n, uint8_t* scales, RoundingBits* rand,
                       EncodeBlock encode_block) {
  for (int64_t chunk = from; chunk < n; chunk += kChunk) {
    const uint16_t* draws = rand ? rand->refill() : nullptr;
    const int64_t chunk_end = std::min(n, chunk + kChunk);
    for (int64_t start = chunk; start < chunk_end; start += kBlock) {
      const int64_t end = std::min(chunk_end, start + kBlock);
      const int shift = block_shift(f, src, start, end);
      if (shift < 0) return first_non_finite(src, start, end);
      scales[start / kBlock] = static_cast<uint8_t>(shift);
      encode_block(start, end, shift, draws, chunk);
    }
  }
  return -1;
}

int64_t encode8(const float* src, int64_t from, int64_t n, uint8_t* out, uint8_t* scales, RoundingBits* rand) {
  const MiniFloat& f = kE4M3;
  const int k = 23 - f.mant_bits;  // 20: the constants of pass 1 below
  return for_each_block(f, src, from, n, scales, rand, [&](int64_t start, int64_t end, int shift, const uint16_t* draws, int64_t chunk) {
    const bool huge = static_cast<uint32_t>(shift) == f.huge_shift;
    // Pass 1, branch-free (vectorisable): every value as if normal in the minifloat.
    const uint32_t shift_bits = static_cast<uint32_t>(shift) << 23;
    uint32_t any_subnormal = 0;
    if (draws) {
      const uint16_t* r = draws + (start - chunk);
      for (int64_t j = 0; j < end - start; j++) {
        const uint32_t b = bits_of(src[start + j]);
        const uint32_t x = (b & 0x7fffffffu) - shift_bits;  // wraps when the value is below the normal range
        any_subnormal |= static_cast<uint32_t>(static_cast<int32_t>(x) < 0x800000);
        out[start + j] = static_cast<uint8_t>(((b >> 24) & 0x80u) | (((x + (static_cast<uint32_t>(r[j]) << 4)) >> 20) & 0x7fu));
      }
    } else {
      for (int64_t i = start; i < end; i++) {
        const uint32_t b = bits_of(src[i]);
        const uint32_t x = (b & 0x7fffffffu) - shift_bits;
        any_subnormal |= static_cast<uint32_t>(static_cast<int32_t>(x) < 0x800000);
        out[i] = static_cast<uint8_t>(((b >> 24) & 0x80u) | (((x + (1u << 19) - 1 + ((x >> 20) & 1u)) >> 20) & 0x7fu));
      }
    }
    // Pass 2: the values below the normal range, and the saturating shift.
    if (any_subnormal || huge) {
      for (int64_t i = start; i < end; i++) {
        const uint32_t b = bits_of(src[i]);
        const uint32_t a = b & 0x7fffffffu;
        uint32_t mag = out[i] & 0x7fu;
        if (static_cast<int32_t>(a - shift_bits) < 0x800000) mag = subnormal_magnitude(a, shift, k, draws ? static_cast<int32_t>(draws[i - chunk]) : -1);
        if (huge) mag = std::min(mag, f.top_mag);
        out[i] = static_cast<uint8_t>(((b >> 24) & 0x80u) | mag);
      }
    }
  });
}

int64_t encode12(const float* src, int64_t from, int64_t n, uint8_t* out, uint8_t* scales, RoundingBits* rand) {
  const MiniFloat& f = kE5M6;
  const int k = 23 - f.mant_bits;  // 17: the constants of the fast path below
  return for_each_block(f, src, from, n, scales, rand, [&](int64_t start, int64_t end, int shift, const uint16_t* draws, int64_t chunk) {
    const bool huge = static_cast<uint32_t>(shift) == f.huge_shift;
    // Fast path, branch-free: whole pairs of values that are normal in the minifloat (most blocks).
    bool slow = huge || ((end - start) & 1);
    if (!slow) {
        const uint32_t shift_bits = static_cast<uint32_t>(shift) << 23;
      uint32_t any_subnormal = 0;
      uint8_t* q = out + (start >> 1) * 3;
      for (int64_t i = start; i < end; i += 2, q += 3) {
        const uint32_t b0 = bits_of(src[i]), b1 = bits_of(src[i + 1]);
        const uint32_t x0 = (b0 & 0x7fffffffu) - shift_bits, x1 = (b1 & 0x7fffffffu) - shift_bits;
        any_subnormal |= static_cast<uint32_t>(static_cast<int32_t>(x0) < 0x800000) | static_cast<uint32_t>(static_cast<int32_t>(x1) < 0x800000);
        const uint32_t add0 = draws ? static_cast<uint32_t>(draws[i - chunk]) << 1 : (1u << 16) - 1 + ((x0 >> 17) & 1u);
        const uint32_t add1 = draws ? static_cast<uint32_t>(draws[i + 1 - chunk]) << 1 : (1u << 16) - 1 + ((x1 >> 17) & 1u);
        const uint32_t c0 = (((x0 + add0) >> 17) & 0x7ffu) | ((b0 >> 20) & 0x800u);
        const uint32_t c1 = (((x1 + add1) >> 17) & 0x7ffu) | ((b1 >> 20) & 0x800u);
        q[0] = static_cast<uint8_t>(c0 & 0xffu);
        q[1] = static_cast<uint8_t>((c0 >> 8) | ((c1 & 0xfu) << 4));
        q[2] = static_cast<uint8_t>(c1 >> 4);
      }
      slow = any_subnormal != 0;
    }
    if (!slow) return;
    // General path: values below the normal range, the saturating shift, an odd last value.
    int64_t o = (start >> 1) * 3;  // blocks start at even indices
    for (int64_t i = start; i < end; i += 2, o += 3) {
      const uint32_t b0 = bits_of(src[i]);
      const uint32_t b1 = i + 1 < end ? bits_of(src[i + 1]) : 0;  // an odd last value pairs with a zero code
      const uint32_t a0 = b0 & 0x7fffffffu, a1 = b1 & 0x7fffffffu;
      uint32_t c0, c1;
      if (draws) {
        c0 = stochastic_magnitude(a0, shift, k, draws[i - chunk]);
        c1 = stochastic_magnitude(a1, shift, k, draws[i + 1 - chunk]);
      } else {
        c0 = nearest_magnitude(a0, shift, k);
        c1 = nearest_magnitude(a1, shift, k);
      }
      if (huge) {
        c0 = std::min(c0, f.top_mag);
        c1 = std::min(c1, f.top_mag);
      }
      c0 |= (b0 >> 20) & 0x800u;
      c1 |= (b1 >> 20) & 0x800u;
      out[o] = static_cast<uint8_t>(c0 & 0xffu);
      out[o + 1] = static_cast<uint8_t>((c0 >> 8) | ((c1 & 0xfu) << 4));
      out[o + 2] = static_cast<uint8_t>(c1 >> 4);
    }
  });
}

int64_t code_bytes(int tier, int64_t n) { return tier == 16 ? 2 * n : tier == 12 ? 3 * ((n + 1) / 2) : n; }

// ---- threading ---------------------------------------------------------------

// Chunks per task (a task is 16 × 4096 values): the work is split on chunk
// boundaries, so every task's random draws are a stretch of the one
// sequential stream and the result does not depend on the thread count.
constexpr int64_t kChunksPerTask = 16;

// One xorshift128 step, as RoundingBits::refill takes them.
inline void xorshift_step(uint32_t s[4]) {
  const uint32_t t = s[0] ^ (s[0] << 11);
  s[0] = s[1];
  s[1] = s[2];
  s[2] = s[3];
  s[3] = s[3] ^ (s[3] >> 19) ^ t ^ (t >> 8);
}

// xorshift128 is linear over GF(2): kChunk / 2 steps (one refill) are a
// 128×128 bit matrix, kept as its columns (the image of each state bit).
struct ChunkJump {
  uint32_t column[128][4];
  ChunkJump() {
    for (int j = 0; j < 128; j++) {
      uint32_t s[4] = {0, 0, 0, 0};
      s[j / 32] = 1u << (j % 32);
      for (int64_t k = 0; k < kChunk / 2; k++) xorshift_step(s);
      std::memcpy(column[j], s, sizeof s);
    }
  }
};
const ChunkJump kChunkJump;

// Moves a generator state past one chunk's draws.
void jump_one_chunk(uint32_t s[4]) {
  uint32_t out[4] = {0, 0, 0, 0};
  for (int j = 0; j < 128; j++) {
    if ((s[j / 32] >> (j % 32)) & 1u) {
      for (int w = 0; w < 4; w++) out[w] ^= kChunkJump.column[j][w];
    }
  }
  std::memcpy(s, out, sizeof out);
}

struct EncodeJob {
  int tier;
  const float* src;
  int64_t n;
  uint8_t* storage;
  uint8_t* scales;
  int64_t chunks_per_task;
  std::vector<uint32_t> states;  // 4 words per task (stochastic rounding), else empty
  std::vector<int64_t> bad;      // per task: −1 or its first non-finite index
};

void encode_task(void* context, int64_t task, int /*worker*/) {
  EncodeJob& job = *static_cast<EncodeJob*>(context);
  const int64_t from = task * job.chunks_per_task * kChunk;
  const int64_t to = std::min(job.n, from + job.chunks_per_task * kChunk);
  auto encode = [&](RoundingBits* rand) {
    if (job.tier == 16) return encode_bf16(job.src, from, to, job.storage, rand);
    if (job.tier == 12) return encode12(job.src, from, to, job.storage, job.scales, rand);
    return encode8(job.src, from, to, job.storage, job.scales, rand);
  };
  if (job.states.empty()) {
    job.bad[static_cast<size_t>(task)] = encode(nullptr);
  } else {
    RoundingBits rand(&job.states[static_cast<size_t>(4 * task)]);
    job.bad[static_cast<size_t>(task)] = encode(&rand);
  }
}

void decode_range(int tier, const uint8_t* storage, float* dst, int64_t n, int64_t from, int64_t to) {
  if (tier == 16) {
    for (int64_t i = from; i < to; i++) {
      uint16_t code;
      std::memcpy(&code, storage + 2 * i, 2);
      const uint32_t b = static_cast<uint32_t>(code) << 16;
      std::memcpy(dst + i, &b, 4);
    }
    return;
  }
  const uint8_t* scales = storage + code_bytes(tier, n);
  const double* table = tier == 12 ? kE5M6.table : kE4M3.table;
  for (int64_t start = from, blk = from / kBlock; start < to; start += kBlock, blk++) {
    const int64_t end = std::min(to, start + kBlock);
    const double scale = kShiftScale.v[scales[blk]];
    if (tier == 8) {
      for (int64_t i = start; i < end; i++) dst[i] = static_cast<float>(table[storage[i]] * scale);
      continue;
    }
    int64_t o = (start >> 1) * 3;
    int64_t i = start;
    for (; i + 1 < end; i += 2, o += 3) {
      const uint32_t b1 = storage[o + 1];
      dst[i] = static_cast<float>(table[storage[o] | ((b1 & 0xfu) << 8)] * scale);
      dst[i + 1] = static_cast<float>(table[(b1 >> 4) | (static_cast<uint32_t>(storage[o + 2]) << 4)] * scale);
    }
    if (i < end) dst[i] = static_cast<float>(table[storage[o] | ((storage[o + 1] & 0xfu) << 8)] * scale);
  }
}

struct DecodeJob {
  int tier;
  const uint8_t* storage;
  float* dst;
  int64_t n;
};

void decode_task(void* context, int64_t task, int /*worker*/) {
  const DecodeJob& job = *static_cast<const DecodeJob*>(context);
  const int64_t from = task * kChunksPerTask * kChunk;
  decode_range(job.tier, job.storage, job.dst, job.n, from, std::min(job.n, from + kChunksPerTask * kChunk));
}

}  // namespace

int64_t dbwa_storage_bytes(int tier, int64_t n) {
  return code_bytes(tier, n) + (tier == 16 ? 0 : (n + kBlock - 1) / kBlock);
}

int64_t dbwa_encode(int tier, const float* src, int64_t n, uint8_t* storage, const uint32_t* seed) {
  EncodeJob job{tier, src, n, storage, storage + code_bytes(tier, n), kChunksPerTask, {}, {}};
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t tasks = (chunks + kChunksPerTask - 1) / kChunksPerTask;
  job.bad.assign(static_cast<size_t>(tasks), -1);
  if (seed != nullptr) {
    // Each task starts its own generator where the sequential stream is at its first chunk.
    job.states.resize(static_cast<size_t>(4 * tasks));
    uint32_t s[4] = {seed[0], seed[1], seed[2], seed[3]};
    for (int64_t t = 0; t < tasks; t++) {
      std::memcpy(&job.states[static_cast<size_t>(4 * t)], s, sizeof s);
      for (int64_t c = 0; c < kChunksPerTask; c++) jump_one_chunk(s);
    }
  }
  if (tasks > 1 && ThreadPool::shared().size() > 1) {
    ThreadPool::shared().run(tasks, encode_task, &job);
  } else {
    for (int64_t t = 0; t < tasks; t++) encode_task(&job, t, 0);
  }
  for (int64_t b : job.bad) {
    if (b >= 0) return b;  // tasks are in index order: the first one found is the first non-finite value
  }
  return -1;
}

void dbwa_decode(int tier, const uint8_t* storage, float* dst, int64_t n) {
  DecodeJob job{tier, storage, dst, n};
  const int64_t tasks = (n + kChunk * kChunksPerTask - 1) / (kChunk * kChunksPerTask);
  if (tasks > 1 && ThreadPool::shared().size() > 1) {
    ThreadPool::shared().run(tasks, decode_task, &job);
  } else {
    for (int64_t t = 0; t < tasks; t++) decode_task(&job, t, 0);
  }
}

}  // namespace qkd
