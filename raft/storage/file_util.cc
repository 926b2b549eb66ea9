#include "raft/storage/file_util.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

fs::path ParentOf(const fs::path& path) {
  fs::path parent = path.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

}  // namespace

absl::Status SyncFile(const fs::path& path) {
  return DefaultFileSystem().SyncFile(path);
}

absl::Status SyncDir(const fs::path& path) {
  return DefaultFileSystem().SyncDir(path);
}

absl::Status SyncFolderFiles(FileSystem& file_system, const fs::path& folder) {
  absl::StatusOr<std::vector<DirEntry>> entries = file_system.List(folder);
  if (!entries.ok()) return entries.status();
  for (const DirEntry& entry : *entries) {
    if (entry.is_dir) continue;
    absl::Status synced = file_system.SyncFile(folder / entry.name);
    if (!synced.ok() && !absl::IsNotFound(synced)) return synced;
  }
  return file_system.SyncDir(folder);
}

absl::Status SyncFolderFiles(const fs::path& folder) {
  return SyncFolderFiles(DefaultFileSystem(), folder);
}

absl::Status WriteFileDurably(FileSystem& file_system, const fs::path& path,
                              std::string_view contents) {
  fs::path temporary = path;
  temporary += ".tmp";
  if (absl::Status status = file_system.WriteFile(temporary, contents);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = file_system.SyncFile(temporary); !status.ok()) {
    return status;
  }
  if (absl::Status status = file_system.Rename(temporary, path); !status.ok()) {
    return status;
  }
  return file_system.SyncDir(ParentOf(path));
}

absl::Status WriteFileDurably(const fs::path& path, std::string_view contents) {
  return WriteFileDurably(DefaultFileSystem(), path, contents);
}

absl::StatusOr<std::string> ReadFileToString(const FileSystem& file_system,
                                             const fs::path& path) {
  std::string contents;
  if (absl::Status status = file_system.ReadFile(
          path, [&](std::string_view chunk) { contents.append(chunk); });
      !status.ok()) {
    return status;
  }
  return contents;
}

absl::StatusOr<std::string> ReadFileToString(const fs::path& path) {
  return ReadFileToString(DefaultFileSystem(), path);
}

absl::Status RenameDurably(FileSystem& file_system, const fs::path& from,
                           const fs::path& to) {
  if (absl::Status status = file_system.Rename(from, to); !status.ok())
    return status;
  if (absl::Status status = file_system.SyncDir(ParentOf(to)); !status.ok()) {
    return status;
  }
  if (ParentOf(from) != ParentOf(to))
    return file_system.SyncDir(ParentOf(from));
  return absl::OkStatus();
}

absl::Status RenameDurably(const fs::path& from, const fs::path& to) {
  return RenameDurably(DefaultFileSystem(), from, to);
}

absl::Status CreateDirsDurably(FileSystem& file_system, const fs::path& path) {
  // Find the deepest folder that exists, walking up (each check lists only
  // that folder: not the large ones near the root, such as /dev), then
  // create the missing ones from the top; each is synced into its parent.
  std::vector<fs::path> missing;
  for (fs::path prefix = path.lexically_normal();
       !prefix.empty() && prefix != prefix.root_path();
       prefix = prefix.parent_path()) {
    if (prefix.filename().empty()) continue;  // a trailing separator
    absl::StatusOr<std::vector<DirEntry>> existing = file_system.List(prefix);
    if (existing.ok()) break;
    if (!absl::IsNotFound(existing.status())) return existing.status();
    missing.push_back(prefix);
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (absl::Status status = file_system.CreateDirs(*it); !status.ok()) {
      return status;
    }
    if (absl::Status status = file_system.SyncDir(ParentOf(*it));
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status CreateDirsDurably(const fs::path& path) {
  return CreateDirsDurably(DefaultFileSystem(), path);
}

absl::Status RemoveAll(const fs::path& path) {
  return DefaultFileSystem().RemoveAll(path);
}

}  // namespace driftwood::raft
