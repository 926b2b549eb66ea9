// Integration: the coordination services of driftwood-kv (examples/kv) —
// Watch, Lease, Lock, Election and Maintenance.Snapshot — against 3-member
// KvServer clusters started in this process on free 127.0.0.1 ports, through
// the generated gRPC stubs, checked against the contracts written in
// examples/kv/{watch_service,lease_service,lessor,lock_service,backup}.h
// (etcd's rules). Timing is short (50 ms ticks, 10-tick elections); nothing
// sleeps to wait: every wait polls a condition with a deadline.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "examples/kv/backup.h"
#include "examples/kv/kv_server.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "examples/kv/proto/v3election.grpc.pb.h"
#include "examples/kv/proto/v3lock.grpc.pb.h"
#include "tests/support/temp_dir.h"

namespace driftwood::kv {
namespace {

namespace fs = std::filesystem;

using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;
using mvccpb::Event;

constexpr absl::Duration kTick = absl::Milliseconds(50);
constexpr int kElectionTicks = 10;
const absl::Duration kElectionTimeout = kTick * kElectionTicks;
// The lessor's minimum TTL for this timing: 1.5 election timeouts rounded
// up to seconds (kv_server.cc).
constexpr int64_t kMinTtl = 1;
// How long a single unary call may take.
constexpr absl::Duration kCallTimeout = absl::Seconds(5);
// How long a stream may take to deliver what it must.
constexpr absl::Duration kDeliveryTimeout = absl::Seconds(10);

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
}

// Polls `condition` until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout = absl::Seconds(10),
                absl::Duration poll = absl::Milliseconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(poll);
  }
  return condition();
}

std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

// `count` distinct ports that were free on 127.0.0.1 a moment ago.
std::vector<int> FreePorts(size_t count) {
  std::vector<int> sockets;
  std::vector<int> ports;
  for (size_t i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
            0);
    socklen_t length = sizeof(address);
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) ==
            0);
    ports.push_back(ntohs(address.sin_port));
    sockets.push_back(fd);
  }
  for (int fd : sockets) close(fd);
  return ports;
}

// A listener on 127.0.0.1 that accepts connections and never reads from or
// writes to them: a member that hangs, so that calls sent to it wait for
// their deadlines.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
            0);
    REQUIRE(listen(fd_, 16) == 0);
    socklen_t length = sizeof(address);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) ==
            0);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] {
      while (!stop_.load()) {
        pollfd ready{fd_, POLLIN, 0};
        if (poll(&ready, 1, 20) <= 0) continue;
        const int connection = accept(fd_, nullptr, nullptr);
        if (connection < 0) continue;
        std::lock_guard<std::mutex> lock(mu_);
        connections_.push_back(connection);
      }
    });
  }
  ~SilentListener() {
    stop_ = true;
    acceptor_.join();
    for (int connection : connections_) close(connection);
    close(fd_);
  }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;

  int port() const { return port_; }
  size_t accepted() const {
    std::lock_guard<std::mutex> lock(mu_);
    return connections_.size();
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<int> connections_;  // mu_
  std::thread acceptor_;
};

// This process's resident set in KiB (/proc/self/status VmRSS).
int64_t RssKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      int64_t kib = 0;
      fields >> kib;
      return kib;
    }
  }
  return 0;
}

// `small_window`: flow control that never grows (no BDP probing, 64 KiB of
// lookahead), so that a response the client does not read holds the
// server's writes back.
std::shared_ptr<grpc::Channel> MakeChannel(int port, int index = 0,
                                           bool small_window = false) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A channel of its own (its own connection) per index.
  args.SetInt("driftwood.test.channel", index);
  if (small_window) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  }
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

// A unary call's outcome.
template <typename Response>
struct Reply {
  grpc::Status status;
  Response response;
  bool ok() const { return status.ok(); }
  std::string error() const {
    return absl::StrCat(static_cast<int>(status.error_code()), ": ",
                        status.error_message());
  }
};

template <typename Stub, typename Request, typename Response>
Reply<Response> Call(Stub& stub,
                     grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                  const Request&, Response*),
                     const Request& request,
                     absl::Duration timeout = kCallTimeout) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout));
  Reply<Response> reply;
  reply.status = (stub.*method)(&context, request, &reply.response);
  return reply;
}

// ---------------------------------------------------------------------------
// The cluster

struct Member {
  std::string name;
  KvServerOptions options;
  std::unique_ptr<KvServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::atomic<bool> running{false};
};

class Cluster {
 public:
  // `size` new members; or, with `data_dirs`, one member per folder (folders
  // restore made), started as a new cluster on them.
  explicit Cluster(int size, std::vector<fs::path> data_dirs = {},
                   std::function<void(KvServerOptions&)> configure = nullptr)
      : data_dirs_(std::move(data_dirs)), configure_(std::move(configure)) {
    bool started = false;
    for (int attempt = 0; attempt < 5 && !started; ++attempt) {
      started = TryStart(size, attempt);
    }
    REQUIRE(started);
    REQUIRE(WaitLeader() >= 0);
    // Lease forwarding needs the leader's published client URL.
    REQUIRE(Eventually([&] { return Published(); }));
  }
  ~Cluster() { StopAll(); }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  const std::string& dir() const { return dir_.path(); }
  std::shared_ptr<grpc::Channel> channel(int i) const {
    return members_[static_cast<size_t>(i)]->channel;
  }
  int client_port(int i) const {
    return members_[static_cast<size_t>(i)]->server->client_port();
  }
  bool running(int i) const {
    return members_[static_cast<size_t>(i)]->running.load();
  }
  std::unique_ptr<etcdserverpb::KV::Stub> kv(int i) const {
    return etcdserverpb::KV::NewStub(channel(i));
  }
  std::unique_ptr<etcdserverpb::Lease::Stub> lease(int i) const {
    return etcdserverpb::Lease::NewStub(channel(i));
  }
  std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance(int i) const {
    return etcdserverpb::Maintenance::NewStub(channel(i));
  }
  std::unique_ptr<v3lockpb::Lock::Stub> lock(int i) const {
    return v3lockpb::Lock::NewStub(channel(i));
  }
  std::unique_ptr<v3electionpb::Election::Stub> election(int i) const {
    return v3electionpb::Election::NewStub(channel(i));
  }

  // The running member every running member names as its leader, or -1.
  int Leader() const {
    std::optional<uint64_t> agreed;
    for (int i = 0; i < size(); ++i) {
      if (!running(i)) continue;
      Reply<etcdserverpb::StatusResponse> status =
          Call(*maintenance(i), &etcdserverpb::Maintenance::Stub::Status,
               etcdserverpb::StatusRequest(), absl::Seconds(1));
      if (!status.ok() || status.response.leader() == 0) return -1;
      if (agreed && *agreed != status.response.leader()) return -1;
      agreed = status.response.leader();
    }
    if (!agreed) return -1;
    for (int i = 0; i < size(); ++i) {
      if (running(i) &&
          members_[static_cast<size_t>(i)]->server->member_id() == *agreed) {
        return i;
      }
    }
    return -1;
  }
  int WaitLeader(absl::Duration timeout = absl::Seconds(15)) const {
    int leader = -1;
    Eventually([&] { return (leader = Leader()) >= 0; }, timeout,
               absl::Milliseconds(20));
    return leader;
  }
  std::vector<int> RunningExcept(int excluded) const {
    std::vector<int> out;
    for (int i = 0; i < size(); ++i) {
      if (i != excluded && running(i)) out.push_back(i);
    }
    return out;
  }

  // Every member's client URL is in every running member's member list.
  bool Published() const {
    for (int i = 0; i < size(); ++i) {
      if (!running(i)) continue;
      Reply<etcdserverpb::MemberListResponse> list =
          Call(*etcdserverpb::Cluster::NewStub(channel(i)),
               &etcdserverpb::Cluster::Stub::MemberList,
               etcdserverpb::MemberListRequest(), absl::Seconds(1));
      if (!list.ok() || list.response.members_size() != size()) return false;
      for (const etcdserverpb::Member& member : list.response.members()) {
        if (member.clienturls().empty()) return false;
      }
    }
    return true;
  }

  // Waits until member i's store is at `revision` or later (a serializable
  // read: its own state).
  bool WaitApplied(int i, int64_t revision) const {
    return Eventually([&] { return Revision(i) >= revision; });
  }
  // Member i's store revision (a serializable read), or -1.
  int64_t Revision(int i) const {
    etcdserverpb::RangeRequest request;
    request.set_key("\0", 1);
    request.set_count_only(true);
    request.set_serializable(true);
    Reply<etcdserverpb::RangeResponse> range =
        Call(*kv(i), &etcdserverpb::KV::Stub::Range, request, absl::Seconds(1));
    return range.ok() ? range.response.header().revision() : -1;
  }

  void Stop(int i) {
    Member& member = *members_[static_cast<size_t>(i)];
    member.running = false;
    member.server->Stop();
  }
  // Starts a stopped member again on its data folder and ports.
  bool Restart(int i) {
    Member& member = *members_[static_cast<size_t>(i)];
    member.server.reset();
    member.options.new_cluster = false;
    absl::StatusOr<std::unique_ptr<KvServer>> server =
        KvServer::Start(member.options);
    if (!server.ok()) {
      UNSCOPED_INFO("restart of " << member.name
                                  << " failed: " << server.status());
      return false;
    }
    member.server = *std::move(server);
    member.running = true;
    return true;
  }

 private:
  bool TryStart(int size, int attempt) {
    StopAll();
    members_.clear();
    const std::vector<int> ports = FreePorts(2 * static_cast<size_t>(size));
    std::map<std::string, std::string> initial_cluster;
    for (int i = 0; i < size; ++i) {
      auto member = std::make_unique<Member>();
      member->name = data_dirs_.empty() ? absl::StrCat("m", i) : "solo";
      const int client = ports[2 * static_cast<size_t>(i)];
      const int peer = ports[2 * static_cast<size_t>(i) + 1];
      KvServerOptions& o = member->options;
      o.name = member->name;
      o.data_dir =
          data_dirs_.empty()
              ? fs::path(dir_.path()) / absl::StrCat(member->name, "-", attempt)
              : data_dirs_[static_cast<size_t>(i)];
      o.client_address = absl::StrCat("127.0.0.1:", client);
      o.advertise_client_url = absl::StrCat("http://127.0.0.1:", client);
      o.peer_address = absl::StrCat("127.0.0.1:", peer);
      o.tick_interval = kTick;
      o.election_ticks = kElectionTicks;
      if (configure_) configure_(o);
      initial_cluster[member->name] = absl::StrCat("http://127.0.0.1:", peer);
      member->channel = MakeChannel(client, i);
      members_.push_back(std::move(member));
    }
    for (auto& member : members_) {
      member->options.initial_cluster = initial_cluster;
    }
    for (auto& member : members_) {
      absl::StatusOr<std::unique_ptr<KvServer>> server =
          KvServer::Start(member->options);
      if (!server.ok()) {
        UNSCOPED_INFO("start of " << member->name
                                  << " failed: " << server.status());
        // A port taken meanwhile: try other ports. Anything else is a bug.
        REQUIRE(server.status().code() == absl::StatusCode::kUnavailable);
        return false;
      }
      member->server = *std::move(server);
      member->running = true;
    }
    return true;
  }

  // Leaders first, so that each hands over to a running member instead of
  // waiting for a stopped one.
  void StopAll() {
    for (;;) {
      int next = -1;
      for (int i = 0; i < size(); ++i) {
        if (!running(i)) continue;
        if (next < 0) next = i;
        Reply<etcdserverpb::StatusResponse> status =
            Call(*maintenance(i), &etcdserverpb::Maintenance::Stub::Status,
                 etcdserverpb::StatusRequest(), absl::Seconds(1));
        if (status.ok() &&
            status.response.leader() == status.response.header().member_id()) {
          next = i;
          break;
        }
      }
      if (next < 0) break;
      Stop(next);
    }
    for (auto& member : members_) {
      if (member->server != nullptr) member->server.reset();
    }
  }

  testing::TempDir dir_;
  std::vector<fs::path> data_dirs_;
  std::function<void(KvServerOptions&)> configure_;
  std::vector<std::unique_ptr<Member>> members_;
};

// ---------------------------------------------------------------------------
// KV and lease calls

Reply<etcdserverpb::PutResponse> Put(const Cluster& cluster, int i,
                                     const std::string& key,
                                     const std::string& value,
                                     int64_t lease = 0,
                                     absl::Duration timeout = kCallTimeout) {
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease);
  return Call(*cluster.kv(i), &etcdserverpb::KV::Stub::Put, request, timeout);
}

// The revision of a put that must succeed.
int64_t PutRevision(const Cluster& cluster, int i, const std::string& key,
                    const std::string& value) {
  Reply<etcdserverpb::PutResponse> put = Put(cluster, i, key, value);
  INFO("put " << key << ": " << put.error());
  REQUIRE(put.ok());
  return put.response.header().revision();
}

Reply<etcdserverpb::DeleteRangeResponse> Delete(const Cluster& cluster, int i,
                                                const std::string& key,
                                                const std::string& end = "") {
  etcdserverpb::DeleteRangeRequest request;
  request.set_key(key);
  request.set_range_end(end);
  return Call(*cluster.kv(i), &etcdserverpb::KV::Stub::DeleteRange, request);
}

Reply<etcdserverpb::RangeResponse> Range(const Cluster& cluster, int i,
                                         const std::string& key,
                                         const std::string& end = "",
                                         bool serializable = false,
                                         int64_t revision = 0) {
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  request.set_range_end(end);
  request.set_serializable(serializable);
  request.set_revision(revision);
  return Call(*cluster.kv(i), &etcdserverpb::KV::Stub::Range, request);
}

Reply<etcdserverpb::LeaseGrantResponse> Grant(const Cluster& cluster, int i,
                                              int64_t ttl) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl);
  return Call(*cluster.lease(i), &etcdserverpb::Lease::Stub::LeaseGrant,
              request);
}

Reply<etcdserverpb::LeaseRevokeResponse> Revoke(const Cluster& cluster, int i,
                                                int64_t id) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(id);
  return Call(*cluster.lease(i), &etcdserverpb::Lease::Stub::LeaseRevoke,
              request);
}

Reply<etcdserverpb::LeaseTimeToLiveResponse> TimeToLive(const Cluster& cluster,
                                                        int i, int64_t id) {
  etcdserverpb::LeaseTimeToLiveRequest request;
  request.set_id(id);
  request.set_keys(true);
  return Call(*cluster.lease(i), &etcdserverpb::Lease::Stub::LeaseTimeToLive,
              request);
}

// One keep-alive on a stream of its own.
Reply<etcdserverpb::LeaseKeepAliveResponse> KeepAliveOnce(
    const Cluster& cluster, int i, int64_t id,
    absl::Duration timeout = absl::Seconds(2)) {
  Reply<etcdserverpb::LeaseKeepAliveResponse> reply;
  std::unique_ptr<etcdserverpb::Lease::Stub> stub = cluster.lease(i);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout));
  auto stream = stub->LeaseKeepAlive(&context);
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(id);
  if (!stream->Write(request) || !stream->Read(&reply.response)) {
    context.TryCancel();
    reply.status = stream->Finish();
    if (reply.status.ok()) {
      reply.status = grpc::Status(grpc::StatusCode::UNKNOWN, "stream ended");
    }
    return reply;
  }
  stream->WritesDone();
  reply.status = stream->Finish();
  return reply;
}

// ---------------------------------------------------------------------------
// Streams

// What a stream's reader thread hands to the test.
template <typename T>
class Inbox {
 public:
  void Push(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(std::move(item));
    cv_.notify_all();
  }
  void Close(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    status_ = std::move(status);
    cv_.notify_all();
  }
  // The next item; nullopt after `timeout`, or once closed and empty.
  std::optional<T> Pop(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                 [this] { return !items_.empty() || closed_; });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  grpc::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
  grpc::Status status_;
};

// A raw Watch stream: a thread reads responses into an inbox (or hands them
// to `sink`, on that thread).
class WatchClient {
 public:
  using Sink = std::function<void(const WatchResponse&)>;

  // `require_leader`: the "hasleader: true" metadata of clientv3's
  // WithRequireLeader.
  explicit WatchClient(std::shared_ptr<grpc::Channel> channel,
                       Sink sink = nullptr, bool require_leader = false,
                       absl::Duration lifetime = absl::Seconds(120))
      : stub_(etcdserverpb::Watch::NewStub(std::move(channel))),
        sink_(std::move(sink)) {
    context_.set_deadline(DeadlineIn(lifetime));
    if (require_leader) context_.AddMetadata("hasleader", "true");
    stream_ = stub_->Watch(&context_);
    reader_ = std::thread([this] { ReadLoop(); });
  }
  ~WatchClient() {
    Resume();
    context_.TryCancel();
    reader_.join();
  }

  // The reader stops taking responses (after the one it may be waiting
  // for), so that the server's writes wait on flow control; Resume goes on.
  void Pause() {
    std::lock_guard<std::mutex> lock(gate_mu_);
    paused_ = true;
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(gate_mu_);
    paused_ = false;
    gate_cv_.notify_all();
  }
  WatchClient(const WatchClient&) = delete;
  WatchClient& operator=(const WatchClient&) = delete;

  bool Send(const WatchRequest& request) {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (finished_) return false;
    return stream_->Write(request);
  }
  std::optional<WatchResponse> Next(absl::Duration timeout = kDeliveryTimeout) {
    return inbox_.Pop(timeout);
  }
  bool ended() const { return inbox_.closed(); }
  grpc::Status status() const { return inbox_.status(); }

 private:
  void ReadLoop() {
    WatchResponse response;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(gate_mu_);
        gate_cv_.wait(lock, [this] { return !paused_; });
      }
      if (!stream_->Read(&response)) break;
      if (sink_) {
        sink_(response);
      } else {
        inbox_.Push(response);
      }
    }
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      finished_ = true;
      status = stream_->Finish();
    }
    inbox_.Close(std::move(status));
  }

  std::unique_ptr<etcdserverpb::Watch::Stub> stub_;
  const Sink sink_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<WatchRequest, WatchResponse>>
      stream_;
  std::mutex write_mu_;
  bool finished_ = false;  // write_mu_
  Inbox<WatchResponse> inbox_;
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool paused_ = false;  // gate_mu_
  std::thread reader_;
};

struct WatchSpec {
  std::string key;
  std::string range_end;
  int64_t start_revision = 0;
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
  bool fragment = false;
};

WatchRequest Create(const WatchSpec& spec) {
  WatchRequest request;
  etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
  create->set_key(spec.key);
  create->set_range_end(spec.range_end);
  create->set_start_revision(spec.start_revision);
  create->set_prev_kv(spec.prev_kv);
  create->set_fragment(spec.fragment);
  if (spec.no_put) create->add_filters(etcdserverpb::WatchCreateRequest::NOPUT);
  if (spec.no_delete) {
    create->add_filters(etcdserverpb::WatchCreateRequest::NODELETE);
  }
  return request;
}

WatchRequest Cancel(int64_t id) {
  WatchRequest request;
  request.mutable_cancel_request()->set_watch_id(id);
  return request;
}

WatchRequest Progress() {
  WatchRequest request;
  request.mutable_progress_request();
  return request;
}

bool IsProgress(const WatchResponse& response) {
  return response.watch_id() == -1 && !response.created() &&
         !response.canceled() && response.events_size() == 0;
}

std::string Describe(const WatchResponse& response) {
  std::string out = absl::StrCat("{id ", response.watch_id(), " rev ",
                                 response.header().revision(),
                                 response.created() ? " created" : "",
                                 response.canceled() ? " canceled" : "",
                                 response.fragment() ? " fragment" : "");
  if (response.compact_revision() != 0) {
    absl::StrAppend(&out, " compact ", response.compact_revision());
  }
  for (const Event& event : response.events()) {
    absl::StrAppend(&out, " ", event.type() == Event::PUT ? "PUT " : "DEL ",
                    event.kv().key().substr(0, 24), "@",
                    event.kv().mod_revision());
  }
  return out + "}";
}

// Every event response of a stream, per watch ID, with etcd's ordering rules
// checked as they come: events in revision order, each revision after the
// previous response's (a fragment's continuation may repeat it), and the
// header at or after the last event.
struct EventLog {
  std::map<int64_t, std::vector<Event>> events;
  std::map<int64_t, std::vector<WatchResponse>> responses;
  std::vector<std::string> problems;

  void Add(const WatchResponse& response) {
    if (response.created() || response.canceled() || IsProgress(response)) {
      return;
    }
    const int64_t id = response.watch_id();
    int64_t last = last_revision_[id];
    const bool continuing = continuing_[id];
    for (int i = 0; i < response.events_size(); ++i) {
      const int64_t revision = response.events(i).kv().mod_revision();
      const bool fine =
          (i == 0 && !continuing) ? revision > last : revision >= last;
      if (!fine) {
        problems.push_back(absl::StrCat("watch ", id, ": revision ", revision,
                                        " after ", last, " in ",
                                        Describe(response)));
      }
      last = revision;
    }
    if (response.events_size() > 0 && response.header().revision() < last) {
      problems.push_back(absl::StrCat("watch ", id, ": header before events ",
                                      Describe(response)));
    }
    last_revision_[id] = last;
    continuing_[id] = response.fragment();
    for (const Event& event : response.events()) events[id].push_back(event);
    responses[id].push_back(response);
  }

 private:
  std::map<int64_t, int64_t> last_revision_;
  std::map<int64_t, bool> continuing_;
};

// Sends progress requests until one is answered with a revision at or after
// `revision`; every response before it goes to `log` (and `others`).
bool ProgressThrough(WatchClient& watch, int64_t revision, EventLog& log,
                     std::vector<WatchResponse>* others = nullptr) {
  const absl::Time deadline = absl::Now() + kDeliveryTimeout;
  while (absl::Now() < deadline) {
    if (!watch.Send(Progress())) return false;
    for (;;) {
      std::optional<WatchResponse> response =
          watch.Next(deadline - absl::Now());
      if (!response) return false;
      if (IsProgress(*response)) {
        if (response->header().revision() >= revision) return true;
        break;
      }
      log.Add(*response);
      if (others != nullptr) others->push_back(*response);
    }
  }
  return false;
}

// Waits until member i's watch hub has published `revision`: a watcher from
// it on `key` (written at `revision`) gets its event only then.
bool WaitHub(const Cluster& cluster, int i, const std::string& key,
             int64_t revision) {
  WatchClient probe(cluster.channel(i));
  if (!probe.Send(Create({.key = key, .start_revision = revision}))) {
    return false;
  }
  const absl::Time deadline = absl::Now() + kDeliveryTimeout;
  while (absl::Now() < deadline) {
    std::optional<WatchResponse> response = probe.Next(deadline - absl::Now());
    if (!response) return false;
    for (const Event& event : response->events()) {
      if (event.kv().mod_revision() >= revision) return true;
    }
  }
  return false;
}

struct Expected {
  Event::EventType type;
  int64_t revision;
};

void CheckEvents(const std::vector<Event>& events,
                 const std::vector<Expected>& expected) {
  std::vector<std::string> got, want;
  for (const Event& event : events) {
    got.push_back(absl::StrCat(event.type() == Event::PUT ? "PUT@" : "DEL@",
                               event.kv().mod_revision()));
  }
  for (const Expected& event : expected) {
    want.push_back(absl::StrCat(event.type == Event::PUT ? "PUT@" : "DEL@",
                                event.revision));
  }
  CHECK(got == want);
}

// ---------------------------------------------------------------------------
// 1. Watch over a raw stream

TEST_CASE("Watch streams follow the etcd rules", "[watch]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  const std::string prefix = "w/";
  const std::string end = PrefixEnd(prefix);

  Reply<etcdserverpb::PutResponse> seed = Put(cluster, leader, "w/seed", "s");
  REQUIRE(seed.ok());
  const int64_t r0 = seed.response.header().revision();
  REQUIRE(WaitHub(cluster, member, "w/seed", r0));

  WatchClient watch(cluster.channel(member));
  // Sent back to back: the replies come in order, ids from 0.
  REQUIRE(watch.Send(Create({.key = "w/a", .prev_kv = true})));
  REQUIRE(watch.Send(Create({.key = prefix, .range_end = end})));
  REQUIRE(
      watch.Send(Create({.key = prefix, .range_end = end, .no_put = true})));
  REQUIRE(
      watch.Send(Create({.key = prefix, .range_end = end, .no_delete = true})));
  for (int64_t id = 0; id < 4; ++id) {
    std::optional<WatchResponse> created = watch.Next();
    REQUIRE(created);
    INFO(Describe(*created));
    CHECK(created->created());
    CHECK_FALSE(created->canceled());
    CHECK(created->watch_id() == id);
    CHECK(created->header().revision() == r0);
    CHECK(created->events_size() == 0);
  }

  const int64_t r1 = PutRevision(cluster, leader, "w/a", "1");
  const int64_t r2 = PutRevision(cluster, leader, "w/b", "1");
  const int64_t r3 = PutRevision(cluster, leader, "w/a", "2");
  Reply<etcdserverpb::DeleteRangeResponse> deleted =
      Delete(cluster, leader, "w/a");
  REQUIRE(deleted.ok());
  CHECK(deleted.response.deleted() == 1);
  const int64_t r4 = deleted.response.header().revision();
  const int64_t r5 = PutRevision(cluster, leader, "x/outside", "1");
  REQUIRE(r1 == r0 + 1);
  REQUIRE(r5 == r0 + 5);

  EventLog log;
  std::vector<WatchResponse> others;
  REQUIRE(ProgressThrough(watch, r5, log, &others));
  for (const WatchResponse& response : others) {
    INFO(Describe(response));
    CHECK_FALSE(response.created());
    CHECK_FALSE(response.canceled());
  }
  for (const std::string& problem : log.problems) FAIL_CHECK(problem);

  {  // events, prev_kv and filters
    // The key watcher with prev_kv.
    CheckEvents(log.events[0],
                {{Event::PUT, r1}, {Event::PUT, r3}, {Event::DELETE, r4}});
    REQUIRE(log.events[0].size() == 3);
    CHECK(log.events[0][0].kv().value() == "1");
    CHECK_FALSE(log.events[0][0].has_prev_kv());
    CHECK(log.events[0][1].prev_kv().value() == "1");
    CHECK(log.events[0][1].prev_kv().mod_revision() == r1);
    CHECK(log.events[0][2].prev_kv().value() == "2");
    CHECK(log.events[0][2].kv().key() == "w/a");
    // The prefix watcher, without prev_kv.
    CheckEvents(log.events[1], {{Event::PUT, r1},
                                {Event::PUT, r2},
                                {Event::PUT, r3},
                                {Event::DELETE, r4}});
    for (const Event& event : log.events[1]) CHECK_FALSE(event.has_prev_kv());
    // NOPUT and NODELETE.
    CheckEvents(log.events[2], {{Event::DELETE, r4}});
    CheckEvents(log.events[3],
                {{Event::PUT, r1}, {Event::PUT, r2}, {Event::PUT, r3}});
  }

  {  // cancel, progress, history and compaction
    REQUIRE(watch.Send(Cancel(0)));
    std::optional<WatchResponse> canceled = watch.Next();
    REQUIRE(canceled);
    INFO(Describe(*canceled));
    CHECK(canceled->canceled());
    CHECK(canceled->watch_id() == 0);
    CHECK(canceled->events_size() == 0);

    const int64_t r6 = PutRevision(cluster, leader, "w/a", "3");
    REQUIRE(r6 == r5 + 1);
    EventLog after;
    REQUIRE(ProgressThrough(watch, r6, after));
    for (const std::string& problem : after.problems) FAIL_CHECK(problem);
    CHECK(after.events[0].empty());  // canceled
    CheckEvents(after.events[1], {{Event::PUT, r6}});
    CHECK(after.events[2].empty());
    CheckEvents(after.events[3], {{Event::PUT, r6}});

    // A start revision in the past replays the history, each event once.
    REQUIRE(watch.Send(
        Create({.key = prefix, .range_end = end, .start_revision = r1})));
    std::optional<WatchResponse> created = watch.Next();
    REQUIRE(created);
    INFO(Describe(*created));
    CHECK(created->created());
    CHECK(created->watch_id() == 4);
    CHECK(created->header().revision() == r6);
    EventLog history;
    REQUIRE(ProgressThrough(watch, r6, history));
    for (const std::string& problem : history.problems) FAIL_CHECK(problem);
    CheckEvents(history.events[4], {{Event::PUT, r1},
                                    {Event::PUT, r2},
                                    {Event::PUT, r3},
                                    {Event::DELETE, r4},
                                    {Event::PUT, r6}});

    // Compacted history: created, then canceled with the compaction point.
    etcdserverpb::CompactionRequest compact;
    compact.set_revision(r3);
    REQUIRE(Call(*cluster.kv(leader), &etcdserverpb::KV::Stub::Compact, compact)
                .ok());
    REQUIRE(Eventually([&] {
      Reply<etcdserverpb::RangeResponse> old =
          Range(cluster, member, "w/b", "", /*serializable=*/true, r2);
      return !old.ok() &&
             old.status.error_message().find("compacted") != std::string::npos;
    }));
    REQUIRE(watch.Send(
        Create({.key = prefix, .range_end = end, .start_revision = r2})));
    std::optional<WatchResponse> compacted_created = watch.Next();
    REQUIRE(compacted_created);
    {
      INFO(Describe(*compacted_created));
      CHECK(compacted_created->created());
      CHECK(compacted_created->watch_id() == 5);
    }
    std::optional<WatchResponse> compacted = watch.Next();
    REQUIRE(compacted);
    {
      INFO(Describe(*compacted));
      CHECK(compacted->watch_id() == 5);
      CHECK(compacted->canceled());
      CHECK(compacted->compact_revision() == r3);
      CHECK(compacted->events_size() == 0);
    }
    // Just after the compaction point is still there.
    REQUIRE(watch.Send(
        Create({.key = prefix, .range_end = end, .start_revision = r4})));
    std::optional<WatchResponse> kept = watch.Next();
    REQUIRE(kept);
    CHECK(kept->watch_id() == 6);
    EventLog tail;
    REQUIRE(ProgressThrough(watch, r6, tail));
    for (const std::string& problem : tail.problems) FAIL_CHECK(problem);
    CheckEvents(tail.events[6], {{Event::DELETE, r4}, {Event::PUT, r6}});
    CHECK(tail.events[5].empty());
  }
}

TEST_CASE("Watch fragments a large revision when asked", "[watch]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  const std::string prefix = "frag/";
  // A request is at most 1.5 MiB (etcd's --max-request-bytes), so one Txn
  // cannot carry 3 x 700 KB; with prev_kv the events of a Txn of 3 x 400 KB
  // over values of 700 KB are 3 x 1.1 MB in one revision.
  constexpr size_t kOld = 700'000, kNew = 400'000;
  int64_t written = 0;
  for (int i = 1; i <= 3; ++i) {
    Reply<etcdserverpb::PutResponse> put =
        Put(cluster, leader, absl::StrCat(prefix, i),
            std::string(kOld, static_cast<char>('a' + i)));
    REQUIRE(put.ok());
    written = put.response.header().revision();
  }
  REQUIRE(WaitHub(cluster, member, "frag/3", written));

  WatchClient watch(cluster.channel(member));
  REQUIRE(watch.Send(Create({.key = prefix,
                             .range_end = PrefixEnd(prefix),
                             .prev_kv = true,
                             .fragment = true})));
  REQUIRE(watch.Send(Create(
      {.key = prefix, .range_end = PrefixEnd(prefix), .prev_kv = true})));
  for (int64_t id = 0; id < 2; ++id) {
    std::optional<WatchResponse> created = watch.Next();
    REQUIRE(created);
    CHECK(created->created());
    CHECK(created->watch_id() == id);
  }

  // One over the limit is refused, as etcd does.
  {
    etcdserverpb::TxnRequest too_big;
    for (int i = 1; i <= 3; ++i) {
      etcdserverpb::PutRequest* put =
          too_big.add_success()->mutable_request_put();
      put->set_key(absl::StrCat(prefix, i));
      put->set_value(std::string(kOld, 'z'));
    }
    Reply<etcdserverpb::TxnResponse> refused =
        Call(*cluster.kv(leader), &etcdserverpb::KV::Stub::Txn, too_big);
    INFO(refused.error());
    CHECK_FALSE(refused.ok());
  }

  etcdserverpb::TxnRequest txn;
  for (int i = 1; i <= 3; ++i) {
    etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
    put->set_key(absl::StrCat(prefix, i));
    put->set_value(std::string(kNew, static_cast<char>('A' + i)));
  }
  Reply<etcdserverpb::TxnResponse> done =
      Call(*cluster.kv(leader), &etcdserverpb::KV::Stub::Txn, txn);
  INFO(done.error());
  REQUIRE(done.ok());
  const int64_t revision = done.response.header().revision();

  EventLog log;
  REQUIRE(ProgressThrough(watch, revision, log));
  for (const std::string& problem : log.problems) FAIL_CHECK(problem);

  // The fragmenting watcher: several responses, every one but the last
  // marked, together the 3 events once each.
  const std::vector<WatchResponse>& pieces = log.responses[0];
  {
    std::string described;
    for (const WatchResponse& piece : pieces) {
      absl::StrAppend(&described, Describe(piece), " ");
    }
    INFO(described);
    REQUIRE(pieces.size() >= 2);
    for (size_t i = 0; i < pieces.size(); ++i) {
      CHECK(pieces[i].fragment() == (i + 1 < pieces.size()));
      CHECK(pieces[i].events_size() > 0);
    }
  }
  for (int64_t id : {int64_t{0}, int64_t{1}}) {
    std::vector<std::string> keys;
    for (const Event& event : log.events[id]) {
      keys.push_back(event.kv().key());
      CHECK(event.kv().mod_revision() == revision);
      CHECK(event.kv().value().size() == kNew);
      CHECK(event.prev_kv().value().size() == kOld);
    }
    CHECK(keys == std::vector<std::string>{"frag/1", "frag/2", "frag/3"});
  }
  // The other one gets the revision whole.
  REQUIRE(log.responses[1].size() == 1);
  CHECK_FALSE(log.responses[1][0].fragment());
  CHECK(log.responses[1][0].events_size() == 3);
}

// etcd sends the pieces of a fragmented response back to back, and clientv3
// reassembles them on that assumption: a created (or canceled) reply between
// two pieces replaces the pieces gathered so far (watchGrpcStream.run), so
// their events are lost. Here the pieces wait on flow control (the client
// reads nothing) while another watcher is created on the stream.
TEST_CASE("Watch fragments are not interleaved with other replies", "[watch]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  const std::string prefix = "inter/";
  constexpr int kKeys = 6;
  constexpr size_t kOld = 1'200'000, kNew = 240'000;
  int64_t written = 0;
  for (int i = 0; i < kKeys; ++i) {
    Reply<etcdserverpb::PutResponse> put =
        Put(cluster, leader, absl::StrCat(prefix, i),
            std::string(kOld, static_cast<char>('a' + i)));
    REQUIRE(put.ok());
    written = put.response.header().revision();
  }
  REQUIRE(WaitHub(cluster, member, absl::StrCat(prefix, kKeys - 1), written));

  WatchClient watch(MakeChannel(cluster.client_port(member), 200,
                                /*small_window=*/true));
  REQUIRE(watch.Send(Create({.key = prefix,
                             .range_end = PrefixEnd(prefix),
                             .prev_kv = true,
                             .fragment = true})));
  std::optional<WatchResponse> created = watch.Next();
  REQUIRE(created);
  REQUIRE(created->created());
  watch.Pause();

  etcdserverpb::TxnRequest txn;
  for (int i = 0; i < kKeys; ++i) {
    etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
    put->set_key(absl::StrCat(prefix, i));
    put->set_value(std::string(kNew, static_cast<char>('A' + i)));
  }
  Reply<etcdserverpb::TxnResponse> done =
      Call(*cluster.kv(leader), &etcdserverpb::KV::Stub::Txn, txn);
  INFO(done.error());
  REQUIRE(done.ok());
  const int64_t revision = done.response.header().revision();
  // Once the member's hub has it, the stream has built the pieces.
  REQUIRE(WaitHub(cluster, member, absl::StrCat(prefix, 0), revision));
  REQUIRE(watch.Send(Create({.key = "elsewhere"})));
  watch.Resume();

  EventLog log;
  std::vector<WatchResponse> sequence;
  REQUIRE(ProgressThrough(watch, revision, log, &sequence));
  for (const std::string& problem : log.problems) FAIL_CHECK(problem);
  std::string described;
  size_t first = sequence.size(), last = 0;
  for (size_t i = 0; i < sequence.size(); ++i) {
    absl::StrAppend(&described, Describe(sequence[i]), " ");
    if (sequence[i].watch_id() == 0 && sequence[i].events_size() > 0) {
      first = std::min(first, i);
      last = i;
    }
  }
  INFO(described);
  REQUIRE(first < sequence.size());
  CHECK(log.events[0].size() == kKeys);
  CHECK(log.responses[0].size() >= 2);
  for (size_t i = first; i <= last; ++i) {
    INFO("response " << i);
    CHECK(sequence[i].watch_id() == 0);
    CHECK_FALSE(sequence[i].created());
  }
  // The other watcher was created all the same.
  CHECK(std::count_if(sequence.begin(), sequence.end(),
                      [](const WatchResponse& response) {
                        return response.created() && response.watch_id() == 1;
                      }) == 1);
}

// clientv3's WithRequireLeader: such a stream ends with "etcdserver: no
// leader" once its member has known no leader for three election timeouts,
// and a new one is refused at once; other streams stay.
TEST_CASE("A watch stream that requires a leader ends when there is none",
          "[watch]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const std::vector<int> followers = cluster.RunningExcept(leader);
  const int member = followers[0];
  WatchClient strict(cluster.channel(member), nullptr,
                     /*require_leader=*/true);
  WatchClient lenient(cluster.channel(member));
  for (WatchClient* watch : {&strict, &lenient}) {
    REQUIRE(watch->Send(Create({.key = "quorum"})));
    std::optional<WatchResponse> created = watch->Next();
    REQUIRE(created);
    CHECK(created->created());
  }
  {
    std::jthread stop_leader([&] { cluster.Stop(leader); });
    std::jthread stop_other([&] { cluster.Stop(followers[1]); });
  }
  const absl::Time stopped = absl::Now();
  CHECK(Eventually([&] { return strict.ended(); },
                   6 * kElectionTimeout + absl::Seconds(3)));
  UNSCOPED_INFO("ended " << absl::FormatDuration(absl::Now() - stopped)
                         << " after the others stopped");
  CHECK(strict.status().error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(strict.status().error_message() == "etcdserver: no leader");
  CHECK_FALSE(lenient.ended());

  WatchClient refused(cluster.channel(member), nullptr,
                      /*require_leader=*/true);
  CHECK(Eventually([&] { return refused.ended(); }, absl::Seconds(2)));
  CHECK(refused.status().error_message() == "etcdserver: no leader");
}

// ---------------------------------------------------------------------------
// 2. A watch resumes across a leader change

// A watcher that reconnects to a running member when its stream breaks,
// from the last revision it saw + 1.
class ResumingWatcher {
 public:
  ResumingWatcher(const Cluster& cluster, int preferred, std::string key,
                  int64_t start_revision)
      : cluster_(cluster),
        preferred_(preferred),
        key_(std::move(key)),
        next_(start_revision),
        thread_([this](std::stop_token stop) { Run(stop); }) {}

  // (revision, value) of every event seen, in the order seen.
  std::vector<std::pair<int64_t, std::string>> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  int64_t last_revision() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.empty() ? 0 : seen_.back().first;
  }
  int streams() const { return streams_.load(); }
  std::vector<std::string> problems() const {
    std::lock_guard<std::mutex> lock(mu_);
    return problems_;
  }

 private:
  void Run(std::stop_token stop) {
    while (!stop.stop_requested()) {
      int member = preferred_;
      if (!cluster_.running(member)) {
        const std::vector<int> others = cluster_.RunningExcept(preferred_);
        if (others.empty()) return;
        member = others[static_cast<size_t>(streams_.load()) % others.size()];
      }
      ++streams_;
      WatchClient watch(cluster_.channel(member));
      int64_t from;
      {
        std::lock_guard<std::mutex> lock(mu_);
        from = next_;
      }
      if (!watch.Send(Create({.key = key_, .start_revision = from}))) continue;
      while (!stop.stop_requested()) {
        std::optional<WatchResponse> response =
            watch.Next(absl::Milliseconds(100));
        if (!response) {
          if (watch.ended()) break;
          continue;
        }
        if (response->canceled()) {
          std::lock_guard<std::mutex> lock(mu_);
          problems_.push_back("canceled: " + Describe(*response));
          break;
        }
        std::lock_guard<std::mutex> lock(mu_);
        for (const Event& event : response->events()) {
          seen_.emplace_back(event.kv().mod_revision(), event.kv().value());
          next_ = event.kv().mod_revision() + 1;
        }
      }
    }
  }

  const Cluster& cluster_;
  const int preferred_;
  const std::string key_;
  mutable std::mutex mu_;
  int64_t next_;                                       // mu_
  std::vector<std::pair<int64_t, std::string>> seen_;  // mu_
  std::vector<std::string> problems_;                  // mu_
  std::atomic<int> streams_{0};
  std::jthread thread_;  // last: started once the rest is ready
};

TEST_CASE(
    "A watch resumes across a leader change with nothing skipped or repeated",
    "[watch][failover]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const std::vector<int> followers = cluster.RunningExcept(leader);
  const int writer = followers[0];
  const std::string key = "resume/key";

  Reply<etcdserverpb::PutResponse> first = Put(cluster, writer, key, "v0");
  REQUIRE(first.ok());
  const int64_t start = first.response.header().revision() + 1;

  // value -> revision of every acknowledged put.
  std::map<std::string, int64_t> acknowledged;
  std::set<std::string> written;
  int failed = 0;
  constexpr int kPuts = 150;
  {
    ResumingWatcher on_leader(cluster, leader, key, start);
    ResumingWatcher on_follower(cluster, followers[1], key, start);
    std::jthread stopper;
    for (int i = 1; i <= kPuts; ++i) {
      if (i == kPuts / 2) {
        stopper = std::jthread([&cluster, leader] { cluster.Stop(leader); });
      }
      const std::string value = absl::StrCat("v", i);
      written.insert(value);
      Reply<etcdserverpb::PutResponse> put =
          Put(cluster, writer, key, value, 0, absl::Seconds(2));
      if (put.ok()) {
        acknowledged[value] = put.response.header().revision();
      } else {
        ++failed;
      }
    }
    stopper.join();
    int64_t newest = 0;
    for (const auto& [value, revision] : acknowledged) {
      newest = std::max(newest, revision);
    }
    std::cout << "resume: " << acknowledged.size() << " puts acknowledged, "
              << failed << " failed; the leader's watcher used "
              << on_leader.streams() << " streams, the follower's "
              << on_follower.streams() << std::endl;
    CHECK(acknowledged.size() >= kPuts / 2);
    for (ResumingWatcher* watcher : {&on_leader, &on_follower}) {
      CHECK(Eventually([&] { return watcher->last_revision() >= newest; },
                       absl::Seconds(15)));
      for (const std::string& problem : watcher->problems())
        FAIL_CHECK(problem);
      const std::vector<std::pair<int64_t, std::string>> seen = watcher->seen();
      std::set<std::string> values;
      std::set<int64_t> revisions;
      int64_t previous = 0;
      for (const auto& [revision, value] : seen) {
        INFO("revision " << revision << " value " << value);
        CHECK(revision > previous);  // in order, never twice
        previous = revision;
        CHECK(values.insert(value).second);
        CHECK(written.contains(value));
        revisions.insert(revision);
        auto acked = acknowledged.find(value);
        if (acked != acknowledged.end()) CHECK(acked->second == revision);
      }
      for (const auto& [value, revision] : acknowledged) {
        INFO("acknowledged " << value << " at " << revision);
        CHECK(revisions.contains(revision));
      }
    }
    // The leader's stream broke with it and was resumed elsewhere.
    CHECK(on_leader.streams() >= 2);
    // What each live member's store holds (for the failure message).
    for (int i : cluster.RunningExcept(-1)) {
      WatchClient replay(cluster.channel(i));
      REQUIRE(replay.Send(Create({.key = key, .start_revision = start})));
      std::string history;
      int64_t through = 0;
      while (through < newest) {
        std::optional<WatchResponse> response = replay.Next();
        if (!response) break;
        for (const Event& event : response->events()) {
          through = event.kv().mod_revision();
          absl::StrAppend(&history, " ", event.kv().value(), "@", through);
        }
      }
      UNSCOPED_INFO("member " << i << " history:" << history);
      Reply<etcdserverpb::RangeResponse> now =
          Range(cluster, i, key, "", /*serializable=*/true);
      UNSCOPED_INFO("member " << i << " revision "
                              << now.response.header().revision());
    }
    {
      std::string acked;
      for (const auto& [value, revision] : acknowledged) {
        absl::StrAppend(&acked, " ", value, "@", revision);
      }
      UNSCOPED_INFO("acknowledged:" << acked);
      for (ResumingWatcher* watcher : {&on_leader, &on_follower}) {
        std::string seen;
        for (const auto& [revision, value] : watcher->seen()) {
          absl::StrAppend(&seen, " ", value, "@", revision);
        }
        UNSCOPED_INFO("seen:" << seen);
      }
    }
  }
}

// A member that was down while the log was compacted catches up by a raft
// snapshot (its watch hub is Reset): a watcher created on it as it comes back,
// from before what it missed, sees every revision once, in order, also those
// written while it catches up.
TEST_CASE("A watch on a member that catches up by snapshot misses nothing",
          "[watch][failover]") {
  Cluster cluster(3, {}, [](KvServerOptions& options) {
    options.snapshot_count = 20;
    options.snapshot_catchup_entries = 5;
  });
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int lagging = cluster.RunningExcept(leader).front();
  const std::string key = "catchup/key";
  const int64_t start = PutRevision(cluster, leader, key, "v0") + 1;
  cluster.Stop(lagging);
  std::map<int64_t, std::string> acknowledged;
  int next_value = 1;
  const auto write = [&](int count) {
    for (int i = 0; i < count; ++i, ++next_value) {
      const std::string value = absl::StrCat("v", next_value);
      Reply<etcdserverpb::PutResponse> put = Put(cluster, leader, key, value);
      if (put.ok()) acknowledged[put.response.header().revision()] = value;
    }
  };
  write(100);
  REQUIRE(cluster.Restart(lagging));
  ResumingWatcher watcher(cluster, lagging, key, start);
  write(60);
  REQUIRE_FALSE(acknowledged.empty());
  const int64_t newest = acknowledged.rbegin()->first;
  CHECK(Eventually([&] { return watcher.last_revision() >= newest; },
                   absl::Seconds(15)));
  for (const std::string& problem : watcher.problems()) FAIL_CHECK(problem);
  std::map<int64_t, std::string> seen;
  int64_t previous = 0;
  for (const auto& [revision, value] : watcher.seen()) {
    INFO("revision " << revision << " value " << value);
    CHECK(revision > previous);
    previous = revision;
    seen[revision] = value;
  }
  CHECK(seen == acknowledged);
  std::cout << "catch-up: " << acknowledged.size() << " puts, the watcher used "
            << watcher.streams() << " streams" << std::endl;
}

TEST_CASE(
    "A slow watcher catches up from the store without holding writers back",
    "[watch]") {
  constexpr int kSlowPuts = 384;
  // A ring of 50 events: the paused watcher falls far behind it.
  Cluster cluster(
      3, {}, [](KvServerOptions& options) { options.watch_ring_events = 50; });
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  // A small receive window (no BDP growth), so that a client that does not
  // read makes the server's writes to it wait.
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  arguments.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  WatchClient slow(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", cluster.client_port(member)),
      grpc::InsecureChannelCredentials(), arguments));
  REQUIRE(slow.Send(Create({.key = "slow/", .range_end = PrefixEnd("slow/")})));
  std::optional<WatchResponse> created = slow.Next();
  REQUIRE(created.has_value());
  REQUIRE(created->created());
  slow.Pause();

  // The writers do not wait for the watcher that does not read.
  std::map<int64_t, std::string> acknowledged;
  const absl::Time start = absl::Now();
  // 24 MiB: more than gRPC buffers for a stream nobody reads, so the
  // server's writes to it stop and it falls behind the ring.
  for (int i = 0; i < kSlowPuts; ++i) {
    const std::string value = absl::StrCat(i, ":", std::string(64 << 10, 'x'));
    acknowledged[PutRevision(cluster, leader, absl::StrCat("slow/", i % 7),
                             value)] = value;
  }
  const absl::Duration writing = absl::Now() - start;
  CHECK(writing < absl::Seconds(60));

  slow.Resume();
  std::vector<std::pair<int64_t, std::string>> seen;
  const int64_t newest = acknowledged.rbegin()->first;
  while (seen.empty() || seen.back().first < newest) {
    std::optional<WatchResponse> response = slow.Next();
    if (!response.has_value()) break;
    REQUIRE_FALSE(response->canceled());
    for (const mvccpb::Event& event : response->events()) {
      seen.emplace_back(event.kv().mod_revision(), event.kv().value());
    }
  }
  std::map<int64_t, std::string> delivered;
  int64_t previous = 0;
  for (const auto& [revision, value] : seen) {
    CHECK(revision > previous);  // in order, none repeated
    previous = revision;
    delivered[revision] = value;
  }
  CHECK(delivered == acknowledged);  // none skipped

  // A watcher that starts where the writes started, long gone from the
  // ring: the store's history first, then the ring, without a seam.
  WatchClient late(cluster.channel(member));
  REQUIRE(late.Send(Create({.key = "slow/",
                            .range_end = PrefixEnd("slow/"),
                            .start_revision = acknowledged.begin()->first})));
  std::map<int64_t, std::string> replayed;
  previous = 0;
  while (previous < newest) {
    std::optional<WatchResponse> response = late.Next();
    if (!response.has_value()) break;
    REQUIRE_FALSE(response->canceled());
    for (const mvccpb::Event& event : response->events()) {
      CHECK(event.kv().mod_revision() > previous);
      previous = event.kv().mod_revision();
      replayed[previous] = event.kv().value();
    }
  }
  CHECK(replayed == acknowledged);
  std::cout << "slow watcher: " << kSlowPuts << " puts of 64 KiB in " << writing
            << " while it did not read; " << seen.size()
            << " events delivered after it resumed" << std::endl;
}

// ---------------------------------------------------------------------------
// 3. Ten thousand watchers on one member

TEST_CASE("Ten thousand watchers on one member each get their events",
          "[watch][scale]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  constexpr int kStreams = 100;
  constexpr int kPerStream = 100;  // watcher j of each stream: group j
  constexpr int kPutsPerGroup = 3;
  constexpr int kChannels = 10;
  const auto group_prefix = [](int group) {
    return absl::StrCat("big/g", group, "/");
  };

  struct Tally {
    std::mutex mu;
    std::vector<int64_t> created_ids;  // in order
    std::vector<int> events;           // per watch id
    std::vector<std::string> problems;
    int progress = 0;
  };
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < kChannels; ++i) {
    channels.push_back(MakeChannel(cluster.client_port(member), 100 + i));
  }

  const int64_t rss_before = RssKib();
  const absl::Time start = absl::Now();
  std::vector<std::unique_ptr<Tally>> tallies;
  std::vector<std::unique_ptr<WatchClient>> streams;
  for (int s = 0; s < kStreams; ++s) {
    auto tally = std::make_unique<Tally>();
    tally->events.assign(kPerStream, 0);
    Tally* t = tally.get();
    tallies.push_back(std::move(tally));
    streams.push_back(std::make_unique<WatchClient>(
        channels[static_cast<size_t>(s % kChannels)],
        [t](const WatchResponse& response) {
          std::lock_guard<std::mutex> lock(t->mu);
          if (response.created()) {
            t->created_ids.push_back(response.watch_id());
          } else if (IsProgress(response)) {
            ++t->progress;
          } else if (response.watch_id() < 0 ||
                     response.watch_id() >= kPerStream || response.canceled()) {
            t->problems.push_back(Describe(response));
          } else {
            t->events[static_cast<size_t>(response.watch_id())] +=
                response.events_size();
          }
        }));
    for (int j = 0; j < kPerStream; ++j) {
      REQUIRE(streams.back()->Send(Create(
          {.key = group_prefix(j), .range_end = PrefixEnd(group_prefix(j))})));
    }
  }
  const auto all_created = [&] {
    for (auto& tally : tallies) {
      std::lock_guard<std::mutex> lock(tally->mu);
      if (tally->created_ids.size() < kPerStream) return false;
    }
    return true;
  };
  REQUIRE(Eventually(all_created, absl::Seconds(30)));
  const absl::Time created = absl::Now();

  // The puts, from 4 writers; put p goes to group p % kPerStream.
  std::atomic<int> failed_puts{0};
  {
    std::vector<std::jthread> writers;
    for (int w = 0; w < 4; ++w) {
      writers.emplace_back([&, w] {
        for (int p = w; p < kPerStream * kPutsPerGroup; p += 4) {
          const std::string key =
              absl::StrCat(group_prefix(p % kPerStream), "k", p / kPerStream);
          bool ok = false;
          for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
            ok = Put(cluster, leader, key, "x").ok();
          }
          if (!ok) ++failed_puts;
        }
      });
    }
  }
  REQUIRE(failed_puts.load() == 0);
  const absl::Time written = absl::Now();
  const auto all_delivered = [&] {
    for (auto& tally : tallies) {
      std::lock_guard<std::mutex> lock(tally->mu);
      for (int count : tally->events) {
        if (count < kPutsPerGroup) return false;
      }
    }
    return true;
  };
  const bool delivered = Eventually(all_delivered, absl::Seconds(30));
  const absl::Time end = absl::Now();
  const int64_t rss_after = RssKib();

  // Nothing more than that: a progress reply on every stream comes after
  // everything it was owed.
  for (auto& stream : streams) REQUIRE(stream->Send(Progress()));
  CHECK(Eventually([&] {
    for (auto& tally : tallies) {
      std::lock_guard<std::mutex> lock(tally->mu);
      if (tally->progress < 1) return false;
    }
    return true;
  }));

  std::cout << "10k watchers: " << kStreams << " streams x " << kPerStream
            << " watchers: created in " << absl::FormatDuration(created - start)
            << ", " << kPerStream * kPutsPerGroup << " puts in "
            << absl::FormatDuration(written - created)
            << ", every event delivered " << absl::FormatDuration(end - written)
            << " after the last put; total "
            << absl::FormatDuration(end - start) << "; process RSS "
            << rss_before / 1024 << " MiB -> " << rss_after / 1024 << " MiB (+"
            << (rss_after - rss_before) / 1024 << " MiB)" << std::endl;

  CHECK(delivered);
  int short_watchers = 0, extra_events = 0;
  for (size_t s = 0; s < tallies.size(); ++s) {
    Tally& tally = *tallies[s];
    std::lock_guard<std::mutex> lock(tally.mu);
    for (const std::string& problem : tally.problems) FAIL_CHECK(problem);
    std::vector<int64_t> expected_ids(kPerStream);
    for (int j = 0; j < kPerStream; ++j) {
      expected_ids[static_cast<size_t>(j)] = j;
    }
    CHECK(tally.created_ids == expected_ids);
    for (int count : tally.events) {
      if (count < kPutsPerGroup) ++short_watchers;
      if (count > kPutsPerGroup) ++extra_events;
    }
  }
  CHECK(short_watchers == 0);
  CHECK(extra_events == 0);
  streams.clear();
}

// ---------------------------------------------------------------------------
// 4. Leases

TEST_CASE("A lease granted through a follower is kept alive through it at once",
          "[lease]") {
  // The follower answers the grant once it applied it, which may be before
  // the leader, whose lessor answers the keep-alive, learned of it. The
  // leader is made that late here: it tells its lessor of each applied
  // batch 100 ms after writing it.
  auto slow_member = std::make_shared<std::atomic<int>>(-1);
  Cluster cluster(3, {}, [slow_member](KvServerOptions& options) {
    const int member = options.name.back() - '0';
    options.before_observing_applied = [slow_member, member] {
      if (slow_member->load() == member) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    };
  });
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  slow_member->store(leader);
  const int follower = cluster.RunningExcept(leader)[0];
  int renewed = 0;
  for (int i = 0; i < 20; ++i) {
    Reply<etcdserverpb::LeaseGrantResponse> granted =
        Grant(cluster, follower, 60);
    INFO(granted.error());
    REQUIRE(granted.ok());
    Reply<etcdserverpb::LeaseKeepAliveResponse> kept =
        KeepAliveOnce(cluster, follower, granted.response.id());
    INFO("keep-alive " << i << ": " << kept.error());
    REQUIRE(kept.ok());
    CHECK(kept.response.ttl() == 60);
    if (kept.response.ttl() == 60) ++renewed;
  }
  CHECK(renewed == 20);
}

TEST_CASE(
    "A stopping member cancels the lease calls it forwarded to the leader at "
    "once",
    "[lease]") {
  // Every member advertises a client URL at which nothing answers, so a lease
  // call a follower forwards to the leader waits for its 10 s deadline unless
  // the follower cancels it. Stopping waits for every call in progress, so
  // without the cancel a member would take that long to stop
  // (LeaderStubs::CancelForwarded).
  SilentListener silent;
  Cluster cluster(3, {}, [&silent](KvServerOptions& options) {
    options.advertise_client_url =
        absl::StrCat("http://127.0.0.1:", silent.port());
  });
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int follower = cluster.RunningExcept(leader)[0];
  Reply<etcdserverpb::LeaseGrantResponse> granted = Grant(cluster, leader, 60);
  INFO(granted.error());
  REQUIRE(granted.ok());
  std::future<Reply<etcdserverpb::LeaseTimeToLiveResponse>> pending =
      std::async(std::launch::async, [&cluster, follower, &granted] {
        etcdserverpb::LeaseTimeToLiveRequest request;
        request.set_id(granted.response.id());
        return Call(*cluster.lease(follower),
                    &etcdserverpb::Lease::Stub::LeaseTimeToLive, request,
                    absl::Seconds(30));
      });
  // The follower registers the forwarded call before it connects.
  REQUIRE(Eventually([&] { return silent.accepted() > 0; }));
  REQUIRE(pending.wait_for(std::chrono::seconds(0)) ==
          std::future_status::timeout);
  const absl::Time stop_started = absl::Now();
  cluster.Stop(follower);
  const absl::Duration stopping = absl::Now() - stop_started;
  INFO("stopping took " << absl::FormatDuration(stopping));
  CHECK(stopping < absl::Seconds(5));
  Reply<etcdserverpb::LeaseTimeToLiveResponse> answer = pending.get();
  INFO(answer.error());
  CHECK_FALSE(answer.ok());
}

TEST_CASE(
    "Leases are granted kept alive revoked and expire across a leader change",
    "[lease]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const std::vector<int> followers = cluster.RunningExcept(leader);
  const int follower = followers[0];

  // Grant on a follower: a server-chosen positive ID, a TTL raised to the
  // minimum.
  Reply<etcdserverpb::LeaseGrantResponse> small = Grant(cluster, follower, 0);
  INFO(small.error());
  REQUIRE(small.ok());
  CHECK(small.response.id() > 0);
  CHECK(small.response.ttl() == kMinTtl);
  CHECK(Revoke(cluster, follower, small.response.id()).ok());

  // A client-chosen ID, twice.
  {
    etcdserverpb::LeaseGrantRequest request;
    request.set_id(0x5eed);
    request.set_ttl(30);
    Reply<etcdserverpb::LeaseGrantResponse> chosen =
        Call(*cluster.lease(leader), &etcdserverpb::Lease::Stub::LeaseGrant,
             request);
    REQUIRE(chosen.ok());
    CHECK(chosen.response.id() == 0x5eed);
    Reply<etcdserverpb::LeaseGrantResponse> again =
        Call(*cluster.lease(follower), &etcdserverpb::Lease::Stub::LeaseGrant,
             request);
    CHECK_FALSE(again.ok());
    CHECK(again.status.error_message() == "etcdserver: lease already exists");
    CHECK(Revoke(cluster, leader, 0x5eed).ok());
  }

  Reply<etcdserverpb::LeaseGrantResponse> granted =
      Grant(cluster, follower, 30);
  REQUIRE(granted.ok());
  const int64_t id = granted.response.id();
  CHECK(id > 0);
  CHECK(id != small.response.id());
  CHECK(granted.response.ttl() == 30);
  REQUIRE(Put(cluster, follower, "lease/a", "1", id).ok());
  REQUIRE(Put(cluster, leader, "lease/b", "2", id).ok());

  {  // time to live and keep-alive on a follower, then revoke
    Reply<etcdserverpb::LeaseTimeToLiveResponse> ttl =
        TimeToLive(cluster, follower, id);
    INFO(ttl.error());
    REQUIRE(ttl.ok());
    CHECK(ttl.response.id() == id);
    CHECK(ttl.response.grantedttl() == 30);
    CHECK(ttl.response.ttl() > 25);
    CHECK(ttl.response.ttl() <= 30);
    std::set<std::string> keys(ttl.response.keys().begin(),
                               ttl.response.keys().end());
    CHECK(keys == std::set<std::string>{"lease/a", "lease/b"});

    // A keep-alive stream on a follower, several requests.
    {
      std::unique_ptr<etcdserverpb::Lease::Stub> stub = cluster.lease(follower);
      grpc::ClientContext context;
      context.set_deadline(DeadlineIn(kCallTimeout));
      auto stream = stub->LeaseKeepAlive(&context);
      for (int n = 0; n < 3; ++n) {
        etcdserverpb::LeaseKeepAliveRequest request;
        request.set_id(id);
        REQUIRE(stream->Write(request));
        etcdserverpb::LeaseKeepAliveResponse response;
        REQUIRE(stream->Read(&response));
        CHECK(response.id() == id);
        CHECK(response.ttl() == 30);
      }
      etcdserverpb::LeaseKeepAliveRequest unknown;
      unknown.set_id(id + 1);
      REQUIRE(stream->Write(unknown));
      etcdserverpb::LeaseKeepAliveResponse response;
      REQUIRE(stream->Read(&response));
      CHECK(response.ttl() == 0);
      stream->WritesDone();
      CHECK(stream->Finish().ok());
    }

    Reply<etcdserverpb::LeaseRevokeResponse> revoked =
        Revoke(cluster, follower, id);
    INFO(revoked.error());
    REQUIRE(revoked.ok());
    const int64_t at = revoked.response.header().revision();
    // Both keys went at one revision, on every member.
    for (int i = 0; i < cluster.size(); ++i) {
      REQUIRE(cluster.WaitApplied(i, at));
      Reply<etcdserverpb::RangeResponse> left =
          Range(cluster, i, "lease/", PrefixEnd("lease/"), true);
      REQUIRE(left.ok());
      CHECK(left.response.kvs_size() == 0);
      Reply<etcdserverpb::RangeResponse> before =
          Range(cluster, i, "lease/", PrefixEnd("lease/"), true, at - 1);
      REQUIRE(before.ok());
      CHECK(before.response.kvs_size() == 2);
    }
    Reply<etcdserverpb::LeaseTimeToLiveResponse> gone =
        TimeToLive(cluster, follower, id);
    REQUIRE(gone.ok());
    CHECK(gone.response.ttl() == -1);
    CHECK(gone.response.grantedttl() == 0);
    CHECK(KeepAliveOnce(cluster, follower, id).response.ttl() == 0);
  }

  {  // a lease outlives a leader change, then expires everywhere at once
    constexpr int64_t kTtl = 2;
    Reply<etcdserverpb::LeaseGrantResponse> short_lease =
        Grant(cluster, follower, kTtl);
    REQUIRE(short_lease.ok());
    const int64_t lease = short_lease.response.id();
    REQUIRE(short_lease.response.ttl() == kTtl);
    REQUIRE(Put(cluster, follower, "lease/live1", "1", lease).ok());
    Reply<etcdserverpb::PutResponse> last_put =
        Put(cluster, follower, "lease/live2", "2", lease);
    REQUIRE(last_put.ok());

    // Keep-alives every 200 ms to a member that stays, or any running one.
    std::mutex mu;
    absl::Time last_sent = absl::InfinitePast();  // of a keep-alive answered
    int answered = 0, refused = 0;
    std::vector<int64_t> ttls;
    auto keep_alive = std::make_unique<std::jthread>([&](std::stop_token stop) {
      int target = follower;
      while (!stop.stop_requested()) {
        if (!cluster.running(target)) target = follower;
        const absl::Time sent = absl::Now();
        Reply<etcdserverpb::LeaseKeepAliveResponse> reply =
            KeepAliveOnce(cluster, target, lease, absl::Seconds(1));
        {
          std::lock_guard<std::mutex> lock(mu);
          if (reply.ok()) {
            ++answered;
            ttls.push_back(reply.response.ttl());
            if (reply.response.ttl() > 0) last_sent = sent;
          } else {
            ++refused;
            const std::vector<int> others = cluster.RunningExcept(target);
            if (!others.empty()) target = others.front();
          }
        }
        const absl::Time next = sent + absl::Milliseconds(200);
        while (!stop.stop_requested() && absl::Now() < next) {
          absl::SleepFor(absl::Milliseconds(10));
        }
      }
    });

    cluster.Stop(leader);
    const absl::Time stopped = absl::Now();
    const int new_leader = cluster.WaitLeader();
    REQUIRE(new_leader >= 0);
    // Through more than a TTL after the change the lease and its keys stay.
    bool alive = true;
    while (alive && absl::Now() < stopped + absl::Seconds(kTtl) +
                                      absl::Milliseconds(700)) {
      Reply<etcdserverpb::RangeResponse> keys =
          Range(cluster, new_leader, "lease/live", PrefixEnd("lease/live"));
      alive = keys.ok() && keys.response.kvs_size() == 2;
      absl::SleepFor(absl::Milliseconds(50));  // a sample every 50 ms
    }
    CHECK(alive);
    // On the new leader's follower: forwarded.
    const int other = followers[0] == new_leader ? followers[1] : followers[0];
    Reply<etcdserverpb::LeaseTimeToLiveResponse> ttl =
        TimeToLive(cluster, other, lease);
    INFO(ttl.error());
    REQUIRE(ttl.ok());
    CHECK(ttl.response.ttl() > 0);
    CHECK(ttl.response.grantedttl() == kTtl);
    CHECK(ttl.response.keys_size() == 2);

    // Keep-alives stop: the lease expires within TTL + a few election
    // timeouts (and the lessor's one-second retry), not before its TTL.
    keep_alive.reset();
    absl::Time renewed;
    {
      std::lock_guard<std::mutex> lock(mu);
      renewed = last_sent;
      UNSCOPED_INFO(answered << " keep-alives answered, " << refused
                             << " refused");
      for (int64_t t : ttls) CHECK(t == kTtl);
    }
    const std::vector<int> live = cluster.RunningExcept(-1);
    const auto gone_everywhere = [&] {
      for (int i : live) {
        Reply<etcdserverpb::RangeResponse> keys =
            Range(cluster, i, "lease/live", PrefixEnd("lease/live"), true);
        if (!keys.ok() || keys.response.kvs_size() != 0) return false;
      }
      return true;
    };
    REQUIRE(Eventually(
        gone_everywhere,
        absl::Seconds(kTtl) + 3 * kElectionTimeout + absl::Seconds(3)));
    const absl::Time expired = absl::Now();
    std::cout << "lease of TTL " << kTtl << " s expired everywhere "
              << absl::FormatDuration(expired - renewed)
              << " after its last renewal" << std::endl;
    CHECK(expired - renewed >= absl::Seconds(kTtl));
    CHECK(expired - renewed <=
          absl::Seconds(kTtl) + 3 * kElectionTimeout + absl::Seconds(1.5));

    // One revision for both keys, the same on every member.
    std::set<int64_t> revisions;
    for (int i : live) {
      WatchClient watch(cluster.channel(i));
      REQUIRE(watch.Send(
          Create({.key = "lease/live",
                  .range_end = PrefixEnd("lease/live"),
                  .start_revision = last_put.response.header().revision() + 1,
                  .no_put = true})));
      std::vector<int64_t> deletes;
      const absl::Time deadline = absl::Now() + kDeliveryTimeout;
      while (deletes.size() < 2 && absl::Now() < deadline) {
        std::optional<WatchResponse> response =
            watch.Next(deadline - absl::Now());
        if (!response) break;
        for (const Event& event : response->events()) {
          CHECK(event.type() == Event::DELETE);
          deletes.push_back(event.kv().mod_revision());
        }
      }
      REQUIRE(deletes.size() == 2);
      CHECK(deletes[0] == deletes[1]);
      revisions.insert(deletes.begin(), deletes.end());
    }
    CHECK(revisions.size() == 1);
    Reply<etcdserverpb::LeaseTimeToLiveResponse> gone =
        TimeToLive(cluster, live.front(), lease);
    REQUIRE(gone.ok());
    CHECK(gone.response.ttl() == -1);
  }
}

// ---------------------------------------------------------------------------
// 5. Lock and Election

// An asynchronous unary call's outcome.
template <typename Request, typename Response>
struct Pending {
  grpc::ClientContext context;
  Request request;
  Response response;
  std::promise<grpc::Status> promise;
  std::shared_future<grpc::Status> future = promise.get_future().share();

  bool Done(absl::Duration within) const {
    return future.wait_for(absl::ToChronoMilliseconds(within)) ==
           std::future_status::ready;
  }
};

std::shared_ptr<Pending<v3lockpb::LockRequest, v3lockpb::LockResponse>>
LockAsync(v3lockpb::Lock::Stub& stub, const std::string& name, int64_t lease,
          absl::Duration timeout = absl::Seconds(30)) {
  auto call = std::make_shared<
      Pending<v3lockpb::LockRequest, v3lockpb::LockResponse>>();
  call->context.set_deadline(DeadlineIn(timeout));
  call->request.set_name(name);
  call->request.set_lease(lease);
  stub.async()->Lock(&call->context, &call->request, &call->response,
                     [call](grpc::Status status) {
                       call->promise.set_value(std::move(status));
                     });
  return call;
}

Reply<v3lockpb::UnlockResponse> Unlock(const Cluster& cluster, int i,
                                       const std::string& key) {
  v3lockpb::UnlockRequest request;
  request.set_key(key);
  return Call(*cluster.lock(i), &v3lockpb::Lock::Stub::Unlock, request);
}

TEST_CASE("Lock has one holder at a time and a revoked waiter gets an error",
          "[lock]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const std::vector<int> followers = cluster.RunningExcept(leader);
  std::vector<int64_t> leases;
  for (int i = 0; i < 5; ++i) {
    Reply<etcdserverpb::LeaseGrantResponse> lease =
        Grant(cluster, followers[0], 30);
    REQUIRE(lease.ok());
    leases.push_back(lease.response.id());
  }
  std::unique_ptr<v3lockpb::Lock::Stub> first_stub = cluster.lock(followers[0]);
  std::unique_ptr<v3lockpb::Lock::Stub> second_stub =
      cluster.lock(followers[1]);

  // Without a lease: refused.
  {
    v3lockpb::LockRequest request;
    request.set_name("lk");
    CHECK_FALSE(Call(*first_stub, &v3lockpb::Lock::Stub::Lock, request).ok());
  }

  auto first = LockAsync(*first_stub, "lk", leases[0]);
  REQUIRE(first->Done(kCallTimeout));
  REQUIRE(first->future.get().ok());
  const std::string key1 = first->response.key();
  CHECK(key1.rfind("lk/", 0) == 0);
  {
    Reply<etcdserverpb::RangeResponse> held = Range(cluster, leader, key1);
    REQUIRE(held.ok());
    REQUIRE(held.response.kvs_size() == 1);
    CHECK(held.response.kvs(0).lease() == leases[0]);
  }

  const auto queued = [&](int keys) {
    return Eventually([&] {
      Reply<etcdserverpb::RangeResponse> queue =
          Range(cluster, leader, "lk/", PrefixEnd("lk/"));
      return queue.ok() && queue.response.kvs_size() == keys;
    });
  };
  // The second waits for the first's Unlock.
  auto second = LockAsync(*second_stub, "lk", leases[1]);
  REQUIRE(queued(2));
  CHECK_FALSE(second->Done(absl::Milliseconds(300)));
  Reply<v3lockpb::UnlockResponse> unlocked =
      Unlock(cluster, followers[0], key1);
  REQUIRE(unlocked.ok());
  REQUIRE(second->Done(kCallTimeout));
  {
    const grpc::Status status = second->future.get();
    INFO(status.error_message());
    REQUIRE(status.ok());
  }
  const std::string key2 = second->response.key();
  CHECK(key2 != key1);
  CHECK(second->response.header().revision() >=
        unlocked.response.header().revision());

  // A waiter whose call times out leaves the queue.
  auto impatient =
      LockAsync(*first_stub, "lk", leases[4], absl::Milliseconds(700));
  REQUIRE(impatient->Done(kCallTimeout));
  CHECK(impatient->future.get().error_code() ==
        grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK(queued(1));

  // A third waits behind the second; its lease is revoked meanwhile: it
  // gets an error, never the lock.
  auto third = LockAsync(*first_stub, "lk", leases[2]);
  REQUIRE(queued(2));
  CHECK_FALSE(third->Done(absl::Milliseconds(300)));
  REQUIRE(Revoke(cluster, leader, leases[2]).ok());
  REQUIRE(Unlock(cluster, followers[1], key2).ok());
  REQUIRE(third->Done(kCallTimeout));
  {
    const grpc::Status status = third->future.get();
    INFO("third contender: " << status.error_code() << " "
                             << status.error_message() << " key "
                             << third->response.key());
    CHECK_FALSE(status.ok());
  }
  // Nobody holds it now: a fourth gets it at once.
  auto fourth = LockAsync(*second_stub, "lk", leases[3]);
  REQUIRE(fourth->Done(kCallTimeout));
  CHECK(fourth->future.get().ok());
  Reply<etcdserverpb::RangeResponse> queue =
      Range(cluster, leader, "lk/", PrefixEnd("lk/"));
  REQUIRE(queue.ok());
  REQUIRE(queue.response.kvs_size() == 1);
  CHECK(queue.response.kvs(0).key() == fourth->response.key());
}

TEST_CASE("Election campaign leader observe proclaim and resign", "[lock]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const std::vector<int> followers = cluster.RunningExcept(leader);
  std::vector<int64_t> leases;
  for (int i = 0; i < 2; ++i) {
    Reply<etcdserverpb::LeaseGrantResponse> lease =
        Grant(cluster, followers[0], 30);
    REQUIRE(lease.ok());
    leases.push_back(lease.response.id());
  }
  std::unique_ptr<v3electionpb::Election::Stub> stub =
      cluster.election(followers[0]);
  std::unique_ptr<v3electionpb::Election::Stub> other =
      cluster.election(followers[1]);

  // No leader yet.
  {
    v3electionpb::LeaderRequest request;
    request.set_name("el");
    Reply<v3electionpb::LeaderResponse> none =
        Call(*stub, &v3electionpb::Election::Stub::Leader, request);
    CHECK_FALSE(none.ok());
    CHECK(none.status.error_message() == "election: no leader");
  }

  v3electionpb::CampaignRequest campaign1;
  campaign1.set_name("el");
  campaign1.set_lease(leases[0]);
  campaign1.set_value("v1");
  Reply<v3electionpb::CampaignResponse> won =
      Call(*stub, &v3electionpb::Election::Stub::Campaign, campaign1);
  INFO(won.error());
  REQUIRE(won.ok());
  const v3electionpb::LeaderKey leader1 = won.response.leader();
  CHECK(leader1.name() == "el");
  CHECK(leader1.lease() == leases[0]);
  CHECK(leader1.key().rfind("el/", 0) == 0);

  // An observer (on the other follower).
  Inbox<v3electionpb::LeaderResponse> observed;
  grpc::ClientContext observe_context;
  observe_context.set_deadline(DeadlineIn(absl::Seconds(60)));
  v3electionpb::LeaderRequest observe_request;
  observe_request.set_name("el");
  std::unique_ptr<grpc::ClientReader<v3electionpb::LeaderResponse>> observer =
      other->Observe(&observe_context, observe_request);
  std::jthread observe_thread([&] {
    v3electionpb::LeaderResponse response;
    while (observer->Read(&response)) observed.Push(response);
    observed.Close(observer->Finish());
  });
  struct CancelObserver {
    grpc::ClientContext& context;
    std::jthread& thread;
    ~CancelObserver() {
      context.TryCancel();
      if (thread.joinable()) thread.join();
    }
  } cancel_observer{observe_context, observe_thread};
  const auto next_observed = [&]() -> std::string {
    std::optional<v3electionpb::LeaderResponse> response =
        observed.Pop(kDeliveryTimeout);
    if (!response) {
      return absl::StrCat("<nothing: ", observed.status().error_message(), ">");
    }
    return response->kv().value();
  };
  CHECK(next_observed() == "v1");

  // The second candidate waits.
  auto campaign2 = std::make_shared<
      Pending<v3electionpb::CampaignRequest, v3electionpb::CampaignResponse>>();
  campaign2->context.set_deadline(DeadlineIn(absl::Seconds(30)));
  campaign2->request.set_name("el");
  campaign2->request.set_lease(leases[1]);
  campaign2->request.set_value("v2");
  other->async()->Campaign(&campaign2->context, &campaign2->request,
                           &campaign2->response,
                           [campaign2](grpc::Status status) {
                             campaign2->promise.set_value(std::move(status));
                           });
  REQUIRE(Eventually([&] {
    Reply<etcdserverpb::RangeResponse> queue =
        Range(cluster, leader, "el/", PrefixEnd("el/"));
    return queue.ok() && queue.response.kvs_size() == 2;
  }));
  CHECK_FALSE(campaign2->Done(absl::Milliseconds(300)));

  v3electionpb::LeaderRequest leader_request;
  leader_request.set_name("el");
  // The leader's key-value as Election.Leader answers it.
  const auto current_leader = [&](v3electionpb::Election::Stub& from) {
    Reply<v3electionpb::LeaderResponse> current =
        Call(from, &v3electionpb::Election::Stub::Leader, leader_request);
    INFO(current.error());
    REQUIRE(current.ok());
    return current.response.kv();
  };
  CHECK(current_leader(*other).value() == "v1");
  CHECK(current_leader(*other).key() == leader1.key());

  v3electionpb::ProclaimRequest proclaim;
  *proclaim.mutable_leader() = leader1;
  proclaim.set_value("v1b");
  REQUIRE(Call(*stub, &v3electionpb::Election::Stub::Proclaim, proclaim).ok());
  CHECK(next_observed() == "v1b");
  // Campaigning again with the leader's lease keeps the place and proclaims.
  {
    v3electionpb::CampaignRequest again = campaign1;
    again.set_value("v1c");
    Reply<v3electionpb::CampaignResponse> kept =
        Call(*stub, &v3electionpb::Election::Stub::Campaign, again);
    INFO(kept.error());
    REQUIRE(kept.ok());
    CHECK(kept.response.leader().key() == leader1.key());
    CHECK(kept.response.leader().rev() == leader1.rev());
    CHECK(next_observed() == "v1c");
  }

  v3electionpb::ResignRequest resign;
  *resign.mutable_leader() = leader1;
  REQUIRE(Call(*stub, &v3electionpb::Election::Stub::Resign, resign).ok());
  REQUIRE(campaign2->Done(kCallTimeout));
  {
    const grpc::Status status = campaign2->future.get();
    INFO(status.error_message());
    REQUIRE(status.ok());
  }
  CHECK(campaign2->response.leader().lease() == leases[1]);
  CHECK(next_observed() == "v2");
  CHECK(current_leader(*stub).value() == "v2");

  // The first's key is stale now.
  v3electionpb::ProclaimRequest stale;
  *stale.mutable_leader() = leader1;
  stale.set_value("usurper");
  Reply<v3electionpb::ProclaimResponse> refused =
      Call(*stub, &v3electionpb::Election::Stub::Proclaim, stale);
  CHECK_FALSE(refused.ok());
  CHECK(refused.status.error_message() == "election: not leader");
  CHECK(current_leader(*stub).value() == "v2");

  v3electionpb::LeaderRequest empty;
  empty.set_name("nobody");
  Reply<v3electionpb::LeaderResponse> none =
      Call(*stub, &v3electionpb::Election::Stub::Leader, empty);
  CHECK_FALSE(none.ok());
  CHECK(none.status.error_message() == "election: no leader");
}

// ---------------------------------------------------------------------------
// 6. Maintenance.Snapshot and restore

TEST_CASE("Snapshot streams a backup that restores into a new member",
          "[snapshot]") {
  testing::TempDir scratch;
  std::string backup;
  std::vector<mvccpb::KeyValue> original;
  int64_t revision = 0;
  {
    Cluster cluster(3);
    const int leader = cluster.WaitLeader();
    REQUIRE(leader >= 0);
    const int member = cluster.RunningExcept(leader).front();
    for (int i = 0; i < 40; ++i) {
      REQUIRE(Put(cluster, leader, absl::StrCat("snap/k", 100 + i),
                  absl::StrCat("value ", i))
                  .ok());
    }
    // Values that do not compress, so that the backup takes several
    // pieces.
    std::mt19937_64 random(42);
    for (int i = 0; i < 3; ++i) {
      std::string value(700'000, '\0');
      for (char& c : value) c = static_cast<char>(random() & 0xff);
      REQUIRE(Put(cluster, leader, absl::StrCat("snap/big", i), value).ok());
    }
    REQUIRE(Put(cluster, leader, "snap/k100", "changed").ok());
    Reply<etcdserverpb::DeleteRangeResponse> deleted =
        Delete(cluster, leader, "snap/k101");
    REQUIRE(deleted.ok());
    revision = deleted.response.header().revision();
    REQUIRE(cluster.WaitApplied(member, revision));
    Reply<etcdserverpb::RangeResponse> all =
        Range(cluster, member, "snap/", PrefixEnd("snap/"), true);
    REQUIRE(all.ok());
    original.assign(all.response.kvs().begin(), all.response.kvs().end());
    REQUIRE(original.size() == 42);

    std::unique_ptr<etcdserverpb::Maintenance::Stub> stub =
        cluster.maintenance(member);
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(absl::Seconds(30)));
    auto reader = stub->Snapshot(&context, etcdserverpb::SnapshotRequest());
    etcdserverpb::SnapshotResponse piece;
    std::vector<uint64_t> remaining;
    std::vector<size_t> sizes;
    while (reader->Read(&piece)) {
      backup += piece.blob();
      remaining.push_back(piece.remaining_bytes());
      sizes.push_back(piece.blob().size());
    }
    const grpc::Status status = reader->Finish();
    INFO(status.error_message());
    REQUIRE(status.ok());
    INFO(backup.size() << " bytes in " << sizes.size() << " pieces");
    CHECK(backup.size() % 512 == 32);
    CHECK(backup.size() > 2'100'000);
    REQUIRE(remaining.size() >= 2);
    // remaining_bytes: what is still to come after each piece.
    uint64_t received = 0;
    for (size_t i = 0; i < remaining.size(); ++i) {
      received += sizes[i];
      CHECK(remaining[i] == backup.size() - received);
      if (i > 0) CHECK(remaining[i] < remaining[i - 1]);
    }
    CHECK(remaining.back() == 0);
  }

  const fs::path file = fs::path(scratch.path()) / "backup.db";
  {
    std::ofstream out(file, std::ios::binary);
    out.write(backup.data(), static_cast<std::streamsize>(backup.size()));
  }
  const fs::path restored = fs::path(scratch.path()) / "restored";
  const absl::Status restore = RestoreBackup(file, restored);
  INFO(restore);
  REQUIRE(restore.ok());
  CHECK(RestoreBackup(file, restored).code() ==
        absl::StatusCode::kFailedPrecondition);

  {  // a new member serves the same keys at the same revision
    Cluster solo(1, {restored});
    Reply<etcdserverpb::RangeResponse> all =
        Range(solo, 0, "snap/", PrefixEnd("snap/"));
    INFO(all.error());
    REQUIRE(all.ok());
    CHECK(all.response.header().revision() == revision);
    REQUIRE(all.response.kvs_size() == static_cast<int>(original.size()));
    for (size_t i = 0; i < original.size(); ++i) {
      const mvccpb::KeyValue& kv = all.response.kvs(static_cast<int>(i));
      INFO(original[i].key());
      CHECK(kv.key() == original[i].key());
      CHECK(kv.value() == original[i].value());
      CHECK(kv.create_revision() == original[i].create_revision());
      CHECK(kv.mod_revision() == original[i].mod_revision());
      CHECK(kv.version() == original[i].version());
    }
    // And it goes on from there.
    Reply<etcdserverpb::PutResponse> next = Put(solo, 0, "snap/new", "1");
    REQUIRE(next.ok());
    CHECK(next.response.header().revision() == revision + 1);
  }

  {  // a corrupted byte or a short file is data loss
    std::string corrupt = backup;
    corrupt[corrupt.size() / 2] =
        static_cast<char>(corrupt[corrupt.size() / 2] ^ 0x01);
    const fs::path bad = fs::path(scratch.path()) / "corrupt.db";
    {
      std::ofstream out(bad, std::ios::binary);
      out.write(corrupt.data(), static_cast<std::streamsize>(corrupt.size()));
    }
    const fs::path target = fs::path(scratch.path()) / "from-corrupt";
    const absl::Status status = RestoreBackup(bad, target);
    INFO(status);
    CHECK(status.code() == absl::StatusCode::kDataLoss);
    CHECK((!fs::exists(target) || fs::is_empty(target)));

    const fs::path short_file = fs::path(scratch.path()) / "short.db";
    {
      std::ofstream out(short_file, std::ios::binary);
      out.write(backup.data(), static_cast<std::streamsize>(backup.size() - 1));
    }
    const absl::Status truncated =
        RestoreBackup(short_file, fs::path(scratch.path()) / "from-short");
    INFO(truncated);
    CHECK(truncated.code() == absl::StatusCode::kDataLoss);
  }
}

// The names of this process's threads (/proc/self/task/*/comm).
std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  for (const auto& task : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    names.push_back(name);
  }
  return names;
}

// gRPC's callback API runs on threads of its own ("nexting_thread"), which
// take the sockets' polling from the call queue's thread and cost most of
// what the queue saves (docs/design.md "One completion queue"). One callback
// service, or one callback client call, anywhere in a member brings them.
TEST_CASE(
    "Members serve clients and peers on their call queue alone: no gRPC "
    "callback threads run",
    "[queue]") {
  Cluster cluster(3);
  const int leader = cluster.WaitLeader();
  REQUIRE(leader >= 0);
  const int member = cluster.RunningExcept(leader).front();
  Reply<etcdserverpb::PutResponse> seed = Put(cluster, leader, "q/seed", "s");
  REQUIRE(seed.ok());
  REQUIRE(
      WaitHub(cluster, member, "q/seed", seed.response.header().revision()));
  WatchClient watch(cluster.channel(member));
  REQUIRE(watch.Send(Create({.key = "q/a"})));
  REQUIRE(watch.Next());
  REQUIRE(PutRevision(cluster, leader, "q/a", "1") > 0);
  std::optional<WatchResponse> event = watch.Next();
  REQUIRE(event);
  CHECK(event->events_size() == 1);

  const std::vector<std::string> names = ThreadNames();
  INFO(absl::StrJoin(names, ", "));
  CHECK(std::count(names.begin(), names.end(), "dw-grpc") == 1);
  CHECK(std::none_of(names.begin(), names.end(), [](const std::string& name) {
    return name.rfind("nexting", 0) == 0;
  }));
}

}  // namespace
}  // namespace driftwood::kv
