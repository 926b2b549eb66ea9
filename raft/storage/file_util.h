// Driftwood: durable file operations shared by the snapshot store and the
// state machines (docs/design.md "Storage": temporary name, fsync, rename,
// fsync the folder).
//
// Every function returns absl::Status naming the path and the failed call;
// none throws. Durability: a function documented as durable has made its
// effect survive power loss when it returns OK. The overloads without a
// FileSystem use DefaultFileSystem().
#ifndef DRIFTWOOD_RAFT_STORAGE_FILE_UTIL_H_
#define DRIFTWOOD_RAFT_STORAGE_FILE_UTIL_H_

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/util/file_system.h"

namespace driftwood::raft {

// fsync of the regular file at `path`.
absl::Status SyncFile(const std::filesystem::path& path);

// fsync of the folder at `path`, making creations, renames and removals of its
// entries durable.
absl::Status SyncDir(const std::filesystem::path& path);

// fsyncs every regular file directly in `folder`, then the folder itself.
// A file that disappears between the listing and its fsync is skipped: a
// database that purges its obsolete files in the background (RocksDB
// removes a write-ahead log once a flush has written it out) removes only
// files it no longer needs. Any other failure is returned.
absl::Status SyncFolderFiles(FileSystem& file_system,
                             const std::filesystem::path& folder);
absl::Status SyncFolderFiles(const std::filesystem::path& folder);

// Replaces the file at `path` by `contents` durably and atomically: after a
// crash the file holds either its old contents or `contents`. Writes
// `path`.tmp, fsyncs it, renames it over `path` and fsyncs the folder.
absl::Status WriteFileDurably(FileSystem& file_system,
                              const std::filesystem::path& path,
                              std::string_view contents);
absl::Status WriteFileDurably(const std::filesystem::path& path,
                              std::string_view contents);

// The whole contents of the file at `path`. NotFound when it does not exist.
absl::StatusOr<std::string> ReadFileToString(const FileSystem& file_system,
                                             const std::filesystem::path& path);
absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

// Renames `from` to `to` (a file or a folder; `to` must not exist as a
// non-empty folder) and fsyncs the parent folders of both, so the rename is
// durable.
absl::Status RenameDurably(FileSystem& file_system,
                           const std::filesystem::path& from,
                           const std::filesystem::path& to);
absl::Status RenameDurably(const std::filesystem::path& from,
                           const std::filesystem::path& to);

// Creates the folder `path` and its missing parents durably: each folder it
// creates is fsynced into its parent, so a power cut cannot make the folder,
// and everything later made durable inside it, disappear.
absl::Status CreateDirsDurably(FileSystem& file_system,
                               const std::filesystem::path& path);
absl::Status CreateDirsDurably(const std::filesystem::path& path);

// Removes `path` and everything below it; OK when it does not exist. Not
// durable by itself: call SyncDir on the parent when that matters.
absl::Status RemoveAll(const std::filesystem::path& path);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_FILE_UTIL_H_
