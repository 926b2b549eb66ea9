#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace driftwood::testing {
namespace {

absl::Status ErrnoError(const std::string& what) {
  return absl::UnavailableError(
      absl::StrCat("loopback proxy: ", what, ": ", std::strerror(errno)));
}

sockaddr_in Loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

void SetNoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Closes `fd` with a reset (RST) instead of an orderly FIN.
void Reset(int fd) {
  if (fd < 0) return;
  const linger abort_on_close{.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close,
             sizeof(abort_on_close));
  close(fd);
}

// One direction of a connection: bytes read from `from` and not yet
// written to the other side.
struct Pipe {
  std::unique_ptr<char[]> data =
      std::make_unique<char[]>(LoopbackProxy::kBufferBytes);
  size_t begin = 0;
  size_t end = 0;
  // The source sent EOF.
  bool eof = false;
  // The EOF was passed on (shutdown(SHUT_WR) of the sink).
  bool shut = false;

  size_t room() const { return LoopbackProxy::kBufferBytes - end; }
  bool empty() const { return begin == end; }
};

enum class Progress { kOk, kFailed };

// Reads what `from` has into `pipe` while there is room.
Progress Fill(int from, Pipe& pipe) {
  while (!pipe.eof && pipe.room() > 0) {
    const ssize_t n = recv(from, pipe.data.get() + pipe.end, pipe.room(), 0);
    if (n > 0) {
      pipe.end += static_cast<size_t>(n);
    } else if (n == 0) {
      pipe.eof = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      return Progress::kFailed;
    }
  }
  return Progress::kOk;
}

// Writes what `pipe` holds to `to`; passes an EOF on once it is empty.
Progress Drain(int to, Pipe& pipe, std::atomic<uint64_t>& bytes_forwarded) {
  while (!pipe.empty()) {
    const ssize_t n = send(to, pipe.data.get() + pipe.begin,
                           pipe.end - pipe.begin, MSG_NOSIGNAL);
    if (n > 0) {
      pipe.begin += static_cast<size_t>(n);
      bytes_forwarded.fetch_add(static_cast<uint64_t>(n),
                                std::memory_order_relaxed);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return Progress::kFailed;
    }
  }
  if (pipe.empty()) {
    pipe.begin = 0;
    pipe.end = 0;
  } else if (pipe.room() == 0 && pipe.begin > 0) {
    std::memmove(pipe.data.get(), pipe.data.get() + pipe.begin,
                 pipe.end - pipe.begin);
    pipe.end -= pipe.begin;
    pipe.begin = 0;
  }
  if (pipe.eof && pipe.empty() && !pipe.shut) {
    if (shutdown(to, SHUT_WR) != 0) return Progress::kFailed;
    pipe.shut = true;
  }
  return Progress::kOk;
}

}  // namespace

struct LoopbackProxy::Connection {
  int client = -1;
  int upstream = -1;
  // The non-blocking connect to the target has not completed yet.
  bool connecting = true;
  Pipe to_upstream;
  Pipe to_client;
  // Set when the connection is to be removed.
  bool closed = false;

  short ClientEvents() const {
    short events = 0;
    if (!to_upstream.eof && to_upstream.room() > 0) events |= POLLIN;
    if (!to_client.empty()) events |= POLLOUT;
    return events;
  }
  short UpstreamEvents() const {
    if (connecting) return POLLOUT;
    short events = 0;
    if (!to_client.eof && to_client.room() > 0) events |= POLLIN;
    if (!to_upstream.empty()) events |= POLLOUT;
    return events;
  }

  void ResetBoth() {
    Reset(client);
    Reset(upstream);
    client = -1;
    upstream = -1;
    closed = true;
  }

  // Moves bytes both ways after poll reported `client_revents` and
  // `upstream_revents`; closes the connection when both directions ended
  // and resets it on any error.
  void Pump(short client_revents, short upstream_revents,
            std::atomic<uint64_t>& bytes_forwarded) {
    if ((client_revents & POLLERR) != 0 || (upstream_revents & POLLERR) != 0) {
      ResetBoth();
      return;
    }
    if (connecting) {
      if (upstream_revents == 0) {
        if (Fill(client, to_upstream) == Progress::kFailed) ResetBoth();
        return;
      }
      int error = 0;
      socklen_t length = sizeof(error);
      if (getsockopt(upstream, SOL_SOCKET, SO_ERROR, &error, &length) != 0 ||
          error != 0) {
        ResetBoth();
        return;
      }
      connecting = false;
    }
    if (Fill(client, to_upstream) == Progress::kFailed ||
        Drain(upstream, to_upstream, bytes_forwarded) == Progress::kFailed ||
        Fill(upstream, to_client) == Progress::kFailed ||
        Drain(client, to_client, bytes_forwarded) == Progress::kFailed) {
      ResetBoth();
      return;
    }
    if (to_upstream.shut && to_client.shut) {
      close(client);
      close(upstream);
      client = -1;
      upstream = -1;
      closed = true;
    }
  }
};

absl::StatusOr<std::unique_ptr<LoopbackProxy>> LoopbackProxy::Start(
    int target_port) {
  const int listen_fd =
      socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) return ErrnoError("socket");
  const int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = Loopback(0);
  if (bind(listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
          0 ||
      listen(listen_fd, 128) != 0) {
    absl::Status status = ErrnoError("bind/listen on 127.0.0.1:0");
    close(listen_fd);
    return status;
  }
  socklen_t length = sizeof(address);
  if (getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &length) !=
      0) {
    absl::Status status = ErrnoError("getsockname");
    close(listen_fd);
    return status;
  }
  const int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    absl::Status status = ErrnoError("eventfd");
    close(listen_fd);
    return status;
  }
  return std::unique_ptr<LoopbackProxy>(new LoopbackProxy(
      listen_fd, wake_fd, ntohs(address.sin_port), target_port));
}

LoopbackProxy::LoopbackProxy(int listen_fd, int wake_fd, int port,
                             int target_port)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      port_(port),
      target_port_(target_port) {
  thread_ = std::thread([this] { Run(); });
}

LoopbackProxy::~LoopbackProxy() { Stop(); }

void LoopbackProxy::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  Wake();
  thread_.join();
  close(listen_fd_);
  close(wake_fd_);
}

template <typename Change>
void LoopbackProxy::Control(Change change) {
  std::unique_lock<std::mutex> lock(mu_);
  change();
  const uint64_t request = ++requested_;
  Wake();
  acted_.wait(lock, [&] { return acted_on_ >= request || stop_; });
}

void LoopbackProxy::SetTarget(int target_port) {
  Control([&] { target_port_ = target_port; });
}

void LoopbackProxy::Block() {
  Control([&] { blocked_ = true; });
}

void LoopbackProxy::Unblock() {
  Control([&] { blocked_ = false; });
}

bool LoopbackProxy::blocked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return blocked_;
}

void LoopbackProxy::BreakConnections() {
  Control([&] { break_requested_ = true; });
}

void LoopbackProxy::Wake() {
  const uint64_t one = 1;
  while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

void LoopbackProxy::Accept(bool blocked, int target_port) {
  while (true) {
    const int client =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // EAGAIN, or out of descriptors: retried at the next turn.
    }
    connections_accepted_.fetch_add(1, std::memory_order_relaxed);
    if (blocked) {
      Reset(client);
      continue;
    }
    SetNoDelay(client);
    const int upstream =
        socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (upstream < 0) {
      Reset(client);
      continue;
    }
    SetNoDelay(upstream);
    auto connection = std::make_unique<Connection>();
    connection->client = client;
    connection->upstream = upstream;
    sockaddr_in address = Loopback(target_port);
    if (connect(upstream, reinterpret_cast<sockaddr*>(&address),
                sizeof(address)) == 0) {
      connection->connecting = false;
    } else if (errno != EINPROGRESS) {
      connection->ResetBoth();
      continue;
    }
    connections_.push_back(std::move(connection));
  }
}

void LoopbackProxy::Run() {
  std::vector<pollfd> fds;
  while (true) {
    bool stop;
    bool blocked;
    bool break_requested;
    int target_port;
    uint64_t requested;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop = stop_;
      blocked = blocked_;
      break_requested = break_requested_;
      break_requested_ = false;
      target_port = target_port_;
      requested = requested_;
    }
    if (stop || blocked || break_requested) {
      for (auto& connection : connections_) connection->ResetBoth();
      connections_.clear();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      acted_on_ = requested;
      acted_.notify_all();
    }
    if (stop) return;

    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& connection : connections_) {
      // A negative fd is skipped by poll: a side with nothing to do reports
      // nothing (not even a hang-up, which would make poll spin).
      const short client_events = connection->ClientEvents();
      const short upstream_events = connection->UpstreamEvents();
      fds.push_back(
          {client_events != 0 ? connection->client : -1, client_events, 0});
      fds.push_back({upstream_events != 0 ? connection->upstream : -1,
                     upstream_events, 0});
    }
    const int ready = poll(fds.data(), fds.size(), -1);
    if (ready < 0) continue;  // EINTR
    if (fds[0].revents != 0) {
      uint64_t count;
      while (read(wake_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
      }
    }
    const size_t existing = connections_.size();
    for (size_t i = 0; i < existing; ++i) {
      const short client_revents = fds[2 + 2 * i].revents;
      const short upstream_revents = fds[3 + 2 * i].revents;
      if (client_revents == 0 && upstream_revents == 0) continue;
      connections_[i]->Pump(client_revents, upstream_revents, bytes_forwarded_);
    }
    std::erase_if(connections_,
                  [](const auto& connection) { return connection->closed; });
    if (fds[1].revents != 0) Accept(blocked, target_port);
  }
}

}  // namespace driftwood::testing
