// The reference for qkd's ggml block formats: llama.cpp's own quantizers and
// dequantizers, called from the prebuilt libggml-base.so of the npm package
// @node-llama-cpp/linux-x64 (a devDependency). test/quant/ggml-oracle.test.ts
// compiles this file and runs it; it is not part of the addon.
//
//   ggml_oracle LIB quantize TYPE COUNT   < float32 values  > encoded bytes
//   ggml_oracle LIB dequantize TYPE COUNT < encoded bytes   > float32 values
//
// TYPE is a ggml row-function suffix: q4_0, q4_1, q5_0, q5_1, q8_0, q2_K,
// q3_K, q4_K, q5_K, q6_K, or fp16 / bf16 (ggml_fp32_to_*_row).
#include <dlfcn.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using QuantizeRow = void (*)(const float*, void*, int64_t);
using DequantizeRow = void (*)(const void*, float*, int64_t);

static std::vector<char> read_all(FILE* in) {
  std::vector<char> data;
  char buffer[1 << 16];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, in)) > 0) data.insert(data.end(), buffer, buffer + n);
  return data;
}

static void* symbol(void* lib, const std::string& name) {
  void* fn = dlsym(lib, name.c_str());
  if (fn == nullptr) {
    fprintf(stderr, "ggml_oracle: %s not found: %s\n", name.c_str(), dlerror());
    exit(2);
  }
  return fn;
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ggml_oracle LIB quantize|dequantize TYPE COUNT\n");
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    fprintf(stderr, "ggml_oracle: cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  const std::string mode = argv[2];
  const std::string type = argv[3];
  const int64_t count = strtoll(argv[4], nullptr, 10);
  const std::vector<char> input = read_all(stdin);
  const bool plain = type == "fp16" || type == "bf16";
  if (mode == "quantize") {
    if (input.size() != static_cast<size_t>(count) * 4) {
      fprintf(stderr, "ggml_oracle: %zu input bytes for %lld floats\n", input.size(), static_cast<long long>(count));
      return 2;
    }
    // Generous: no format needs more than 4 bytes per element.
    std::vector<char> out(static_cast<size_t>(count) * 4 + 1024, 0);
    const std::string name = plain ? "ggml_fp32_to_" + type + "_row" : "quantize_row_" + type + "_ref";
    reinterpret_cast<QuantizeRow>(symbol(lib, name))(reinterpret_cast<const float*>(input.data()), out.data(), count);
    // The caller knows the encoded size; write the buffer and let it take its prefix.
    fwrite(out.data(), 1, out.size(), stdout);
  } else if (mode == "dequantize") {
    std::vector<float> out(static_cast<size_t>(count));
    const std::string name = plain ? "ggml_" + type + "_to_fp32_row" : "dequantize_row_" + type;
    reinterpret_cast<DequantizeRow>(symbol(lib, name))(input.data(), out.data(), count);
    fwrite(out.data(), 4, out.size(), stdout);
  } else {
    fprintf(stderr, "ggml_oracle: unknown mode %s\n", mode.c_str());
    return 2;
  }
  return 0;
}
