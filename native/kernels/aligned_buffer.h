// A float buffer aligned to a cache line that only ever grows.
//
// Kernels keep one per thread (thread_local) for their packed panels, so a
// steady stream of calls allocates nothing after the first few.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace qkd {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // A pointer to at least `count` floats, or nullptr when memory is short
  // (the addon is built without exceptions). Previous contents are not kept.
  float* reserve(size_t count) {
    if (count > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      // Round up so that slowly growing requests do not reallocate each time.
      const size_t rounded = (count + 4095) & ~static_cast<size_t>(4095);
      void* memory = std::aligned_alloc(kAlignment, rounded * sizeof(float));
      if (memory == nullptr) return nullptr;
      data_ = static_cast<float*>(memory);
      capacity_ = rounded;
    }
    return data_;
  }

  static constexpr size_t kAlignment = 64;

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace qkd
