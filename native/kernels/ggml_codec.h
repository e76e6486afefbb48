// ggml's block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K … Q6_K): encode
// and decode, byte for byte as src/quant/ggml-legacy.ts and
// src/quant/ggml-kquants.ts, the TypeScript definitions and test oracle
// (docs/ggml-formats.md describes the layouts and the fitting). Those files
// in turn equal llama.cpp's reference quantizers (no importance matrix) and
// dequantizers; test/quant/ggml-oracle.test.ts checks both against it.
//
// Exactness needs IEEE float32 arithmetic in source order: the .cc is built
// without -ffast-math and turns floating-point contraction off itself; its
// AVX2 copy of the K-quant fits (GCC target pragma) keeps that order per lane.
#pragma once

#include <cstdint>

namespace qkd {

// Elements per block of a ggml type id, or 0 when the codec does not handle it.
int64_t ggml_block_size(int type);
// Bytes per block, or 0 when the codec does not handle the type.
int64_t ggml_block_bytes(int type);

// x[0, n) → out (n / block_size · block_bytes bytes); n a multiple of the block size.
// importance (or nullptr): one weight per column of rows of `cols` elements
// (cols a multiple of the block size, n of cols), multiplying each element's
// weight in the K-quant sub-block fits; the 32-element formats ignore it.
void ggml_encode(int type, const float* x, int64_t n, uint8_t* out, const float* importance, int64_t cols);
// Encoded bytes → y[0, n).
void ggml_decode(int type, const uint8_t* in, int64_t n, float* y);
// decode(encode(x)) without the intermediate buffer: the fake quantizer of
// QAT on a ggml grid. y may equal x.
void ggml_round_trip(int type, const float* x, int64_t n, float* y);

}  // namespace qkd
