// The fused attention tiles (attention_tiles.h) compiled for AVX-512; see
// fused_avx512.cc for why a target pragma, and why the standard headers
// come first.
#include <cmath>
#include <cstdint>

#include "attention_kernels.h"
#include "cpu.h"

#if QKD_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")
#include "simd_avx512.h"
#include "attention_tiles.h"

namespace qkd {
namespace {
constexpr AttentionKernels kAvx512Attention = make_attention_kernels<Avx512>();
}  // namespace
}  // namespace qkd
#pragma GCC pop_options

namespace qkd {
const AttentionKernels* avx512_attention_kernels() { return &kAvx512Attention; }
}  // namespace qkd

#else

namespace qkd {
const AttentionKernels* avx512_attention_kernels() { return nullptr; }
}  // namespace qkd

#endif
