// Standard normal numbers in bulk from the generator of src/tensor/random.ts
// (xoshiro128** and Box–Muller; docs/architecture.md, "Random numbers"), so a
// caller that needs thousands at once does not pay a JavaScript call each.
#pragma once

#include <cstdint>

namespace qkd {

// Writes n normals to out, advancing the four-word generator `state` and the
// cached second value exactly as n calls of Rng.normal() would: spare[0] is
// 1 when spare[1] holds a cached value, else 0. The generator steps are the
// same; log, sin and cos come from the C library, so a value can differ from
// JavaScript's in the last bit.
void normal_fill(uint32_t* state, double* spare, double* out, int64_t n);

// The profiler's Krylov start block (src/swan/spectrum.ts startBlock): out
// [n, width] row by row, in each row `gaussian` normals (as above), then
// width − gaussian signs ±1, one generator word per 32 signs (bit 0 first),
// the signs' bits not carried over from an earlier call.
void start_block_fill(uint32_t* state, double* spare, float* out, int64_t n, int64_t width, int64_t gaussian);

}  // namespace qkd
