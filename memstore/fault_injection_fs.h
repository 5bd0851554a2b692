// A rocksdb::FileSystem wrapper that injects storage faults, for tests of the memory store:
// power loss (data not yet synced is dropped), write errors and a full disk. Modelled on
// RocksDB's FaultInjectionTestFS, which the Debian librocksdb-dev package does not ship.
//
//   auto fs = std::make_shared<FaultInjectionFileSystem>(nullptr);
//   options.file_system = fs;                // BlockStoreOptions
//   ... write, commit ...
//   fs->SetActive(false);                    // the power goes out
//   store.reset();                           // close the DB; nothing more reaches the disk
//   ASSERT_OK(fs->DropUnsyncedData());       // what an un-synced disk would have lost
//   fs->SetActive(true);                     // reboot; reopen the store
#ifndef QLLM_MEMSTORE_FAULT_INJECTION_FS_H_
#define QLLM_MEMSTORE_FAULT_INJECTION_FS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace qllm::memstore {

// Tracks every file written through it since construction (or the last DropUnsyncedData()):
// its length, its length at the last Sync/Fsync, and whether its directory was fsynced after
// the file was created. Files that existed before are treated as fully durable.
//
// Simplifications: a rename keeps the source's directory-sync state; deletes are immediate.
// Thread-safe.
class FaultInjectionFileSystem : public rocksdb::FileSystemWrapper {
 public:
  // Wraps `base`; nullptr means rocksdb::FileSystem::Default().
  explicit FaultInjectionFileSystem(std::shared_ptr<rocksdb::FileSystem> base);
  FaultInjectionFileSystem(const FaultInjectionFileSystem&) = delete;
  FaultInjectionFileSystem& operator=(const FaultInjectionFileSystem&) = delete;

  static const char* kClassName() { return "QllmFaultInjectionFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // While inactive ("the power is off") appends, syncs, truncations, renames and deletes are
  // accepted and discarded. Default: active.
  void SetActive(bool active) { active_.store(active); }
  bool active() const { return active_.load(); }

  // When set, appends, syncs and new writable files fail with IOStatus::NoSpace (ENOSPC).
  void SetNoSpace(bool no_space) { no_space_.store(no_space); }
  // When set, appends and syncs fail with a plain IOError.
  void SetWriteError(bool write_error) { write_error_.store(write_error); }
  // Number of operations that failed by injection.
  uint64_t injected_errors() const { return injected_errors_.load(); }

  // Simulates the disk after a power cut: truncates every tracked file to its last synced
  // length and deletes the tracked files whose directory was never fsynced after their
  // creation. Then forgets all tracking state. REQUIRES: no DB is open on this file system.
  // Returns INTERNAL if a file cannot be truncated or deleted.
  absl::Status DropUnsyncedData();

  // rocksdb::FileSystem overrides.
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io_opts,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& opts,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus LinkFile(const std::string& src, const std::string& dst,
                             const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus Truncate(const std::string& fname, size_t size, const rocksdb::IOOptions& opts,
                             rocksdb::IODebugContext* dbg) override;

  // Hooks of the wrapped files and directories (not for callers).
  rocksdb::IOStatus WriteFault() const;
  void OnAppend(const std::string& fname, uint64_t new_size);
  void OnSync(const std::string& fname, uint64_t size);
  void OnDirSync(const std::string& dir);

 private:
  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
    bool dir_synced = false;
  };

  void Track(const std::string& fname, uint64_t existing_size);

  std::atomic<bool> active_{true};
  std::atomic<bool> no_space_{false};
  std::atomic<bool> write_error_{false};
  mutable std::atomic<uint64_t> injected_errors_{0};
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, FileState> files_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qllm::memstore

#endif  // QLLM_MEMSTORE_FAULT_INJECTION_FS_H_
