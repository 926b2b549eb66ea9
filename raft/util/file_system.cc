#include "raft/util/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(std::string_view call, const fs::path& path,
                        int error) {
  const std::string message = absl::StrCat(
      std::string(call), " ", path.string(), ": ", std::strerror(error));
  return error == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
}

absl::Status SyncPath(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path, errno);
  const int synced = ::fsync(fd);
  const int sync_error = errno;
  ::close(fd);
  if (synced != 0) return ErrnoError("fsync", path, sync_error);
  return absl::OkStatus();
}

class PosixFileSystem : public FileSystem {
 public:
  absl::Status CreateDirs(const fs::path& path) override {
    std::error_code error;
    fs::create_directories(path, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("create folder ", path.string(), ": ", error.message()));
    }
    return absl::OkStatus();
  }

  absl::Status WriteFile(const fs::path& path,
                         std::string_view contents) override {
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("open", path, errno);
    size_t written = 0;
    while (written < contents.size()) {
      const ssize_t n =
          ::write(fd, contents.data() + written, contents.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int error = errno;
        ::close(fd);
        return ErrnoError("write", path, error);
      }
      written += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) return ErrnoError("close", path, errno);
    return absl::OkStatus();
  }

  absl::Status ReadFile(
      const fs::path& path,
      const std::function<void(std::string_view)>& consume) const override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError("open", path, errno);
    // Sized to the file (up to 1 MiB): most files read here are small
    // (manifests, state files), and the buffer is zero-filled.
    struct stat st;
    const size_t size =
        ::fstat(fd, &st) == 0 && st.st_size >= 0
            ? std::min<size_t>(static_cast<size_t>(st.st_size) + 1, 1 << 20)
            : size_t{1} << 20;
    std::string buffer(std::max<size_t>(size, 4096), '\0');
    while (true) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        const int error = errno;
        ::close(fd);
        return ErrnoError("read", path, error);
      }
      if (n == 0) break;
      consume(std::string_view(buffer.data(), static_cast<size_t>(n)));
    }
    ::close(fd);
    return absl::OkStatus();
  }

  absl::Status SyncFile(const fs::path& path) override {
    return SyncPath(path, O_RDONLY);
  }

  absl::Status SyncDir(const fs::path& path) override {
    return SyncPath(path, O_RDONLY | O_DIRECTORY);
  }

  absl::Status Rename(const fs::path& from, const fs::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoError("rename", from, errno);
    }
    return absl::OkStatus();
  }

  absl::Status RemoveAll(const fs::path& path) override {
    std::error_code error;
    fs::remove_all(path, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("remove ", path.string(), ": ", error.message()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<DirEntry>> List(
      const fs::path& path) const override {
    std::error_code error;
    std::vector<DirEntry> entries;
    for (fs::directory_iterator it(path, error), end; !error && it != end;
         it.increment(error)) {
      // An entry removed since readdir returned it reads as a file.
      std::error_code type_error;
      entries.push_back(
          {it->path().filename().string(), it->is_directory(type_error)});
    }
    if (error) {
      const std::string message =
          absl::StrCat("list ", path.string(), ": ", error.message());
      return error == std::errc::no_such_file_or_directory
                 ? absl::NotFoundError(message)
                 : absl::InternalError(message);
    }
    return entries;
  }
};

}  // namespace

FileSystem& DefaultFileSystem() {
  static PosixFileSystem* const fs = new PosixFileSystem();
  return *fs;
}

}  // namespace driftwood::raft
