#include "raft/storage/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {
namespace {

absl::Status ErrnoError(std::string_view call, const std::filesystem::path& path,
                        int error) {
  const std::string message =
      absl::StrCat(std::string(call), " ", path.string(), ": ", std::strerror(error));
  return error == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
}

absl::Status SyncPath(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path, errno);
  const int synced = ::fsync(fd);
  const int sync_error = errno;
  ::close(fd);
  if (synced != 0) return ErrnoError("fsync", path, sync_error);
  return absl::OkStatus();
}

std::filesystem::path ParentOf(const std::filesystem::path& path) {
  std::filesystem::path parent = path.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace

absl::Status SyncFile(const std::filesystem::path& path) {
  return SyncPath(path, O_RDONLY);
}

absl::Status SyncDir(const std::filesystem::path& path) {
  return SyncPath(path, O_RDONLY | O_DIRECTORY);
}

absl::Status WriteFileDurably(const std::filesystem::path& path,
                              std::string_view contents) {
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  const int fd =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("open", temporary, errno);
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n =
        ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return ErrnoError("write", temporary, error);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoError("fsync", temporary, error);
  }
  if (::close(fd) != 0) return ErrnoError("close", temporary, errno);
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return ErrnoError("rename", temporary, errno);
  }
  return SyncDir(ParentOf(path));
}

absl::StatusOr<std::string> ReadFileToString(
    const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path, errno);
  std::string contents;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      return ErrnoError("read", path, error);
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return contents;
}

absl::Status RenameDurably(const std::filesystem::path& from,
                           const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoError("rename", from, errno);
  }
  if (absl::Status status = SyncDir(ParentOf(to)); !status.ok()) return status;
  if (ParentOf(from) != ParentOf(to)) return SyncDir(ParentOf(from));
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::remove_all(path, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("remove ", path.string(), ": ", error.message()));
  }
  return absl::OkStatus();
}

}  // namespace driftwood::raft
