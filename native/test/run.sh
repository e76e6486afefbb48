#!/usr/bin/env bash
# Builds and runs every native check: the C++ kernel tests (every ISA path
# the CPU has, chosen per call) and the addon tests from Node (each ISA path
# in its own process via QKD_ISA). Run from anywhere; needs g++ and a built addon
# (`npx node-gyp rebuild` in the repository root) for the last steps;
# QKD_NATIVE_PATH=/path/to/qkd_native.node tests another build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="$(dirname "$here")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

build() {  # build <name> <source>
  g++ -O2 -std=c++17 -pthread -I"$native/kernels" "$2" "$native"/kernels/*.cc -o "$out/$1"
}
build test_sgemm "$here/test_sgemm.cc"
build test_softmax "$here/test_softmax.cc"
build test_fused "$here/test_fused.cc"
build test_fake_quant "$here/test_fake_quant.cc"
build test_bf16_gemm "$here/test_bf16_gemm.cc"
build test_profile_kernels "$here/test_profile_kernels.cc"
"$out/test_sgemm"
"$out/test_softmax"
"$out/test_fused"
"$out/test_fake_quant"
"$out/test_bf16_gemm"
"$out/test_profile_kernels"
node "$here/test_addon.mjs"
node "$here/test_addon_fused.mjs"
node "$here/test_addon_quant.mjs"
