#include "file_read.h"

#include <algorithm>
#include <cerrno>
#include <memory>
#include <vector>

#include "background.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace qkd {
namespace {

#if defined(__unix__) || defined(__APPLE__)
class FileReadJob final : public BackgroundJob {
 public:
  FileReadJob(int fd, int64_t offset, int64_t length, uint8_t* dst)
      : fd_(fd), offset_(offset), length_(length), dst_(dst),
        got_(static_cast<size_t>((length + kFileReadChunk - 1) / kFileReadChunk), 0) {}

  int64_t tasks() const override { return static_cast<int64_t>(got_.size()); }

  // Chunk `task`: its bytes until they are all read, the file ends (a read of 0) or a read fails.
  void run(int64_t task) override {
    const int64_t begin = task * kFileReadChunk;
    const int64_t size = std::min(kFileReadChunk, length_ - begin);
    int64_t done = 0;
    while (done < size) {
      const ssize_t n = pread(fd_, dst_ + begin + done, static_cast<size_t>(size - done), static_cast<off_t>(offset_ + begin + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        got_[static_cast<size_t>(task)] = -static_cast<int64_t>(errno);
        return;
      }
      if (n == 0) break;
      done += n;
    }
    got_[static_cast<size_t>(task)] = done;
  }

  // The first failed chunk's −errno, else the bytes read up to the first short chunk.
  int64_t finish() override {
    for (int64_t g : got_) {
      if (g < 0) return g;
    }
    int64_t total = 0;
    for (size_t t = 0; t < got_.size(); ++t) {
      total += got_[t];
      if (got_[t] < std::min(kFileReadChunk, length_ - static_cast<int64_t>(t) * kFileReadChunk)) break;
    }
    return total;
  }

 private:
  int fd_;
  int64_t offset_, length_;
  uint8_t* dst_;
  std::vector<int64_t> got_;  // per chunk: bytes read, or −errno
};
#endif

}  // namespace

int64_t file_read_start(int fd, int64_t offset, int64_t length, uint8_t* dst) {
#if defined(__unix__) || defined(__APPLE__)
  return background_start(std::make_unique<FileReadJob>(fd, offset, length, dst));
#else
  (void)fd;
  (void)offset;
  (void)length;
  (void)dst;
  return 0;
#endif
}

}  // namespace qkd
