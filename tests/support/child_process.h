// Driftwood: child processes for the crash and SIGKILL tests: a spawned
// program or a forked function, with its stdout on a pipe read line by line
// against a deadline.
#ifndef DRIFTWOOD_TESTS_SUPPORT_CHILD_PROCESS_H_
#define DRIFTWOOD_TESTS_SUPPORT_CHILD_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace driftwood::testing {

using Clock = std::chrono::steady_clock;

inline int MillisUntil(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - Clock::now())
                        .count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

inline std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) {
    return absl::StrCat("exited with ", WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status));
  }
  return absl::StrCat("wait status ", status);
}

// A child process whose stdout is a pipe to this one. The destructor kills
// and reaps it, so a failed REQUIRE never leaves a child behind.
class Child {
 public:
  // Starts `argv[0]` with `argv`.
  static std::unique_ptr<Child> Spawn(const std::vector<std::string>& args) {
    auto child = std::unique_ptr<Child>(new Child());
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    child->read_fd_ = fds[0];
    posix_spawn_file_actions_t actions;
    REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
    // dup2 clears O_CLOEXEC on the child's fd 1; both pipe ends close on exec.
    REQUIRE(posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO) ==
            0);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (std::string& arg : copy) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const int spawned = posix_spawn(&child->pid_, argv[0], &actions, nullptr,
                                    argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    INFO("posix_spawn " << args[0] << ": " << std::strerror(spawned));
    REQUIRE(spawned == 0);
    return child;
  }

  // Runs `body` in a fork()ed copy of this process; what it writes to the
  // FILE goes to the pipe, its return value is the exit code (via _exit: no
  // destructors or atexit handlers of the copied test process run).
  // REQUIRES: this process has no threads that the child needs (RocksDB's
  // background threads do not survive fork, so the parent must not have
  // opened RocksDB).
  static std::unique_ptr<Child> Fork(const std::function<int(FILE*)>& body) {
    auto child = std::unique_ptr<Child>(new Child());
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    std::fflush(nullptr);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      FILE* out = fdopen(fds[1], "w");
      const int code = out == nullptr ? 120 : body(out);
      if (out != nullptr) std::fflush(out);
      _exit(code);
    }
    close(fds[1]);
    child->pid_ = pid;
    child->read_fd_ = fds[0];
    return child;
  }

  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    if (read_fd_ >= 0) close(read_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  enum class Read { kLine, kTimeout, kEof };

  // Waits until `deadline` for the next complete line.
  Read NextLine(Clock::time_point deadline, std::string* line) {
    while (true) {
      if (const size_t end = buffer_.find('\n'); end != std::string::npos) {
        *line = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return Read::kLine;
      }
      if (eof_) return Read::kEof;
      pollfd p{read_fd_, POLLIN, 0};
      const int ready = poll(&p, 1, MillisUntil(deadline));
      if (ready < 0 && errno == EINTR) continue;
      REQUIRE(ready >= 0);
      if (ready == 0) return Read::kTimeout;
      char chunk[4096];
      const ssize_t n = read(read_fd_, chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      REQUIRE(n >= 0);
      if (n == 0) {
        eof_ = true;
      } else {
        buffer_.append(chunk, static_cast<size_t>(n));
      }
    }
  }

  // Every remaining line until end of file (REQUIRE that it comes before
  // `deadline`), then reaps the child; returns its wait status.
  int Finish(Clock::time_point deadline, std::vector<std::string>* lines) {
    std::string line;
    while (true) {
      const Read read = NextLine(deadline, &line);
      if (read == Read::kEof) break;
      INFO("the child did not finish before its deadline");
      REQUIRE(read == Read::kLine);
      lines->push_back(line);
    }
    return Reap();
  }

  // SIGKILLs the child and reaps it; returns its wait status.
  int Kill() {
    REQUIRE(kill(pid_, SIGKILL) == 0);
    return Reap();
  }

  // Waits for the child to end; returns its wait status.
  int Reap() {
    int status = 0;
    pid_t reaped;
    while ((reaped = waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    REQUIRE(reaped == pid_);
    pid_ = -1;
    return status;
  }

 private:
  Child() = default;

  pid_t pid_ = -1;
  int read_fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_CHILD_PROCESS_H_
