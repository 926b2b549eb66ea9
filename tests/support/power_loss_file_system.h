// Driftwood: an in-memory FileSystem that loses, at a power cut, everything the
// durability contract of raft/storage/file_system.h does not promise: file
// bytes not followed by SyncFile, and folder entries (creations, renames,
// removals) not followed by SyncDir of that folder. The plain-file counterpart
// of the RocksDB PowerLossFs (docs/design.md "Storage").
//
// Files and folders are inodes; a folder maps names to inodes twice, as the
// program sees it and as last synced. A power cut rebuilds what the program
// sees from the synced maps and synced bytes, starting at the root (which is
// always durable). Paths are absolute ("/a/b").
#ifndef DRIFTWOOD_TESTS_SUPPORT_POWER_LOSS_FILE_SYSTEM_H_
#define DRIFTWOOD_TESTS_SUPPORT_POWER_LOSS_FILE_SYSTEM_H_

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "raft/util/file_system.h"

namespace driftwood::testing {

class PowerLossFileSystem : public raft::FileSystem {
 public:
  PowerLossFileSystem();

  absl::Status CreateDirs(const std::filesystem::path& path) override;
  absl::Status WriteFile(const std::filesystem::path& path,
                         std::string_view contents) override;
  absl::Status ReadFile(
      const std::filesystem::path& path,
      const std::function<void(std::string_view)>& consume) const override;
  absl::Status SyncFile(const std::filesystem::path& path) override;
  absl::Status SyncDir(const std::filesystem::path& path) override;
  absl::Status Rename(const std::filesystem::path& from,
                      const std::filesystem::path& to) override;
  absl::Status RemoveAll(const std::filesystem::path& path) override;
  absl::StatusOr<std::vector<raft::DirEntry>> List(
      const std::filesystem::path& path) const override;

  // After `operations` more calls that change anything (syncs included), the
  // power goes off: every call fails with Unavailable and changes nothing.
  void CutPowerAfter(uint64_t operations);
  // Power comes back: only what was synced remains.
  void PowerCycle();
  // Calls that changed something so far.
  uint64_t mutations() const { return mutations_; }

 private:
  struct Inode {
    bool is_dir = false;
    std::string data;
    std::string synced_data;
    std::map<std::string, size_t> entries;
    std::map<std::string, size_t> synced_entries;
  };

  // Counts a mutation; Unavailable once the power is off.
  absl::Status Mutate();
  absl::Status PowerCheck() const;
  // The inode at `path` as the program sees it; npos when missing.
  size_t Lookup(const std::filesystem::path& path) const;
  // The folder holding `path` and `path`'s last component.
  absl::Status Parent(const std::filesystem::path& path, size_t* parent,
                      std::string* name) const;

  static constexpr size_t kNone = std::numeric_limits<size_t>::max();
  std::vector<Inode> inodes_;  // inodes_[0] is the root
  uint64_t mutations_ = 0;
  uint64_t power_off_at_ = std::numeric_limits<uint64_t>::max();
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_POWER_LOSS_FILE_SYSTEM_H_
