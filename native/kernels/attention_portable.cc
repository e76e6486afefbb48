// The fused attention tiles (attention_tiles.h) in plain C++: one-lane
// vectors, std::exp.
#include <cmath>
#include <cstdint>

#include "attention_kernels.h"
#include "simd_portable.h"
#include "attention_tiles.h"

namespace qkd {
namespace {
constexpr AttentionKernels kPortableAttention = make_attention_kernels<Portable>();
}  // namespace

const AttentionKernels* portable_attention_kernels() { return &kPortableAttention; }

}  // namespace qkd
