#include "bench/memstore/raw_disk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/stopwatch.h"

namespace qllm::bench {
namespace {

constexpr size_t kAlign = 4096;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

std::unique_ptr<char, FreeDeleter> AlignedBuffer(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, std::max(bytes, kAlign)) != 0) return nullptr;
  std::memset(p, 0x5A, bytes);
  return std::unique_ptr<char, FreeDeleter>(static_cast<char*>(p));
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

double Quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

absl::StatusOr<double> RawSequentialWrite(const std::string& path, uint64_t bytes) {
  constexpr size_t kChunk = 1 << 20;
  auto buf = AlignedBuffer(kChunk);
  if (buf == nullptr) return absl::ResourceExhaustedError("posix_memalign");
  for (size_t i = 0; i < kChunk; ++i) buf.get()[i] = static_cast<char>(i * 131 + 7);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Errno("open " + path);
  Stopwatch watch;
  for (uint64_t done = 0; done < bytes; done += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - done));
    if (::write(fd, buf.get(), n) != static_cast<ssize_t>(n)) {
      ::close(fd);
      return Errno("write " + path);
    }
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Errno("fsync " + path);
  }
  const double seconds = watch.Seconds();
  ::close(fd);
  return static_cast<double>(bytes) / seconds / 1e6;
}

absl::StatusOr<RawReadResult> RawRandomRead(const std::string& path, size_t chunk, int batch,
                                            int count, uint64_t seed) {
  RawReadResult result;
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  result.direct = fd >= 0;
  if (fd < 0) {
    fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return Errno("open " + path);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Errno("fstat " + path);
  }
  const uint64_t chunks = static_cast<uint64_t>(st.st_size) / chunk;
  auto buf = AlignedBuffer(chunk);
  if (chunks == 0 || buf == nullptr) {
    ::close(fd);
    return absl::InvalidArgumentError("file smaller than one chunk");
  }
  std::mt19937_64 rng(seed);
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(count));
  Stopwatch total;
  for (int i = 0; i < count; ++i) {
    Stopwatch watch;
    for (int j = 0; j < batch; ++j) {
      const auto offset = static_cast<off_t>((rng() % chunks) * chunk);
      if (::pread(fd, buf.get(), chunk, offset) != static_cast<ssize_t>(chunk)) {
        ::close(fd);
        return Errno("pread " + path);
      }
    }
    latencies.push_back(watch.Seconds() * 1e6);
  }
  const double seconds = total.Seconds();
  ::close(fd);
  result.seconds = seconds;
  result.batch_us = latencies;
  result.mb_per_s = static_cast<double>(chunk) * batch * count / seconds / 1e6;
  result.p50_us = Quantile(latencies, 0.5);
  result.p99_us = Quantile(latencies, 0.99);
  return result;
}

}  // namespace qllm::bench
