// Driftwood: the file operations the snapshot store and file_util need, behind
// an interface so that tests can substitute a file system that loses what was
// not synced in a power cut (tests/support/power_loss_file_system.h).
//
// Durability contract (POSIX, taken strictly): a file's bytes survive a power
// cut only once SyncFile returned after the last write; a name in a folder
// (created, renamed in or out, removed) survives only once SyncDir of that
// folder returned after the change. Implementations are thread-compatible.
#ifndef DRIFTWOOD_RAFT_UTIL_FILE_SYSTEM_H_
#define DRIFTWOOD_RAFT_UTIL_FILE_SYSTEM_H_

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace driftwood::raft {

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Creates the folder and its missing parents; OK when it exists.
  virtual absl::Status CreateDirs(const std::filesystem::path& path) = 0;
  // Creates or truncates the file and writes `contents`.
  virtual absl::Status WriteFile(const std::filesystem::path& path,
                                 std::string_view contents) = 0;
  // Hands the file's bytes to `consume` in order, in chunks. NotFound when it
  // does not exist.
  virtual absl::Status ReadFile(
      const std::filesystem::path& path,
      const std::function<void(std::string_view chunk)>& consume) const = 0;
  virtual absl::Status SyncFile(const std::filesystem::path& path) = 0;
  virtual absl::Status SyncDir(const std::filesystem::path& path) = 0;
  // rename(2): replaces a file, or an empty folder, at `to`.
  virtual absl::Status Rename(const std::filesystem::path& from,
                              const std::filesystem::path& to) = 0;
  // Removes `path` and everything below it; OK when it does not exist.
  virtual absl::Status RemoveAll(const std::filesystem::path& path) = 0;
  // The entries of a folder, in no particular order. NotFound when missing.
  virtual absl::StatusOr<std::vector<DirEntry>> List(
      const std::filesystem::path& path) const = 0;
};

// The process's real file system (POSIX calls).
FileSystem& DefaultFileSystem();

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_UTIL_FILE_SYSTEM_H_
