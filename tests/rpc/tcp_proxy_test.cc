// LoopbackProxy (tests/support/tcp_proxy.h): forwarding both ways with
// bounded buffers, Block, Unblock, BreakConnections and SetTarget, against
// echo servers on 127.0.0.1. Waits poll with a deadline.
#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "catch2/catch.hpp"

namespace driftwood::testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

sockaddr_in Loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

int RemainingMillis(SteadyClock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - SteadyClock::now())
                        .count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// Echoes every byte back on each connection, prefixed once per connection by
// its tag (so a client can tell which server it reached). One thread per
// connection, with blocking sockets.
class EchoServer {
 public:
  explicit EchoServer(char tag) : tag_(tag) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in address = Loopback(0);
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&address),
                 sizeof(address)) == 0);
    REQUIRE(listen(listen_fd_, 16) == 0);
    socklen_t length = sizeof(address);
    REQUIRE(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address),
                        &length) == 0);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~EchoServer() {
    stop_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : connection_fds_) shutdown(fd, SHUT_RDWR);
    for (std::thread& thread : connections_) thread.join();
    for (int fd : connection_fds_) close(fd);
    close(listen_fd_);
  }

  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // shut down
      }
      ++accepted_;
      std::lock_guard<std::mutex> lock(mu_);
      connection_fds_.push_back(fd);
      connections_.emplace_back([this, fd] { Echo(fd); });
    }
  }
  void Echo(int fd) {
    if (send(fd, &tag_, 1, MSG_NOSIGNAL) != 1) return;
    char buffer[16384];
    while (true) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) shutdown(fd, SHUT_WR);
      if (n <= 0) return;
      size_t sent = 0;
      while (sent < static_cast<size_t>(n)) {
        const ssize_t w = send(fd, buffer + sent, static_cast<size_t>(n) - sent,
                               MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        sent += static_cast<size_t>(w);
      }
    }
  }

  const char tag_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> connection_fds_;       // guarded by mu_
  std::vector<std::thread> connections_;  // guarded by mu_
};

// A blocking client connection with reads against a deadline.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address = Loopback(port);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&address),
                    sizeof(address)) == 0);
  }
  ~Client() { close(fd_); }

  // Sends every byte; false when the connection broke.
  bool SendAll(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n =
          send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Exactly `count` bytes, or nullopt when the connection ends first or
  // the deadline (10 s) passes.
  std::optional<std::string> Receive(size_t count) {
    const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    std::string received;
    while (received.size() < count) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, RemainingMillis(deadline));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return std::nullopt;
      char buffer[65536];
      const ssize_t n = recv(
          fd_, buffer, std::min(sizeof(buffer), count - received.size()), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return std::nullopt;
      received.append(buffer, static_cast<size_t>(n));
    }
    return received;
  }

  // Whether the connection ends (EOF or reset) within 10 s; bytes that
  // arrive first are discarded.
  bool Ends() {
    const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (true) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = poll(&p, 1, RemainingMillis(deadline));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return true;
    }
  }

  // Sends `message` and expects the echo, preceded on the connection's first
  // exchange by the server's tag.
  void ExpectEcho(char tag, const std::string& message) {
    REQUIRE(SendAll(message));
    const size_t tag_size = tag_seen_ ? 0 : 1;
    std::optional<std::string> received = Receive(message.size() + tag_size);
    REQUIRE(received.has_value());
    if (!tag_seen_) CHECK((*received)[0] == tag);
    tag_seen_ = true;
    CHECK(received->substr(tag_size) == message);
  }

 private:
  int fd_ = -1;
  bool tag_seen_ = false;
};

// Polls `condition` until it holds or 10 s pass.
bool Eventually(const std::function<bool()>& condition) {
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (SteadyClock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

std::string Pattern(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  }
  return bytes;
}

TEST_CASE("the loopback proxy forwards both ways, more than its buffers hold",
          "[rpc][tcp_proxy]") {
  EchoServer server('a');
  auto proxy = LoopbackProxy::Start(server.port());
  REQUIRE(proxy.ok());
  CHECK((*proxy)->port() != server.port());
  Client client((*proxy)->port());
  client.ExpectEcho('a', "hello");
  // 4 MiB, sent from another thread while this one reads: the proxy's
  // buffers (kBufferBytes per direction) hold a small part of it.
  const std::string large = Pattern(4 << 20);
  std::atomic<bool> sent{false};
  std::thread sender([&] { sent = client.SendAll(large); });
  std::optional<std::string> echoed = client.Receive(large.size());
  sender.join();
  CHECK(sent.load());
  REQUIRE(echoed.has_value());
  CHECK(*echoed == large);
  // Both directions are counted: the tag, and twice each message.
  // The proxy counts a write after the client may have read it.
  const uint64_t expected = 1 + 2 * (5 + large.size());
  CHECK(Eventually([&] { return (*proxy)->bytes_forwarded() == expected; }));
  CHECK((*proxy)->bytes_forwarded() == expected);
  CHECK((*proxy)->connections_accepted() == 1);
}

TEST_CASE("a blocked loopback proxy closes connections and refuses new ones",
          "[rpc][tcp_proxy]") {
  EchoServer server('a');
  auto proxy = LoopbackProxy::Start(server.port());
  REQUIRE(proxy.ok());
  Client before((*proxy)->port());
  before.ExpectEcho('a', "before");
  (*proxy)->Block();
  CHECK((*proxy)->blocked());
  CHECK(before.Ends());
  const uint64_t forwarded = (*proxy)->bytes_forwarded();
  {
    // The kernel completes the handshake; the proxy then resets it.
    Client during((*proxy)->port());
    during.SendAll("during");
    CHECK(during.Ends());
  }
  CHECK((*proxy)->bytes_forwarded() == forwarded);
  CHECK(server.accepted() == 1);
  (*proxy)->Unblock();
  CHECK_FALSE((*proxy)->blocked());
  Client after((*proxy)->port());
  after.ExpectEcho('a', "after");
  CHECK(server.accepted() == 2);
}

TEST_CASE(
    "BreakConnections closes the current connections once and lets new "
    "ones through",
    "[rpc][tcp_proxy]") {
  EchoServer server('a');
  auto proxy = LoopbackProxy::Start(server.port());
  REQUIRE(proxy.ok());
  Client first((*proxy)->port());
  Client second((*proxy)->port());
  first.ExpectEcho('a', "one");
  second.ExpectEcho('a', "two");
  (*proxy)->BreakConnections();
  CHECK(first.Ends());
  CHECK(second.Ends());
  CHECK_FALSE((*proxy)->blocked());
  Client third((*proxy)->port());
  third.ExpectEcho('a', "three");
}

TEST_CASE(
    "SetTarget sends new connections to the new target, and a target that "
    "refuses closes the client's connection",
    "[rpc][tcp_proxy]") {
  EchoServer a('a');
  EchoServer b('b');
  auto proxy = LoopbackProxy::Start(a.port());
  REQUIRE(proxy.ok());
  Client on_a((*proxy)->port());
  on_a.ExpectEcho('a', "first");
  (*proxy)->SetTarget(b.port());
  Client on_b((*proxy)->port());
  on_b.ExpectEcho('b', "second");
  // An existing connection keeps its target.
  on_a.ExpectEcho('a', "still a");

  // A port nobody listens on: that of a proxy that stopped.
  int closed_port;
  {
    auto gone = LoopbackProxy::Start(a.port());
    REQUIRE(gone.ok());
    closed_port = (*gone)->port();
  }
  (*proxy)->SetTarget(closed_port);
  Client refused((*proxy)->port());
  CHECK(refused.Ends());
}

TEST_CASE("a client's half close reaches the target after its bytes",
          "[rpc][tcp_proxy]") {
  EchoServer server('a');
  auto proxy = LoopbackProxy::Start(server.port());
  REQUIRE(proxy.ok());
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address = Loopback((*proxy)->port());
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
          0);
  const std::string message = Pattern(1 << 20);
  size_t sent = 0;
  std::string received;
  // The echo server answers EOF with EOF: read everything until then.
  std::thread writer([&] {
    while (sent < message.size()) {
      const ssize_t n =
          send(fd, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    shutdown(fd, SHUT_WR);
  });
  const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  bool eof = false;
  while (!eof) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, RemainingMillis(deadline)) <= 0) break;
    char buffer[65536];
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      eof = n == 0;
      break;
    }
    received.append(buffer, static_cast<size_t>(n));
  }
  writer.join();
  close(fd);
  CHECK(eof);
  CHECK(sent == message.size());
  REQUIRE(received.size() == message.size() + 1);
  CHECK(received.substr(1) == message);
}

}  // namespace
}  // namespace driftwood::testing
