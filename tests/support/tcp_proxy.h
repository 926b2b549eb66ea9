// Driftwood: LoopbackProxy, a TCP forwarder on the loopback interface for
// fault injection between processes or gRPC channels (docs/design.md
// "Tests"): a client connects to 127.0.0.1:port() and its bytes go to
// 127.0.0.1:target and back, until the test blocks or breaks the path.
//
//   auto proxy = LoopbackProxy::Start(server_port);
//   channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*proxy)->port()),
//                                 ...);
//   (*proxy)->Block();    // every connection closed, new ones refused
//   (*proxy)->Unblock();
//
// One thread per proxy multiplexes every connection with poll() over
// non-blocking sockets. Each direction of a connection buffers at most
// kBufferBytes; a side that is not read stops the other side's reads, so a
// slow receiver slows the sender (TCP flow control end to end) instead of
// growing memory. A half close (EOF) is passed on as a half close once the
// buffered bytes are delivered. Forced closes (Block, BreakConnections, a
// target that refuses the connection, an error on either side) reset both
// sides (RST), as a crashed peer or a broken network path would.
//
// Only 127.0.0.1: the proxy listens there and connects nowhere else.
//
// Thread safety: every method may be called from any thread, except that
// Stop and the destructor must not run concurrently with other calls.
#ifndef DRIFTWOOD_TESTS_SUPPORT_TCP_PROXY_H_
#define DRIFTWOOD_TESTS_SUPPORT_TCP_PROXY_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace driftwood::testing {

class LoopbackProxy {
 public:
  // Bytes buffered per direction of one connection.
  static constexpr size_t kBufferBytes = 256 << 10;

  // Listens on 127.0.0.1 at a port the OS chooses and forwards each
  // accepted connection to 127.0.0.1:`target_port`. Unavailable (with the
  // errno text) when the socket cannot be set up.
  static absl::StatusOr<std::unique_ptr<LoopbackProxy>> Start(int target_port);

  // Stop().
  ~LoopbackProxy();

  LoopbackProxy(const LoopbackProxy&) = delete;
  LoopbackProxy& operator=(const LoopbackProxy&) = delete;

  // The port the proxy listens on.
  int port() const { return port_; }

  // Connections accepted from now on go to 127.0.0.1:`target_port`;
  // current connections keep their target.
  void SetTarget(int target_port);

  // When these return, every current connection is closed (reset on both
  // sides); until Unblock, each new connection is accepted and reset at once.
  void Block();
  void Unblock();
  bool blocked() const;

  // When this returns, every current connection is closed (reset on both
  // sides); new connections are forwarded as usual (unless blocked).
  void BreakConnections();

  // Bytes delivered to either side so far, both directions together.
  uint64_t bytes_forwarded() const {
    return bytes_forwarded_.load(std::memory_order_relaxed);
  }
  // Connections accepted so far (including those reset while blocked).
  uint64_t connections_accepted() const {
    return connections_accepted_.load(std::memory_order_relaxed);
  }

  // Closes every connection and the listening socket and joins the thread.
  // Idempotent.
  void Stop();

 private:
  struct Connection;

  LoopbackProxy(int listen_fd, int wake_fd, int port, int target_port);

  // Runs `change` on the control state, wakes the thread and waits until it
  // has acted on the change.
  template <typename Change>
  void Control(Change change);
  void Wake();
  void Run();
  void Accept(bool blocked, int target_port);

  const int listen_fd_;
  const int wake_fd_;  // an eventfd
  const int port_;

  mutable std::mutex mu_;
  std::condition_variable acted_;
  // Guarded by mu_: the control state the thread reads at each turn, and the
  // count of changes requested and acted on.
  int target_port_;
  bool blocked_ = false;
  bool break_requested_ = false;
  bool stop_ = false;
  uint64_t requested_ = 0;
  uint64_t acted_on_ = 0;

  std::atomic<uint64_t> bytes_forwarded_{0};
  std::atomic<uint64_t> connections_accepted_{0};

  // Thread-owned.
  std::vector<std::unique_ptr<Connection>> connections_;

  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_TCP_PROXY_H_
