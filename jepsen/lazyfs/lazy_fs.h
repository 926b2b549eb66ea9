// Driftwood lazyfs: the file system behind driftwood-lazyfs, independent of
// FUSE. Every operation works on a backing folder, except that file contents
// written since the file's last fsync stay in memory (UnsyncedFile) until the
// next fsync or fdatasync, and Crash() discards them. jepsen/lazyfs/README.md
// describes the model and its limits.
#ifndef DRIFTWOOD_JEPSEN_LAZYFS_LAZY_FS_H_
#define DRIFTWOOD_JEPSEN_LAZYFS_LAZY_FS_H_

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jepsen/lazyfs/unsynced_file.h"

namespace driftwood::jepsen::lazyfs {

struct LazyFsOptions {
  // The folder holding the durable contents. REQUIRES: an existing folder.
  std::string backing_dir;
  // Where Crash() writes the number of crashes so far (temporary file and
  // rename); empty: nowhere.
  std::string control_path;
  // A file whose unsynced bytes exceed this is written through to its
  // backing file (without fsync), so a crash no longer loses that data.
  uint64_t max_unsynced_bytes = uint64_t{256} << 20;
};

// What Crash() discarded.
struct CrashReport {
  uint64_t crashes = 0;  // crashes so far, this one included
  uint64_t files = 0;    // files that had unsynced changes
  uint64_t bytes = 0;    // unsynced bytes written and not synced
};

// Paths are FUSE paths: absolute, "/" being the backing folder. Operations
// return 0 (Read and Write: a byte count) or a negated errno, like the FUSE
// high-level operations they serve. A file handle (`fh`) comes from Open or
// Create and is valid until Release; a folder handle from OpenDir until
// ReleaseDir. An optional `fh` names the open file the kernel acts through;
// without it, the path is used.
//
// Durability: metadata operations (create, mkdir, unlink, rmdir, rename,
// link, symlink, mknod, chmod, chown, utimens) reach the backing folder at
// once. File contents, a file's size set by write, truncate, O_TRUNC or
// fallocate mode 0, are unsynced until Fsync on any handle of the file.
//
// Thread-safe: one mutex serializes every operation, Crash() included.
class LazyFs {
 public:
  static absl::StatusOr<std::unique_ptr<LazyFs>> Open(
      const LazyFsOptions& options);
  ~LazyFs();
  LazyFs(const LazyFs&) = delete;
  LazyFs& operator=(const LazyFs&) = delete;

  // Attributes as the mount shows them: a regular file with unsynced
  // changes reports its logical size.
  int GetAttr(const char* path, std::optional<uint64_t> fh, struct stat* st);
  int ReadLink(const char* path, char* buf, size_t size);
  int MakeNode(const char* path, mode_t mode, dev_t dev);
  int MakeDir(const char* path, mode_t mode);
  // Removing a regular file's last name discards its unsynced data, at once
  // or when its last handle is released.
  int Unlink(const char* path);
  int RemoveDir(const char* path);
  int Symlink(const char* target, const char* path);
  // `flags`: renameat2 flags. Unsynced data is keyed by inode and moves with
  // the file; a replaced file loses its name as in Unlink.
  int Rename(const char* from, const char* to, unsigned int flags);
  int Link(const char* from, const char* to);
  int Chmod(const char* path, mode_t mode, std::optional<uint64_t> fh);
  int Chown(const char* path, uid_t uid, gid_t gid, std::optional<uint64_t> fh);
  // Sets the logical size (unsynced, see UnsyncedFile::Truncate).
  int Truncate(const char* path, off_t size, std::optional<uint64_t> fh);
  int Utimens(const char* path, const struct timespec times[2],
              std::optional<uint64_t> fh);
  int Access(const char* path, int mask);
  int StatFs(struct statvfs* st);

  // `flags`: open(2) flags. O_TRUNC sets the logical size to 0 (unsynced);
  // O_APPEND writes at the logical size; O_SYNC and O_DSYNC make every
  // write durable before it returns.
  int Open(const char* path, int flags, uint64_t* fh);
  int Create(const char* path, mode_t mode, int flags, uint64_t* fh);
  // Returns the number of bytes read (short only at the logical end).
  int Read(uint64_t fh, char* buf, size_t size, off_t offset);
  // Records the write as unsynced; returns `size`.
  int Write(uint64_t fh, const char* buf, size_t size, off_t offset);
  // Makes the file's unsynced data and size durable: writes them to the
  // backing file, then fsyncs (or fdatasyncs) it.
  int Fsync(uint64_t fh, bool datasync);
  // mode 0: grows the logical size (unsynced, no space reserved);
  // FALLOC_FL_KEEP_SIZE: passed to the backing file; others: EOPNOTSUPP.
  int Fallocate(uint64_t fh, int mode, off_t offset, off_t length);
  int Release(uint64_t fh);

  int OpenDir(const char* path, uint64_t* fh);
  // Calls `add` for every entry until it returns false.
  int ReadDir(
      uint64_t fh,
      const std::function<bool(const char* name, const struct stat& st)>& add);
  int FsyncDir(uint64_t fh, bool datasync);
  int ReleaseDir(uint64_t fh);

  // Discards every file's unsynced data and size, as a power cut would,
  // counts the crash, writes the count to the control file and logs what
  // was lost. Open handles stay valid and see the durable contents.
  CrashReport Crash();

  // Discards unsynced data at unmount (not counted as a crash) and logs it.
  CrashReport DiscardAtExit();

 private:
  // A backing file's identity: unsynced data follows the inode across
  // renames and links.
  struct FileKey {
    dev_t dev;
    ino_t ino;
    auto operator<=>(const FileKey&) const = default;
  };
  // An open file or folder; the `fh` values are pointers to it.
  struct Handle;

  LazyFs(LazyFsOptions options, int root_fd);

  static FileKey KeyOf(const struct stat& st) { return {st.st_dev, st.st_ino}; }
  static Handle* HandleOf(uint64_t fh);

  // The unsynced state of `key`, created over a backing file of
  // `backing_size` bytes if absent.
  UnsyncedFile& StateFor(const FileKey& key, uint64_t backing_size);
  // Opens the backing file read-write when allowed (so any handle can write
  // back at fsync), else with the caller's access mode.
  int OpenBacking(const char* path, int flags, int create_flags, mode_t mode,
                  bool* read_write);
  int FinishOpen(int fd, bool read_write, int flags, uint64_t* fh);
  // Writes `file` to the backing file `fd` (no fsync).
  static int WriteBack(int fd, const UnsyncedFile& file);
  // Writes back and drops the state of `handle`'s file, if any; then syncs
  // the backing file if `sync` (fdatasync if `datasync`).
  int MakeDurable(Handle& handle, bool sync, bool datasync);
  // After a regular file lost its last name: forgets its unsynced state
  // unless a handle is open (Release forgets it then).
  void ForgetIfClosed(const FileKey& key);
  CrashReport DiscardAll();
  void WriteControlFile(uint64_t crashes) const;

  const LazyFsOptions options_;
  const int root_fd_;

  std::mutex mu_;
  std::map<FileKey, UnsyncedFile> files_;  // files with unsynced changes
  std::map<FileKey, int> open_handles_;    // > 0 while present
  uint64_t crashes_ = 0;
  uint64_t write_throughs_ = 0;
};

// Writes "<crashes>\n" to `path` through a temporary file and a rename.
absl::Status WriteCrashCount(const std::string& path, uint64_t crashes);

}  // namespace driftwood::jepsen::lazyfs

#endif  // DRIFTWOOD_JEPSEN_LAZYFS_LAZY_FS_H_
