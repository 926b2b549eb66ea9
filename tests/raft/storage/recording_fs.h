// Driftwood: a RocksDB FileSystem that records the deletions, renames and
// reopenings RocksDB asks of it, for tests of how files are deleted
// (raft/storage/rocksdb_background_io.h: each truncation of a `.trash` file
// reopens it).
#ifndef DRIFTWOOD_TESTS_RAFT_STORAGE_RECORDING_FS_H_
#define DRIFTWOOD_TESTS_RAFT_STORAGE_RECORDING_FS_H_

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rocksdb/file_system.h"

namespace driftwood::testing {

// Calls are recorded as "delete NAME", "rename SOURCE TARGET" and
// "reopen NAME", with file names only.
class RecordingFs : public rocksdb::FileSystemWrapper {
 public:
  explicit RecordingFs(const std::shared_ptr<rocksdb::FileSystem>& base)
      : FileSystemWrapper(base) {}

  const char* Name() const override { return "RecordingFs"; }

  rocksdb::IOStatus DeleteFile(const std::string& name,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    Record("delete " + Base(name));
    return FileSystemWrapper::DeleteFile(name, options, dbg);
  }
  rocksdb::IOStatus RenameFile(const std::string& source,
                               const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    Record("rename " + Base(source) + " " + Base(target));
    return FileSystemWrapper::RenameFile(source, target, options, dbg);
  }
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override {
    Record("reopen " + Base(name));
    return FileSystemWrapper::ReopenWritableFile(name, options, result, dbg);
  }

  std::vector<std::string> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  // Polls (deadline 30 s) until `call` has been recorded.
  bool WaitFor(const std::string& call) const {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Count(call) > 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  // The name of the first file ending in `extension` (".log", ".sst") that
  // was renamed to `<name>.trash`; empty if none.
  std::string FirstTrashed(const std::string& extension) const {
    for (const std::string& call : calls()) {
      const size_t space = call.find(' ', 7);
      if (call.starts_with("rename ") && space != std::string::npos &&
          call.substr(7, space - 7).ends_with(extension) &&
          call.ends_with(".trash")) {
        return call.substr(7, space - 7);
      }
    }
    return "";
  }
  size_t Count(const std::string& call) const {
    size_t n = 0;
    for (const std::string& c : calls()) n += c == call ? 1u : 0u;
    return n;
  }

 private:
  static std::string Base(const std::string& path) {
    return std::filesystem::path(path).filename().string();
  }
  void Record(std::string call) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(call));
  }

  mutable std::mutex mu_;
  std::vector<std::string> calls_;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_RAFT_STORAGE_RECORDING_FS_H_
