// Reading a range of an open file as an idle-priority background job
// (background.h; docs/architecture.md, "Threads"): the profiler reads the
// next tensor while it measures this one.
#pragma once

#include <cstdint>

namespace qkd {

// Queues the read of `length` bytes at `offset` of the open file `fd` into
// `dst`, in chunks of kFileReadChunk bytes taken by the background thread
// or, when waited for, by the thread pool. Returns the handle for
// background_wait, whose result is the number of bytes read (less than
// `length` when the file ends first) or −errno of the first chunk that
// failed; 0 where the OS has no pread (the caller then reads it itself).
int64_t file_read_start(int fd, int64_t offset, int64_t length, uint8_t* dst);

constexpr int64_t kFileReadChunk = int64_t(1) << 20;

}  // namespace qkd
