// Driftwood: a RocksDB FileSystem that simulates power loss, for tests.
//
// It remembers, for every file written through it, how much was synced and
// whether the file's directory entry is durable (the folder was fsynced after
// the file was created). PowerCut() makes every later write fail, truncates
// each file to its synced length, deletes files whose creation was never made
// durable and undoes renames whose folder was not fsynced since. SIGKILL alone
// cannot find a missing fsync (the page cache survives it); this can.
#ifndef DRIFTWOOD_TESTS_RAFT_STORAGE_POWER_LOSS_FS_H_
#define DRIFTWOOD_TESTS_RAFT_STORAGE_POWER_LOSS_FS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "rocksdb/file_system.h"

namespace driftwood::testing {

class PowerLossFs : public rocksdb::FileSystemWrapper {
 public:
  explicit PowerLossFs(const std::shared_ptr<rocksdb::FileSystem>& base)
      : FileSystemWrapper(base) {}

  const char* Name() const override { return "PowerLossFs"; }

  rocksdb::IOStatus NewWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name,
                                 const rocksdb::IOOptions& options,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& name,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& source,
                               const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;

  // Cuts the power: see the file comment. Later writes fail until Restore().
  void PowerCut();
  // Power is back: everything on disk now counts as durable.
  void Restore();
  // Syncs of file data seen so far.
  uint64_t syncs() const;

  // Called by the file and folder wrappers.
  rocksdb::IOStatus OnAppend(const std::string& name, uint64_t bytes);
  // The bytes appended to `name` so far.
  uint64_t SizeOf(const std::string& name);
  // A sync of `name` that started when it held `size` bytes succeeded.
  void OnSync(const std::string& name, uint64_t size);
  void OnFolderSync(const std::string& folder);

 private:
  struct FileState {
    uint64_t size = 0;
    uint64_t synced = 0;
    bool entry_durable = false;
  };
  struct Rename {
    std::string source;
    std::string target;
    std::optional<std::string> old_target_content;
  };

  mutable std::mutex mu_;
  std::map<std::string, FileState> files_;
  std::vector<Rename> renames_;
  bool dead_ = false;
  uint64_t syncs_ = 0;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_RAFT_STORAGE_POWER_LOSS_FS_H_
