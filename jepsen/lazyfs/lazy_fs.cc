#include "jepsen/lazyfs/lazy_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace driftwood::jepsen::lazyfs {
namespace {

// A FUSE path relative to the backing folder's descriptor.
const char* Relative(const char* path) {
  while (*path == '/') ++path;
  return *path == '\0' ? "." : path;
}

int Errno() { return -errno; }

// Reads up to `size` bytes at `offset`, fewer only at end of file.
ssize_t PreadFull(int fd, char* buf, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n =
        pread(fd, buf + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int PwriteFull(int fd, const std::string& data, uint64_t offset) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = pwrite(fd, data.data() + done, data.size() - done,
                             static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno();
    done += static_cast<size_t>(n);
  }
  return 0;
}

void Log(std::string_view line) {
  absl::FPrintF(stderr, "driftwood-lazyfs: %s\n", line);
}

}  // namespace

struct LazyFs::Handle {
  int fd;
  FileKey key;
  bool directory;
  bool read_write;   // the backing descriptor is open O_RDWR
  bool append;       // O_APPEND
  bool sync_writes;  // O_SYNC or O_DSYNC
  bool data_sync;    // O_DSYNC without O_SYNC
};

absl::Status WriteCrashCount(const std::string& path, uint64_t crashes) {
  const std::string temporary = absl::StrCat(path, ".tmp");
  const std::string text = absl::StrCat(crashes, "\n");
  const int fd =
      open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("create ", temporary, ": ", std::strerror(errno)));
  }
  const int written = PwriteFull(fd, text, 0);
  close(fd);
  if (written != 0) {
    return absl::InternalError(
        absl::StrCat("write ", temporary, ": ", std::strerror(-written)));
  }
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ", temporary, " to ", path,
                                            ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LazyFs>> LazyFs::Open(
    const LazyFsOptions& options) {
  const int root_fd =
      open(options.backing_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backing folder ", options.backing_dir, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<LazyFs>(new LazyFs(options, root_fd));
}

LazyFs::LazyFs(LazyFsOptions options, int root_fd)
    : options_(std::move(options)), root_fd_(root_fd) {}

LazyFs::~LazyFs() { close(root_fd_); }

LazyFs::Handle* LazyFs::HandleOf(uint64_t fh) {
  return reinterpret_cast<Handle*>(static_cast<uintptr_t>(fh));
}

UnsyncedFile& LazyFs::StateFor(const FileKey& key, uint64_t backing_size) {
  return files_.try_emplace(key, backing_size).first->second;
}

int LazyFs::GetAttr(const char* path, std::optional<uint64_t> fh,
                    struct stat* st) {
  std::lock_guard lock(mu_);
  const int got = fh.has_value() ? fstat(HandleOf(*fh)->fd, st)
                                 : fstatat(root_fd_, Relative(path), st,
                                           AT_SYMLINK_NOFOLLOW);
  if (got != 0) return Errno();
  if (!S_ISREG(st->st_mode)) return 0;
  if (auto it = files_.find(KeyOf(*st)); it != files_.end()) {
    const uint64_t size = it->second.size();
    st->st_size = static_cast<off_t>(size);
    st->st_blocks =
        std::max(st->st_blocks, static_cast<blkcnt_t>((size + 511) / 512));
  }
  return 0;
}

int LazyFs::ReadLink(const char* path, char* buf, size_t size) {
  if (size == 0) return -EINVAL;
  std::lock_guard lock(mu_);
  const ssize_t n = readlinkat(root_fd_, Relative(path), buf, size - 1);
  if (n < 0) return Errno();
  buf[n] = '\0';
  return 0;
}

int LazyFs::MakeNode(const char* path, mode_t mode, dev_t dev) {
  std::lock_guard lock(mu_);
  if (S_ISREG(mode)) {
    const int fd = openat(root_fd_, Relative(path),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return Errno();
    close(fd);
    return 0;
  }
  if (S_ISFIFO(mode)) {
    return mkfifoat(root_fd_, Relative(path), mode) == 0 ? 0 : Errno();
  }
  return mknodat(root_fd_, Relative(path), mode, dev) == 0 ? 0 : Errno();
}

int LazyFs::MakeDir(const char* path, mode_t mode) {
  std::lock_guard lock(mu_);
  return mkdirat(root_fd_, Relative(path), mode) == 0 ? 0 : Errno();
}

void LazyFs::ForgetIfClosed(const FileKey& key) {
  if (!open_handles_.contains(key)) files_.erase(key);
}

int LazyFs::Unlink(const char* path) {
  std::lock_guard lock(mu_);
  struct stat st;
  if (fstatat(root_fd_, Relative(path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Errno();
  }
  if (unlinkat(root_fd_, Relative(path), 0) != 0) return Errno();
  if (S_ISREG(st.st_mode) && st.st_nlink <= 1) ForgetIfClosed(KeyOf(st));
  return 0;
}

int LazyFs::RemoveDir(const char* path) {
  std::lock_guard lock(mu_);
  return unlinkat(root_fd_, Relative(path), AT_REMOVEDIR) == 0 ? 0 : Errno();
}

int LazyFs::Symlink(const char* target, const char* path) {
  std::lock_guard lock(mu_);
  return symlinkat(target, root_fd_, Relative(path)) == 0 ? 0 : Errno();
}

int LazyFs::Rename(const char* from, const char* to, unsigned int flags) {
  std::lock_guard lock(mu_);
  struct stat source, target;
  if (fstatat(root_fd_, Relative(from), &source, AT_SYMLINK_NOFOLLOW) != 0) {
    return Errno();
  }
  const bool replaces =
      (flags & RENAME_EXCHANGE) == 0 &&
      fstatat(root_fd_, Relative(to), &target, AT_SYMLINK_NOFOLLOW) == 0;
  if (renameat2(root_fd_, Relative(from), root_fd_, Relative(to), flags) != 0) {
    return Errno();
  }
  if (replaces && S_ISREG(target.st_mode) && target.st_nlink <= 1 &&
      KeyOf(target) != KeyOf(source)) {
    ForgetIfClosed(KeyOf(target));
  }
  return 0;
}

int LazyFs::Link(const char* from, const char* to) {
  std::lock_guard lock(mu_);
  return linkat(root_fd_, Relative(from), root_fd_, Relative(to), 0) == 0
             ? 0
             : Errno();
}

int LazyFs::Chmod(const char* path, mode_t mode, std::optional<uint64_t> fh) {
  std::lock_guard lock(mu_);
  const int done = fh.has_value() ? fchmod(HandleOf(*fh)->fd, mode)
                                  : fchmodat(root_fd_, Relative(path), mode, 0);
  return done == 0 ? 0 : Errno();
}

int LazyFs::Chown(const char* path, uid_t uid, gid_t gid,
                  std::optional<uint64_t> fh) {
  std::lock_guard lock(mu_);
  const int done = fh.has_value() ? fchown(HandleOf(*fh)->fd, uid, gid)
                                  : fchownat(root_fd_, Relative(path), uid, gid,
                                             AT_SYMLINK_NOFOLLOW);
  return done == 0 ? 0 : Errno();
}

int LazyFs::Truncate(const char* path, off_t size, std::optional<uint64_t> fh) {
  if (size < 0) return -EINVAL;
  std::lock_guard lock(mu_);
  struct stat st;
  const int got = fh.has_value() ? fstat(HandleOf(*fh)->fd, &st)
                                 : fstatat(root_fd_, Relative(path), &st,
                                           AT_SYMLINK_NOFOLLOW);
  if (got != 0) return Errno();
  if (S_ISDIR(st.st_mode)) return -EISDIR;
  if (!S_ISREG(st.st_mode)) return -EINVAL;
  StateFor(KeyOf(st), static_cast<uint64_t>(st.st_size))
      .Truncate(static_cast<uint64_t>(size));
  return 0;
}

int LazyFs::Utimens(const char* path, const struct timespec times[2],
                    std::optional<uint64_t> fh) {
  std::lock_guard lock(mu_);
  const int done = fh.has_value() ? futimens(HandleOf(*fh)->fd, times)
                                  : utimensat(root_fd_, Relative(path), times,
                                              AT_SYMLINK_NOFOLLOW);
  return done == 0 ? 0 : Errno();
}

int LazyFs::Access(const char* path, int mask) {
  std::lock_guard lock(mu_);
  return faccessat(root_fd_, Relative(path), mask, 0) == 0 ? 0 : Errno();
}

int LazyFs::StatFs(struct statvfs* st) {
  std::lock_guard lock(mu_);
  return fstatvfs(root_fd_, st) == 0 ? 0 : Errno();
}

int LazyFs::OpenBacking(const char* path, int flags, int create_flags,
                        mode_t mode, bool* read_write) {
  // O_TRUNC and O_APPEND are applied to the unsynced state, O_SYNC and
  // O_DSYNC by MakeDurable; the backing descriptor gets none of them.
  const int base = O_CLOEXEC | (flags & O_NOFOLLOW) | create_flags;
  int fd = openat(root_fd_, Relative(path), base | O_RDWR, mode);
  *read_write = fd >= 0;
  if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS ||
                 errno == ETXTBSY)) {
    fd = openat(root_fd_, Relative(path), base | (flags & O_ACCMODE), mode);
  }
  return fd < 0 ? Errno() : fd;
}

int LazyFs::FinishOpen(int fd, bool read_write, int flags, uint64_t* fh) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = Errno();
    close(fd);
    return error;
  }
  const FileKey key = KeyOf(st);
  if ((flags & O_TRUNC) != 0 && S_ISREG(st.st_mode) &&
      (st.st_size > 0 || files_.contains(key))) {
    StateFor(key, static_cast<uint64_t>(st.st_size)).Truncate(0);
  }
  auto* handle = new Handle{
      .fd = fd,
      .key = key,
      .directory = false,
      .read_write = read_write,
      .append = (flags & O_APPEND) != 0,
      .sync_writes = (flags & (O_SYNC | O_DSYNC)) != 0,
      .data_sync = (flags & O_SYNC) != O_SYNC,
  };
  ++open_handles_[key];
  *fh = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(handle));
  return 0;
}

int LazyFs::Open(const char* path, int flags, uint64_t* fh) {
  std::lock_guard lock(mu_);
  bool read_write = false;
  const int fd = OpenBacking(path, flags, 0, 0, &read_write);
  if (fd < 0) return fd;
  return FinishOpen(fd, read_write, flags, fh);
}

int LazyFs::Create(const char* path, mode_t mode, int flags, uint64_t* fh) {
  std::lock_guard lock(mu_);
  bool read_write = false;
  const int fd =
      OpenBacking(path, flags, O_CREAT | (flags & O_EXCL), mode, &read_write);
  if (fd < 0) return fd;
  return FinishOpen(fd, read_write, flags, fh);
}

int LazyFs::Read(uint64_t fh, char* buf, size_t size, off_t offset) {
  if (offset < 0) return -EINVAL;
  std::lock_guard lock(mu_);
  const Handle& handle = *HandleOf(fh);
  const uint64_t start = static_cast<uint64_t>(offset);
  const auto it = files_.find(handle.key);
  if (it == files_.end()) {
    const ssize_t n = PreadFull(handle.fd, buf, size, start);
    return n < 0 ? Errno() : static_cast<int>(n);
  }
  const UnsyncedFile& file = it->second;
  if (start >= file.size()) return 0;
  const size_t length =
      static_cast<size_t>(std::min<uint64_t>(size, file.size() - start));
  const size_t from_backing = start < file.visible_backing()
                                  ? static_cast<size_t>(std::min<uint64_t>(
                                        length, file.visible_backing() - start))
                                  : 0;
  const ssize_t n = PreadFull(handle.fd, buf, from_backing, start);
  if (n < 0) return Errno();
  std::memset(buf + n, 0, length - static_cast<size_t>(n));
  file.Overlay(start, buf, length);
  return static_cast<int>(length);
}

int LazyFs::Write(uint64_t fh, const char* buf, size_t size, off_t offset) {
  if (offset < 0) return -EINVAL;
  std::lock_guard lock(mu_);
  Handle& handle = *HandleOf(fh);
  auto it = files_.find(handle.key);
  if (it == files_.end()) {
    struct stat st;
    if (fstat(handle.fd, &st) != 0) return Errno();
    it =
        files_.try_emplace(handle.key, static_cast<uint64_t>(st.st_size)).first;
  }
  UnsyncedFile& file = it->second;
  const uint64_t at =
      handle.append ? file.size() : static_cast<uint64_t>(offset);
  file.Write(at, std::string_view(buf, size));
  if (handle.sync_writes) {
    const int synced = MakeDurable(handle, /*sync=*/true, handle.data_sync);
    if (synced != 0) return synced;
  } else if (file.unsynced_bytes() > options_.max_unsynced_bytes) {
    if (write_throughs_ == 0) {
      Log(absl::StrFormat(
          "inode %d has more than %d unsynced bytes: writing it through to "
          "the backing file without fsync, so a crash will not lose it "
          "(logged once; the crash lines count write-throughs)",
          handle.key.ino, options_.max_unsynced_bytes));
    }
    ++write_throughs_;
    const int written = MakeDurable(handle, /*sync=*/false, false);
    if (written != 0) return written;
  }
  return static_cast<int>(size);
}

int LazyFs::WriteBack(int fd, const UnsyncedFile& file) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Errno();
  if (file.visible_backing() < static_cast<uint64_t>(st.st_size) &&
      ftruncate(fd, static_cast<off_t>(file.visible_backing())) != 0) {
    return Errno();
  }
  for (const auto& [offset, data] : file.extents()) {
    if (const int written = PwriteFull(fd, data, offset); written != 0) {
      return written;
    }
  }
  if (fstat(fd, &st) != 0) return Errno();
  if (static_cast<uint64_t>(st.st_size) != file.size() &&
      ftruncate(fd, static_cast<off_t>(file.size())) != 0) {
    return Errno();
  }
  return 0;
}

int LazyFs::MakeDurable(Handle& handle, bool sync, bool datasync) {
  int fd = handle.fd;
  int reopened = -1;
  const auto it = files_.find(handle.key);
  if (it != files_.end()) {
    if (!handle.read_write) {
      // A read-only handle may sync a file another handle wrote.
      const std::string self = absl::StrCat("/proc/self/fd/", handle.fd);
      reopened = open(self.c_str(), O_WRONLY | O_CLOEXEC);
      if (reopened < 0) return Errno();
      fd = reopened;
    }
    if (const int written = WriteBack(fd, it->second); written != 0) {
      if (reopened >= 0) close(reopened);
      return written;
    }
    files_.erase(it);
  }
  int result = 0;
  if (sync && (datasync ? fdatasync(fd) : fsync(fd)) != 0) result = Errno();
  if (reopened >= 0) close(reopened);
  return result;
}

int LazyFs::Fsync(uint64_t fh, bool datasync) {
  std::lock_guard lock(mu_);
  return MakeDurable(*HandleOf(fh), /*sync=*/true, datasync);
}

int LazyFs::Fallocate(uint64_t fh, int mode, off_t offset, off_t length) {
  if (offset < 0 || length <= 0) return -EINVAL;
  std::lock_guard lock(mu_);
  const Handle& handle = *HandleOf(fh);
  if (mode == FALLOC_FL_KEEP_SIZE) {
    return fallocate(handle.fd, mode, offset, length) == 0 ? 0 : Errno();
  }
  if (mode != 0) return -EOPNOTSUPP;
  struct stat st;
  if (fstat(handle.fd, &st) != 0) return Errno();
  StateFor(handle.key, static_cast<uint64_t>(st.st_size))
      .Extend(static_cast<uint64_t>(offset) + static_cast<uint64_t>(length));
  return 0;
}

int LazyFs::Release(uint64_t fh) {
  std::lock_guard lock(mu_);
  Handle* handle = HandleOf(fh);
  struct stat st;
  const bool unlinked = fstat(handle->fd, &st) == 0 && st.st_nlink == 0;
  close(handle->fd);
  if (auto it = open_handles_.find(handle->key); --it->second == 0) {
    open_handles_.erase(it);
    if (unlinked) files_.erase(handle->key);
  }
  delete handle;
  return 0;
}

int LazyFs::OpenDir(const char* path, uint64_t* fh) {
  std::lock_guard lock(mu_);
  const int fd =
      openat(root_fd_, Relative(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno();
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = Errno();
    close(fd);
    return error;
  }
  auto* handle = new Handle{.fd = fd, .key = KeyOf(st), .directory = true};
  *fh = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(handle));
  return 0;
}

int LazyFs::ReadDir(
    uint64_t fh,
    const std::function<bool(const char* name, const struct stat& st)>& add) {
  std::lock_guard lock(mu_);
  // A fresh stream over a duplicate, so every listing starts at the
  // beginning and the handle's descriptor stays open.
  const int fd = fcntl(HandleOf(fh)->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Errno();
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    const int error = Errno();
    close(fd);
    return error;
  }
  rewinddir(dir);
  errno = 0;
  while (const dirent* entry = readdir(dir)) {
    struct stat st = {};
    st.st_ino = entry->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(entry->d_type));
    if (!add(entry->d_name, st)) break;
    errno = 0;
  }
  const int error = errno == 0 ? 0 : Errno();
  closedir(dir);
  return error;
}

int LazyFs::FsyncDir(uint64_t fh, bool datasync) {
  std::lock_guard lock(mu_);
  const int fd = HandleOf(fh)->fd;
  return (datasync ? fdatasync(fd) : fsync(fd)) == 0 ? 0 : Errno();
}

int LazyFs::ReleaseDir(uint64_t fh) {
  std::lock_guard lock(mu_);
  Handle* handle = HandleOf(fh);
  close(handle->fd);
  delete handle;
  return 0;
}

CrashReport LazyFs::DiscardAll() {
  CrashReport report;
  for (const auto& [key, file] : files_) {
    ++report.files;
    report.bytes += file.unsynced_bytes();
  }
  files_.clear();
  return report;
}

void LazyFs::WriteControlFile(uint64_t crashes) const {
  if (options_.control_path.empty()) return;
  if (absl::Status written = WriteCrashCount(options_.control_path, crashes);
      !written.ok()) {
    Log(absl::StrCat("cannot update the control file: ", written.ToString()));
  }
}

CrashReport LazyFs::Crash() {
  std::lock_guard lock(mu_);
  CrashReport report = DiscardAll();
  report.crashes = ++crashes_;
  WriteControlFile(report.crashes);
  Log(absl::StrFormat(
      "crash %d: dropped %d unsynced bytes in %d files (%d write-throughs so "
      "far)",
      report.crashes, report.bytes, report.files, write_throughs_));
  return report;
}

CrashReport LazyFs::DiscardAtExit() {
  std::lock_guard lock(mu_);
  CrashReport report = DiscardAll();
  report.crashes = crashes_;
  Log(absl::StrFormat(
      "unmounted after %d crashes: discarded %d unsynced bytes in %d files",
      report.crashes, report.bytes, report.files));
  return report;
}

}  // namespace driftwood::jepsen::lazyfs
