// driftwood-lazyfs: a FUSE file system over a backing folder that keeps
// file contents written since the last fsync in memory, and drops them all
// on SIGUSR1, as a power cut would. jepsen/lazyfs/README.md describes the
// model, the control protocol and the limits.
//
// Exit codes: 0 unmounted cleanly; 1 the mount or the FUSE loop failed;
// 2 bad arguments.
#define FUSE_USE_VERSION 314
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "jepsen/lazyfs/lazy_fs.h"

namespace driftwood::jepsen::lazyfs {
namespace {

constexpr char kUsage[] =
    "usage: driftwood-lazyfs BACKING_DIR MOUNTPOINT --control PATH\n"
    "                        [--max-unsynced-mib N] [--foreground]\n"
    "\n"
    "Mounts BACKING_DIR at MOUNTPOINT. File contents written through the\n"
    "mount stay in memory until fsync or fdatasync writes them to the\n"
    "backing file; metadata operations (create, rename, unlink, mkdir, ...)\n"
    "reach BACKING_DIR at once. SIGUSR1 drops every unsynced write, as a\n"
    "power cut would; SIGTERM or SIGINT unmounts (unsynced data is lost).\n"
    "\n"
    "  --control PATH        required: holds the number of SIGUSR1 drops so\n"
    "                        far (0 at start; replaced atomically after each\n"
    "                        drop). Send SIGUSR1, then poll until it grows.\n"
    "                        Must not be inside MOUNTPOINT.\n"
    "  --max-unsynced-mib N  a file with more unsynced data than N MiB is\n"
    "                        written through to its backing file without\n"
    "                        fsync, so a drop no longer loses it (logged\n"
    "                        once; default 256)\n"
    "  --foreground, -f      stay in the foreground (else daemonize once\n"
    "                        mounted)\n"
    "  --help, -h            this text\n"
    "\n"
    "Exit codes: 0 unmounted cleanly; 1 mounting or serving failed;\n"
    "2 bad arguments.\n";

int BadUsage(const std::string& why) {
  absl::FPrintF(stderr, "driftwood-lazyfs: %s\n\n%s", why, kUsage);
  return 2;
}

struct Flags {
  std::string backing_dir;
  std::string mountpoint;
  std::string control_path;
  uint64_t max_unsynced_mib = 256;
  bool foreground = false;
};

// Parses argv into `flags`; returns an exit code if the program should stop.
std::optional<int> ParseFlags(int argc, char** argv, Flags* flags) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag == "--foreground" || flag == "-f") {
      flags->foreground = true;
    } else if (flag == "--control" || flag == "--max-unsynced-mib") {
      if (i + 1 == argc) return BadUsage(absl::StrCat(flag, " needs a value"));
      const std::string value = argv[++i];
      if (flag == "--control") {
        flags->control_path = value;
      } else if (!absl::SimpleAtoi(value, &flags->max_unsynced_mib) ||
                 flags->max_unsynced_mib == 0 ||
                 flags->max_unsynced_mib > (uint64_t{1} << 30)) {
        return BadUsage(absl::StrCat("--max-unsynced-mib: \"", value,
                                     "\" is not a number of MiB >= 1"));
      }
    } else if (flag.starts_with("-")) {
      return BadUsage(absl::StrCat("unknown flag ", flag));
    } else {
      positional.push_back(flag);
    }
  }
  if (positional.size() != 2) {
    return BadUsage("expected BACKING_DIR and MOUNTPOINT");
  }
  if (flags->control_path.empty()) return BadUsage("--control is required");
  flags->backing_dir = positional[0];
  flags->mountpoint = positional[1];
  return std::nullopt;
}

// The canonical absolute path of an existing folder, or an error message.
std::optional<std::string> Folder(const std::string& role,
                                  const std::string& path, std::string* why) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    *why = absl::StrCat(role, " ", path, ": ", std::strerror(errno));
    return std::nullopt;
  }
  if (!S_ISDIR(st.st_mode)) {
    *why = absl::StrCat(role, " ", path, ": not a folder");
    return std::nullopt;
  }
  char* resolved = realpath(path.c_str(), nullptr);
  if (resolved == nullptr) {
    *why = absl::StrCat(role, " ", path, ": ", std::strerror(errno));
    return std::nullopt;
  }
  std::string canonical = resolved;
  free(resolved);
  return canonical;
}

bool IsWithin(const std::string& path, const std::string& folder) {
  return path == folder || (path.starts_with(folder) &&
                            (folder == "/" || path[folder.size()] == '/'));
}

LazyFs* Fs() { return static_cast<LazyFs*>(fuse_get_context()->private_data); }

std::optional<uint64_t> Fh(const fuse_file_info* fi) {
  if (fi == nullptr) return std::nullopt;
  return fi->fh;
}

void* OpInit(fuse_conn_info* conn, fuse_config* cfg) {
  // Every attribute and lookup comes from this process: a drop changes
  // sizes behind the kernel's back.
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  // No page cache: after a drop, readers must see only durable data.
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->auto_cache = 0;
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE);
  cfg->use_ino = 1;
  // Operations on open files go through the handle, so an unlinked open
  // file needs no hidden name in the backing folder.
  cfg->nullpath_ok = 1;
  cfg->hard_remove = 1;
  // No request interruption: it would signal worker threads with SIGUSR1.
  cfg->intr = 0;
  return fuse_get_context()->private_data;
}

int OpGetAttr(const char* path, struct stat* st, fuse_file_info* fi) {
  return Fs()->GetAttr(path, Fh(fi), st);
}
int OpReadLink(const char* path, char* buf, size_t size) {
  return Fs()->ReadLink(path, buf, size);
}
int OpMakeNode(const char* path, mode_t mode, dev_t dev) {
  return Fs()->MakeNode(path, mode, dev);
}
int OpMakeDir(const char* path, mode_t mode) {
  return Fs()->MakeDir(path, mode);
}
int OpUnlink(const char* path) { return Fs()->Unlink(path); }
int OpRemoveDir(const char* path) { return Fs()->RemoveDir(path); }
int OpSymlink(const char* target, const char* path) {
  return Fs()->Symlink(target, path);
}
int OpRename(const char* from, const char* to, unsigned int flags) {
  return Fs()->Rename(from, to, flags);
}
int OpLink(const char* from, const char* to) { return Fs()->Link(from, to); }
int OpChmod(const char* path, mode_t mode, fuse_file_info* fi) {
  return Fs()->Chmod(path, mode, Fh(fi));
}
int OpChown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  return Fs()->Chown(path, uid, gid, Fh(fi));
}
int OpTruncate(const char* path, off_t size, fuse_file_info* fi) {
  return Fs()->Truncate(path, size, Fh(fi));
}
int OpOpen(const char* path, fuse_file_info* fi) {
  fi->direct_io = 1;
  fi->keep_cache = 0;
  return Fs()->Open(path, fi->flags, &fi->fh);
}
int OpCreate(const char* path, mode_t mode, fuse_file_info* fi) {
  fi->direct_io = 1;
  fi->keep_cache = 0;
  return Fs()->Create(path, mode, fi->flags, &fi->fh);
}
int OpRead(const char*, char* buf, size_t size, off_t offset,
           fuse_file_info* fi) {
  return Fs()->Read(fi->fh, buf, size, offset);
}
int OpWrite(const char*, const char* buf, size_t size, off_t offset,
            fuse_file_info* fi) {
  return Fs()->Write(fi->fh, buf, size, offset);
}
int OpStatFs(const char*, struct statvfs* st) { return Fs()->StatFs(st); }
// close(2) makes nothing durable.
int OpFlush(const char*, fuse_file_info*) { return 0; }
int OpRelease(const char*, fuse_file_info* fi) { return Fs()->Release(fi->fh); }
int OpFsync(const char*, int datasync, fuse_file_info* fi) {
  return Fs()->Fsync(fi->fh, datasync != 0);
}
int OpOpenDir(const char* path, fuse_file_info* fi) {
  return Fs()->OpenDir(path, &fi->fh);
}
int OpReadDir(const char*, void* buf, fuse_fill_dir_t fill, off_t,
              fuse_file_info* fi, fuse_readdir_flags) {
  return Fs()->ReadDir(fi->fh, [&](const char* name, const struct stat& st) {
    return fill(buf, name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) == 0;
  });
}
int OpReleaseDir(const char*, fuse_file_info* fi) {
  return Fs()->ReleaseDir(fi->fh);
}
int OpFsyncDir(const char*, int datasync, fuse_file_info* fi) {
  return Fs()->FsyncDir(fi->fh, datasync != 0);
}
int OpAccess(const char* path, int mask) { return Fs()->Access(path, mask); }
int OpUtimens(const char* path, const struct timespec times[2],
              fuse_file_info* fi) {
  return Fs()->Utimens(path, times, Fh(fi));
}
int OpFallocate(const char*, int mode, off_t offset, off_t length,
                fuse_file_info* fi) {
  if (fi == nullptr) return -EBADF;
  return Fs()->Fallocate(fi->fh, mode, offset, length);
}

// No lock or flock operation: the kernel then keeps fcntl and flock locks
// itself, which is right for a mount used by processes of one machine.
fuse_operations Operations() {
  fuse_operations ops = {};
  ops.init = OpInit;
  ops.getattr = OpGetAttr;
  ops.readlink = OpReadLink;
  ops.mknod = OpMakeNode;
  ops.mkdir = OpMakeDir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRemoveDir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.chmod = OpChmod;
  ops.chown = OpChown;
  ops.truncate = OpTruncate;
  ops.open = OpOpen;
  ops.create = OpCreate;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.statfs = OpStatFs;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.opendir = OpOpenDir;
  ops.readdir = OpReadDir;
  ops.releasedir = OpReleaseDir;
  ops.fsyncdir = OpFsyncDir;
  ops.access = OpAccess;
  ops.utimens = OpUtimens;
  ops.fallocate = OpFallocate;
  return ops;
}

// Runs on its own thread, the only one with SIGUSR1 unblocked (through
// sigwait): each SIGUSR1 is a crash, until `stopping` is set and one more
// SIGUSR1 arrives.
void ControlLoop(LazyFs* fs, const std::atomic<bool>* stopping) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  while (true) {
    int signal_number = 0;
    if (sigwait(&usr1, &signal_number) != 0) continue;
    if (stopping->load()) return;
    fs->Crash();
  }
}

int Run(int argc, char** argv) {
  Flags flags;
  if (std::optional<int> done = ParseFlags(argc, argv, &flags)) return *done;
  std::string why;
  const std::optional<std::string> backing =
      Folder("backing folder", flags.backing_dir, &why);
  if (!backing) return BadUsage(why);
  const std::optional<std::string> mountpoint =
      Folder("mountpoint", flags.mountpoint, &why);
  if (!mountpoint) return BadUsage(why);
  if (IsWithin(*mountpoint, *backing)) {
    return BadUsage("the mountpoint must not be inside the backing folder");
  }
  std::string control = flags.control_path;
  if (control.ends_with("/")) return BadUsage("--control names a folder");
  const size_t slash = control.rfind('/');
  const std::optional<std::string> control_dir = Folder(
      "--control folder",
      slash == std::string::npos ? "." : control.substr(0, slash + 1), &why);
  if (!control_dir) return BadUsage(why);
  if (IsWithin(*control_dir, *mountpoint)) {
    return BadUsage("--control must not be inside the mountpoint");
  }
  control = absl::StrCat(
      *control_dir, "/",
      slash == std::string::npos ? control : control.substr(slash + 1));
  if (absl::Status written = WriteCrashCount(control, 0); !written.ok()) {
    return BadUsage(written.ToString());
  }

  // Modes arrive already masked by the caller's umask.
  umask(0);
  // Before any thread starts, so that every thread inherits the mask and
  // SIGUSR1 reaches only ControlLoop.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  absl::StatusOr<std::unique_ptr<LazyFs>> fs = LazyFs::Open({
      .backing_dir = *backing,
      .control_path = control,
      .max_unsynced_bytes = flags.max_unsynced_mib << 20,
  });
  if (!fs.ok()) return BadUsage(fs.status().ToString());

  std::vector<std::string> fuse_argv = {
      "driftwood-lazyfs", "-o",
      "default_permissions,fsname=driftwood-lazyfs,subtype=driftwood-lazyfs"};
  std::vector<char*> fuse_argv_pointers;
  for (std::string& arg : fuse_argv) fuse_argv_pointers.push_back(arg.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fuse_argv_pointers.size()),
                                  fuse_argv_pointers.data());
  const fuse_operations ops = Operations();
  fuse* fuse = fuse_new(&args, &ops, sizeof(ops), fs->get());
  if (fuse == nullptr) {
    absl::FPrintF(stderr, "driftwood-lazyfs: fuse_new failed\n");
    fuse_opt_free_args(&args);
    return 1;
  }
  if (fuse_mount(fuse, mountpoint->c_str()) != 0) {
    absl::FPrintF(stderr, "driftwood-lazyfs: cannot mount at %s\n",
                  *mountpoint);
    fuse_destroy(fuse);
    fuse_opt_free_args(&args);
    return 1;
  }
  fuse_session* session = fuse_get_session(fuse);
  int result = 1;
  if (fuse_set_signal_handlers(session) == 0) {
    absl::FPrintF(stderr,
                  "driftwood-lazyfs: mounted %s at %s; control file %s; "
                  "unsynced cap %d MiB per file\n",
                  *backing, *mountpoint, control, flags.max_unsynced_mib);
    fuse_daemonize(flags.foreground ? 1 : 0);
    std::atomic<bool> stopping = false;
    std::thread control_thread(ControlLoop, fs->get(), &stopping);
    const int loop = fuse_loop_mt(fuse, nullptr);
    stopping.store(true);
    pthread_kill(control_thread.native_handle(), SIGUSR1);
    control_thread.join();
    fuse_remove_signal_handlers(session);
    // A positive result is the signal that ended the loop.
    result = loop < 0 ? 1 : 0;
    if (loop < 0) {
      absl::FPrintF(stderr, "driftwood-lazyfs: FUSE loop failed: %s\n",
                    std::strerror(-loop));
    }
  }
  fuse_unmount(fuse);
  (*fs)->DiscardAtExit();
  fuse_destroy(fuse);
  fuse_opt_free_args(&args);
  return result;
}

}  // namespace
}  // namespace driftwood::jepsen::lazyfs

int main(int argc, char** argv) {
  return driftwood::jepsen::lazyfs::Run(argc, argv);
}
