// Times llama.cpp's own quantizer (llama_model_quantize from a prebuilt
// libllama, loaded with dlopen) on a GGUF file, for bench/export.ts.
//
//   llama_quantize LIBLLAMA IN.gguf OUT.gguf FTYPE NTHREAD
//
// Prints one line: the seconds the call took. Only the first two fields of
// llama_model_quantize_params (nthread, ftype) are set; the rest keep the
// library's defaults, so the struct is handled as an opaque buffer larger
// than any version of it (the function returns it through a hidden pointer).
#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

struct Params {
  int32_t nthread;
  int32_t ftype;
  unsigned char rest[504];
};

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s LIBLLAMA IN.gguf OUT.gguf FTYPE NTHREAD\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  using Defaults = Params (*)();
  using Quantize = uint32_t (*)(const char*, const char*, const Params*);
  using Init = void (*)();
  auto defaults = reinterpret_cast<Defaults>(dlsym(lib, "llama_model_quantize_default_params"));
  auto quantize = reinterpret_cast<Quantize>(dlsym(lib, "llama_model_quantize"));
  auto init = reinterpret_cast<Init>(dlsym(lib, "llama_backend_init"));
  if (defaults == nullptr || quantize == nullptr) {
    std::fprintf(stderr, "%s lacks llama_model_quantize\n", argv[1]);
    return 1;
  }
  if (init != nullptr) init();
  Params p = defaults();
  p.ftype = std::atoi(argv[4]);
  p.nthread = std::atoi(argv[5]);
  const auto t0 = std::chrono::steady_clock::now();
  const uint32_t rc = quantize(argv[2], argv[3], &p);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) {
    std::fprintf(stderr, "llama_model_quantize returned %u\n", rc);
    return 1;
  }
  std::printf("%.6f\n", s);
  return 0;
}
