// Driftwood tests: a driftwood-lazyfs process mounted on fresh folders under
// /tmp for the length of a test, and file helpers that REQUIRE success.
#ifndef DRIFTWOOD_TESTS_JEPSEN_LAZYFS_MOUNTED_LAZYFS_H_
#define DRIFTWOOD_TESTS_JEPSEN_LAZYFS_MOUNTED_LAZYFS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

#ifndef DRIFTWOOD_LAZYFS_BINARY
#error "DRIFTWOOD_LAZYFS_BINARY must name the driftwood-lazyfs binary"
#endif

namespace driftwood::jepsen::lazyfs::testing {

using Clock = std::chrono::steady_clock;

// Generous: how long starting, crashing or stopping the file system may take.
constexpr std::chrono::seconds kDeadline(20);
// Between two looks at a condition being polled for.
constexpr std::chrono::milliseconds kPollInterval(10);

// Polls `done` until it holds or kDeadline passes; returns its last answer.
inline bool PollUntil(const std::function<bool()>& done) {
  const Clock::time_point deadline = Clock::now() + kDeadline;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
  return true;
}

// Waits up to kDeadline for `pid` to end, else kills it; returns the wait
// status, and in *in_time whether it ended by itself.
inline int WaitOrKill(pid_t pid, bool* in_time) {
  int status = 0;
  *in_time = PollUntil([&] { return waitpid(pid, &status, WNOHANG) != 0; });
  if (!*in_time) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  return status;
}

// Whether `path` is a mount point now, by /proc/self/mountinfo (which never
// blocks on a file system that stopped answering).
inline bool IsMountPoint(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() > 4 && fields[4] == path) return true;
  }
  return false;
}

// Runs `args` (args[0] a path) to completion with stdout and stderr in
// files; returns the wait status. REQUIREs that it ends before kDeadline.
inline int RunToExit(const std::vector<std::string>& args, std::string* out,
                     std::string* err) {
  char pattern[] = "/tmp/driftwood-lazyfs-run-XXXXXX";
  REQUIRE(mkdtemp(pattern) != nullptr);
  const std::string folder = pattern;
  const std::string out_path = folder + "/stdout";
  const std::string err_path = folder + "/stderr";
  posix_spawn_file_actions_t actions;
  REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
  REQUIRE(posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO,
                                           out_path.c_str(), O_WRONLY | O_CREAT,
                                           0644) == 0);
  REQUIRE(posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                           err_path.c_str(), O_WRONLY | O_CREAT,
                                           0644) == 0);
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& arg : copy) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawned =
      posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  INFO("posix_spawn " << args[0] << ": " << std::strerror(spawned));
  REQUIRE(spawned == 0);
  bool in_time = false;
  const int status = WaitOrKill(pid, &in_time);
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  *out = slurp(out_path);
  *err = slurp(err_path);
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);
  INFO(args[0] << " did not exit before its deadline");
  REQUIRE(in_time);
  return status;
}

// driftwood-lazyfs --foreground over <root>/backing at <root>/mnt with its
// control file at <root>/crashes, <root> a fresh folder under /tmp. The
// constructor returns once the mount is up; the destructor unmounts
// (SIGTERM, then SIGKILL and fusermount3 -u if needed) and removes <root>
// unless the mount is still there. Not thread-safe.
class MountedLazyFs {
 public:
  explicit MountedLazyFs(const std::vector<std::string>& extra_flags = {}) {
    char pattern[] = "/tmp/driftwood-lazyfs-XXXXXX";
    REQUIRE(mkdtemp(pattern) != nullptr);
    root_ = pattern;
    backing_ = root_ + "/backing";
    mountpoint_ = root_ + "/mnt";
    control_ = root_ + "/crashes";
    try {
      Launch(extra_flags);
    } catch (...) {
      Shutdown();
      throw;
    }
  }
  ~MountedLazyFs() { Shutdown(); }
  MountedLazyFs(const MountedLazyFs&) = delete;
  MountedLazyFs& operator=(const MountedLazyFs&) = delete;

  // `name` in the mount and in the backing folder.
  std::string Path(const std::string& name) const {
    return absl::StrCat(mountpoint_, "/", name);
  }
  std::string BackingPath(const std::string& name) const {
    return absl::StrCat(backing_, "/", name);
  }
  const std::string& mountpoint() const { return mountpoint_; }

  // The count in the control file; 0 if it cannot be read.
  uint64_t Crashes() const {
    std::ifstream in(control_);
    std::string text;
    std::getline(in, text);
    uint64_t crashes = 0;
    if (!absl::SimpleAtoi(text, &crashes)) return 0;
    return crashes;
  }

  // Drops every unsynced write: SIGUSR1, then waits for the count to grow.
  void Crash() {
    const uint64_t before = Crashes();
    REQUIRE(kill(pid_, SIGUSR1) == 0);
    PollUntil([&] { return Crashes() > before; });
    INFO("the control file did not count the crash in time");
    REQUIRE(Crashes() == before + 1);
  }

  // Unmounts by SIGTERM; returns the process's wait status. Idempotent.
  int Stop() {
    if (pid_ <= 0) return stop_status_;
    kill(pid_, SIGTERM);
    bool in_time = false;
    stop_status_ = WaitOrKill(pid_, &in_time);
    if (!in_time) {
      std::fprintf(stderr, "driftwood-lazyfs ignored SIGTERM; it was killed\n");
    }
    pid_ = -1;
    return stop_status_;
  }

 private:
  void Launch(const std::vector<std::string>& extra_flags) {
    REQUIRE(mkdir(backing_.c_str(), 0755) == 0);
    REQUIRE(mkdir(mountpoint_.c_str(), 0755) == 0);
    std::vector<std::string> args = {
        DRIFTWOOD_LAZYFS_BINARY, backing_, mountpoint_, "--control", control_,
        "--foreground"};
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const int spawned =
        posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ);
    INFO("posix_spawn " << args[0] << ": " << std::strerror(spawned));
    REQUIRE(spawned == 0);
    const Clock::time_point deadline = Clock::now() + kDeadline;
    while (!IsMountPoint(mountpoint_)) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL("driftwood-lazyfs exited before mounting, wait status " << status);
      }
      REQUIRE(Clock::now() < deadline);
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  void Shutdown() {
    Stop();
    if (IsMountPoint(mountpoint_)) {
      std::fprintf(stderr, "%s is still mounted; fusermount3 -u\n",
                   mountpoint_.c_str());
      const char* argv[] = {"fusermount3", "-u", "-z", mountpoint_.c_str(),
                            nullptr};
      pid_t pid = -1;
      if (posix_spawnp(&pid, argv[0], nullptr, nullptr,
                       const_cast<char**>(argv), environ) == 0) {
        int status = 0;
        waitpid(pid, &status, 0);
      }
      if (IsMountPoint(mountpoint_)) umount2(mountpoint_.c_str(), MNT_DETACH);
    }
    if (IsMountPoint(mountpoint_)) {
      std::fprintf(stderr, "%s is still mounted; leaving %s behind\n",
                   mountpoint_.c_str(), root_.c_str());
      return;
    }
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }

  std::string root_, backing_, mountpoint_, control_;
  pid_t pid_ = -1;
  int stop_status_ = 0;
};

// An open file descriptor, closed on destruction.
class Fd {
 public:
  Fd(const std::string& path, int flags, mode_t mode = 0644)
      : fd_(open(path.c_str(), flags | O_CLOEXEC, mode)) {
    INFO("open " << path << ": " << std::strerror(errno));
    REQUIRE(fd_ >= 0);
  }
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  void Write(const std::string& data) {
    const ssize_t n = write(fd_, data.data(), data.size());
    INFO("write: " << std::strerror(errno));
    REQUIRE(n == static_cast<ssize_t>(data.size()));
  }
  void WriteAt(const std::string& data, off_t offset) {
    const ssize_t n = pwrite(fd_, data.data(), data.size(), offset);
    INFO("pwrite: " << std::strerror(errno));
    REQUIRE(n == static_cast<ssize_t>(data.size()));
  }
  std::string ReadAt(size_t size, off_t offset) const {
    std::string data(size, '\0');
    const ssize_t n = pread(fd_, data.data(), size, offset);
    INFO("pread: " << std::strerror(errno));
    REQUIRE(n >= 0);
    data.resize(static_cast<size_t>(n));
    return data;
  }
  uint64_t Size() const {
    struct stat st;
    const int done = fstat(fd_, &st);
    INFO("fstat: " << std::strerror(errno));
    REQUIRE(done == 0);
    return static_cast<uint64_t>(st.st_size);
  }
  void Truncate(off_t size) {
    const int done = ftruncate(fd_, size);
    INFO("ftruncate: " << std::strerror(errno));
    REQUIRE(done == 0);
  }
  void Fsync() {
    const int done = fsync(fd_);
    INFO("fsync: " << std::strerror(errno));
    REQUIRE(done == 0);
  }
  void Fdatasync() {
    const int done = fdatasync(fd_);
    INFO("fdatasync: " << std::strerror(errno));
    REQUIRE(done == 0);
  }

 private:
  int fd_;
};

// The whole file, read through a fresh descriptor.
inline std::string ReadFile(const std::string& path) {
  Fd fd(path, O_RDONLY);
  std::string contents;
  char chunk[65536];
  while (true) {
    const ssize_t n = read(fd.get(), chunk, sizeof(chunk));
    INFO("read " << path << ": " << std::strerror(errno));
    REQUIRE(n >= 0);
    if (n == 0) return contents;
    contents.append(chunk, static_cast<size_t>(n));
  }
}

inline uint64_t FileSize(const std::string& path) {
  struct stat st;
  const int done = stat(path.c_str(), &st);
  INFO("stat " << path << ": " << std::strerror(errno));
  REQUIRE(done == 0);
  return static_cast<uint64_t>(st.st_size);
}

inline bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// Creates `path` holding `contents`, fsynced.
inline void WriteSynced(const std::string& path, const std::string& contents) {
  Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC);
  fd.Write(contents);
  fd.Fsync();
}

}  // namespace driftwood::jepsen::lazyfs::testing

#endif  // DRIFTWOOD_TESTS_JEPSEN_LAZYFS_MOUNTED_LAZYFS_H_
