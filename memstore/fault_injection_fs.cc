#include "memstore/fault_injection_fs.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qllm::memstore {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

std::string DirOf(const std::string& fname) {
  const size_t slash = fname.rfind('/');
  return slash == std::string::npos ? std::string(".") : fname.substr(0, slash);
}

// A writable file that reports its appends and syncs to the owning FaultInjectionFileSystem and
// discards them while the file system is inactive.
class FaultWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(std::unique_ptr<rocksdb::FSWritableFile> target, std::string fname,
                    uint64_t size, FaultInjectionFileSystem* fs)
      : FSWritableFileOwnerWrapper(std::move(target)),
        fname_(std::move(fname)),
        size_(size),
        fs_(fs) {}

  IOStatus Append(const Slice& data, const IOOptions& opts, IODebugContext* dbg) override {
    return DoAppend(data, [&] { return target()->Append(data, opts, dbg); });
  }
  IOStatus Append(const Slice& data, const IOOptions& opts,
                  const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
    return DoAppend(data, [&] { return target()->Append(data, opts, info, dbg); });
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& opts,
                            IODebugContext* dbg) override {
    return DoAppend(data, [&] { return target()->PositionedAppend(data, offset, opts, dbg); });
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& opts,
                            const rocksdb::DataVerificationInfo& info,
                            IODebugContext* dbg) override {
    return DoAppend(data,
                    [&] { return target()->PositionedAppend(data, offset, opts, info, dbg); });
  }
  IOStatus Truncate(uint64_t size, const IOOptions& opts, IODebugContext* dbg) override {
    if (!fs_->active()) return IOStatus::OK();
    IOStatus s = target()->Truncate(size, opts, dbg);
    if (s.ok()) size_ = size;
    return s;
  }
  IOStatus Sync(const IOOptions& opts, IODebugContext* dbg) override {
    return DoSync([&] { return target()->Sync(opts, dbg); });
  }
  IOStatus Fsync(const IOOptions& opts, IODebugContext* dbg) override {
    return DoSync([&] { return target()->Fsync(opts, dbg); });
  }
  // RangeSync only starts write-back; it promises no durability, so it changes no state.
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override {
    return IOStatus::OK();
  }

 private:
  template <typename F>
  IOStatus DoAppend(const Slice& data, F&& append) {
    if (!fs_->active()) return IOStatus::OK();
    if (IOStatus s = fs_->WriteFault(); !s.ok()) return s;
    IOStatus s = append();
    if (s.ok()) {
      size_ += data.size();
      fs_->OnAppend(fname_, size_);
    }
    return s;
  }
  template <typename F>
  IOStatus DoSync(F&& sync) {
    if (!fs_->active()) return IOStatus::OK();
    if (IOStatus s = fs_->WriteFault(); !s.ok()) return s;
    IOStatus s = sync();
    if (s.ok()) fs_->OnSync(fname_, size_);
    return s;
  }

  const std::string fname_;
  uint64_t size_;
  FaultInjectionFileSystem* const fs_;  // Outlives the file (RocksDB holds the FS).
};

// A directory whose fsync marks the files created in it as durable.
class FaultDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDirectory(std::unique_ptr<rocksdb::FSDirectory> target, std::string name,
                 FaultInjectionFileSystem* fs)
      : FSDirectoryWrapper(std::move(target)), name_(std::move(name)), fs_(fs) {}

  IOStatus Fsync(const IOOptions& opts, IODebugContext* dbg) override {
    if (!fs_->active()) return IOStatus::OK();
    IOStatus s = FSDirectoryWrapper::Fsync(opts, dbg);
    if (s.ok()) fs_->OnDirSync(name_);
    return s;
  }
  IOStatus FsyncWithDirOptions(const IOOptions& opts, IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& dir_opts) override {
    if (!fs_->active()) return IOStatus::OK();
    IOStatus s = FSDirectoryWrapper::FsyncWithDirOptions(opts, dbg, dir_opts);
    if (s.ok()) fs_->OnDirSync(name_);
    return s;
  }

 private:
  const std::string name_;
  FaultInjectionFileSystem* const fs_;  // Outlives the directory.
};

}  // namespace

FaultInjectionFileSystem::FaultInjectionFileSystem(std::shared_ptr<rocksdb::FileSystem> base)
    : FileSystemWrapper(base != nullptr ? std::move(base) : rocksdb::FileSystem::Default()) {}

IOStatus FaultInjectionFileSystem::WriteFault() const {
  if (no_space_.load()) {
    injected_errors_.fetch_add(1);
    return IOStatus::NoSpace("injected: no space left on device");
  }
  if (write_error_.load()) {
    injected_errors_.fetch_add(1);
    return IOStatus::IOError("injected write error");
  }
  return IOStatus::OK();
}

void FaultInjectionFileSystem::Track(const std::string& fname, uint64_t existing_size) {
  absl::MutexLock lock(&mu_);
  FileState& state = files_[fname];
  state.size = existing_size;
  state.synced = existing_size;
  state.dir_synced = existing_size > 0;
}

void FaultInjectionFileSystem::OnAppend(const std::string& fname, uint64_t new_size) {
  absl::MutexLock lock(&mu_);
  files_[fname].size = new_size;
}

void FaultInjectionFileSystem::OnSync(const std::string& fname, uint64_t size) {
  absl::MutexLock lock(&mu_);
  files_[fname].synced = size;
}

void FaultInjectionFileSystem::OnDirSync(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  for (auto& [name, state] : files_) {
    if (DirOf(name) == dir) state.dir_synced = true;
  }
}

IOStatus FaultInjectionFileSystem::NewWritableFile(const std::string& fname,
                                                   const rocksdb::FileOptions& opts,
                                                   std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                   IODebugContext* dbg) {
  if (active() && no_space_.load()) return WriteFault();
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(fname, opts, &file, dbg);
  if (!s.ok()) return s;
  Track(fname, 0);
  *result = std::make_unique<FaultWritableFile>(std::move(file), fname, 0, this);
  return s;
}

IOStatus FaultInjectionFileSystem::ReopenWritableFile(
    const std::string& fname, const rocksdb::FileOptions& opts,
    std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  uint64_t size = 0;
  if (!target()->GetFileSize(fname, IOOptions(), &size, dbg).ok()) size = 0;
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->ReopenWritableFile(fname, opts, &file, dbg);
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    if (!files_.contains(fname)) files_[fname] = FileState{size, size, true};
  }
  *result = std::make_unique<FaultWritableFile>(std::move(file), fname, size, this);
  return s;
}

IOStatus FaultInjectionFileSystem::ReuseWritableFile(
    const std::string& fname, const std::string& old_fname, const rocksdb::FileOptions& opts,
    std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) {
  // Recycling is not modelled: create a fresh file and drop the old one.
  IOStatus s = NewWritableFile(fname, opts, result, dbg);
  if (s.ok()) DeleteFile(old_fname, IOOptions(), dbg).PermitUncheckedError();
  return s;
}

IOStatus FaultInjectionFileSystem::NewDirectory(const std::string& name, const IOOptions& io_opts,
                                                std::unique_ptr<rocksdb::FSDirectory>* result,
                                                IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSDirectory> dir;
  IOStatus s = target()->NewDirectory(name, io_opts, &dir, dbg);
  if (!s.ok()) return s;
  std::string normalized = name;
  while (normalized.size() > 1 && normalized.back() == '/') normalized.pop_back();
  *result = std::make_unique<FaultDirectory>(std::move(dir), normalized, this);
  return s;
}

IOStatus FaultInjectionFileSystem::DeleteFile(const std::string& fname, const IOOptions& opts,
                                              IODebugContext* dbg) {
  if (!active()) return IOStatus::OK();
  IOStatus s = target()->DeleteFile(fname, opts, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    files_.erase(fname);
  }
  return s;
}

IOStatus FaultInjectionFileSystem::RenameFile(const std::string& src, const std::string& dst,
                                              const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return IOStatus::OK();
  IOStatus s = target()->RenameFile(src, dst, opts, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    if (auto it = files_.find(src); it != files_.end()) {
      FileState state = it->second;
      files_.erase(it);
      files_[dst] = state;
    } else {
      files_.erase(dst);
    }
  }
  return s;
}

IOStatus FaultInjectionFileSystem::LinkFile(const std::string& src, const std::string& dst,
                                            const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return IOStatus::OK();
  IOStatus s = target()->LinkFile(src, dst, opts, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    if (auto it = files_.find(src); it != files_.end()) {
      FileState state = it->second;
      files_[dst] = state;
    }
  }
  return s;
}

IOStatus FaultInjectionFileSystem::Truncate(const std::string& fname, size_t size,
                                            const IOOptions& opts, IODebugContext* dbg) {
  if (!active()) return IOStatus::OK();
  IOStatus s = target()->Truncate(fname, size, opts, dbg);
  if (s.ok()) {
    absl::MutexLock lock(&mu_);
    if (auto it = files_.find(fname); it != files_.end()) it->second.size = size;
  }
  return s;
}

absl::Status FaultInjectionFileSystem::DropUnsyncedData() {
  absl::flat_hash_map<std::string, FileState> files;
  {
    absl::MutexLock lock(&mu_);
    files.swap(files_);
  }
  for (const auto& [name, state] : files) {
    if (!state.dir_synced) {
      IOStatus s = target()->DeleteFile(name, IOOptions(), nullptr);
      if (!s.ok() && !s.IsNotFound() && !s.IsPathNotFound()) {
        return absl::InternalError(absl::StrCat("drop ", name, ": ", s.ToString()));
      }
      continue;
    }
    if (state.synced < state.size) {
      // RocksDB's POSIX file system does not implement FileSystem::Truncate, and the files of
      // this wrapper are local paths, so the cut is made with truncate(2) directly.
      if (::truncate(name.c_str(), static_cast<off_t>(state.synced)) != 0 && errno != ENOENT) {
        return absl::InternalError(
            absl::StrCat("truncate ", name, " to ", state.synced, ": ", std::strerror(errno)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace qllm::memstore
