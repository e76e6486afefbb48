// The fused attention tiles (attention_tiles.h) compiled for AVX2 + FMA; see
// fused_avx512.cc for why a target pragma.
#include <cmath>
#include <cstdint>

#include "attention_kernels.h"
#include "cpu.h"

#if QKD_X86
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "simd_avx2.h"
#include "attention_tiles.h"

namespace qkd {
namespace {
constexpr AttentionKernels kAvx2Attention = make_attention_kernels<Avx2>();
}  // namespace
}  // namespace qkd
#pragma GCC pop_options

namespace qkd {
const AttentionKernels* avx2_attention_kernels() { return &kAvx2Attention; }
}  // namespace qkd

#else

namespace qkd {
const AttentionKernels* avx2_attention_kernels() { return nullptr; }
}  // namespace qkd

#endif
