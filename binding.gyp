# The qkd_native addon: plain C N-API (no npm dependency), C++17.
#
# Built for baseline x86-64 on purpose (no -march): the AVX2 and AVX-512
# kernels are individual functions with target attributes, chosen at run
# time from cpuid (native/kernels/cpu.cc). No -ffast-math: exp, NaN and
# Infinity must keep IEEE behaviour. The benchmark drivers in native/bench
# are built by hand (see native/README.md); the addon is tested from
# test/ against the TypeScript reference (test/tensor/native-kernels.test.ts).
{
  "targets": [
    {
      "target_name": "qkd_native",
      "sources": [
        "native/binding.cc",
        "native/kernels/cpu.cc",
        "native/kernels/thread_pool.cc",
        "native/kernels/background.cc",
        "native/kernels/file_read.cc",
        "native/kernels/factor.cc",
        "native/kernels/sgemm.cc",
        "native/kernels/gemm_avx512.cc",
        "native/kernels/gemm_avx2.cc",
        "native/kernels/gemm_portable.cc",
        "native/kernels/gemm_skinny.cc",
        "native/kernels/gemm_bf16.cc",
        "native/kernels/gemm_bf16_avx512.cc",
        "native/kernels/gemm_int8.cc",
        "native/kernels/weight_stats.cc",
        "native/kernels/rtn_error.cc",
        "native/kernels/sym_eig.cc",
        "native/kernels/normal_fill.cc",
        "native/kernels/vector_ops.cc",
        "native/kernels/dbwa_codec.cc",
        "native/kernels/ggml_codec.cc",
        "native/kernels/softmax.cc",
        "native/kernels/ssm.cc",
        "native/kernels/softmax_avx512.cc",
        "native/kernels/softmax_avx2.cc",
        "native/kernels/fused.cc",
        "native/kernels/fused_avx512.cc",
        "native/kernels/fused_avx2.cc",
        "native/kernels/fused_portable.cc",
        "native/kernels/attention.cc",
        "native/kernels/attention_avx512.cc",
        "native/kernels/attention_avx2.cc",
        "native/kernels/attention_portable.cc"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-O3", "-fno-math-errno", "-pthread"],
      "cflags_cc": ["-O3", "-std=c++17", "-fno-math-errno", "-pthread"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-std=c++20"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_OPTIMIZATION_LEVEL": "3",
        "OTHER_CFLAGS": ["-fno-math-errno"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": {
          "AdditionalOptions": ["/std:c++17", "/O2"]
        }
      }
    }
  ]
}
