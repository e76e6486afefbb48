// Which instruction-set path the kernels run on.
//
// The addon is built for plain x86-64 (no -march flags); the fast paths are
// individual functions compiled with a `target` attribute and chosen here at
// run time from cpuid. On other architectures only the portable path exists.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QKD_X86 1
#define QKD_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define QKD_TARGET_AVX2 __attribute__((target("avx2,fma")))
// The AVX-512 path plus the BF16 dot product (vdpbf16ps, vcvtne2ps2bf16).
#define QKD_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")))
// The AVX-512 path plus the int8 dot product (vpdpbusd).
#define QKD_TARGET_AVX512_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma")))
#else
#define QKD_X86 0
#endif

namespace qkd {

enum class Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU (and OS) supports.
Isa detected_isa();

// The path the kernels use: detected_isa(), lowered by the environment
// variable QKD_ISA=portable|avx2|avx512 (for testing the slower paths). A
// request for a path the CPU lacks is ignored. Read once, then cached.
Isa active_isa();

const char* isa_name(Isa isa);

// True when the CPU has AVX-512 BF16 (vdpbf16ps, vcvtne2ps2bf16): on the
// avx512 path the bf16 GEMM then runs on its own micro-kernel instead of
// widening to float32.
bool cpu_has_avx512_bf16();

// True when the CPU has AVX-512 VNNI (vpdpbusd): on the avx512 path the
// profiler's int8 GEMM then runs on its own micro-kernel.
bool cpu_has_avx512_vnni();

}  // namespace qkd
