// DBWA's packed storage formats (SPEC 5; formats and error bounds in
// src/sat/dbwa.ts, the reference algorithm in
// src/tensor/reference/dbwa-codec.ts). Bit-exact with the reference,
// stochastic rounding included:
//   tier 16  bfloat16 codes, 2 bytes per value
//   tier 12  e5m6 codes, two values in 3 bytes, then one scale byte per 64
//   tier  8  e4m3 codes, 1 byte per value, then one scale byte per 64
#pragma once

#include <cstdint>

namespace qkd {

// Bytes of codes + scales for n values at a tier (8, 12 or 16).
int64_t dbwa_storage_bytes(int tier, int64_t n);

// Packs src[0, n) into storage (dbwa_storage_bytes(tier, n) bytes). With
// seed (four xorshift128 words, not all zero) rounding is stochastic, with
// nullptr to nearest even. Returns -1, or the index of a non-finite value
// (storage is then partly written).
int64_t dbwa_encode(int tier, const float* src, int64_t n, uint8_t* storage, const uint32_t* seed);

// Unpacks dbwa_encode's storage into dst[0, n).
void dbwa_decode(int tier, const uint8_t* storage, float* dst, int64_t n);

}  // namespace qkd
