// GrpcTransport (rpc/grpc_transport.h) between transports of one process,
// with recording handlers in place of Servers: delivery and order, refusals,
// unreachable peers and reconnects, and snapshot streams with resume.
#include "rpc/grpc_transport.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "raft/util/crc32c.h"
#include "tests/support/temp_dir.h"

namespace driftwood::rpc {
namespace {

using raft::LogIndex;
using raft::NodeId;
using raft::Term;

constexpr uint64_t kCluster = 0xd1f7;

// Polls on the monotonic clock, so that the clock-step test (which steps
// absl::Now() back) waits as long as the others.
bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout = absl::Seconds(20)) {
  const auto deadline =
      std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return condition();
}

// Keeps what a snapshot stream wrote, in memory.
struct ReceivedSnapshot {
  std::map<std::string, std::string> files;
  int sinks = 0;
  int finished = 0;
};

class RecordingHandler : public raft::TransportHandler {
 public:
  void HandleMessages(std::vector<raft::Message> messages) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (raft::Message& message : messages) {
      messages_.push_back(std::move(message));
    }
  }
  void HandleServerMessage(raft::ServerMessage message) override {
    std::lock_guard<std::mutex> lock(mu_);
    server_messages_.push_back(std::move(message));
  }
  absl::StatusOr<std::unique_ptr<raft::SnapshotSink>> ReceiveSnapshot(
      const raft::Message& /*message*/,
      const raft::SnapshotManifest& /*manifest*/) override {
    class Sink : public raft::SnapshotSink {
     public:
      explicit Sink(RecordingHandler& handler) : handler_(handler) {}
      absl::Status Write(std::string_view file_name,
                         std::string_view bytes) override {
        std::lock_guard<std::mutex> lock(handler_.mu_);
        handler_.snapshot_.files[std::string(file_name)].append(bytes);
        return absl::OkStatus();
      }
      absl::Status Finish() override {
        std::lock_guard<std::mutex> lock(handler_.mu_);
        ++handler_.snapshot_.finished;
        return absl::OkStatus();
      }

     private:
      RecordingHandler& handler_;
    };
    std::lock_guard<std::mutex> lock(mu_);
    ++snapshot_.sinks;
    snapshot_.files.clear();
    return std::make_unique<Sink>(*this);
  }
  void ReportUnreachable(NodeId peer) override {
    std::lock_guard<std::mutex> lock(mu_);
    unreachable_.push_back(peer);
  }

  std::vector<raft::Message> messages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }
  std::vector<raft::ServerMessage> server_messages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return server_messages_;
  }
  size_t unreachable_reports(NodeId peer) const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<size_t>(
        std::count(unreachable_.begin(), unreachable_.end(), peer));
  }
  ReceivedSnapshot snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return snapshot_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<raft::Message> messages_;               // guarded by mu_
  std::vector<raft::ServerMessage> server_messages_;  // guarded by mu_
  std::vector<NodeId> unreachable_;                   // guarded by mu_
  ReceivedSnapshot snapshot_;                         // guarded by mu_
};

raft::Message Append(NodeId from, NodeId to, uint64_t index) {
  raft::Message message;
  message.from = from;
  message.to = to;
  message.term = Term(3);
  message.payload = raft::AppendEntries{
      LogIndex(index - 1),
      Term(3),
      {raft::Entry{Term(3), LogIndex(index), raft::EntryType::kNormal,
                   raft::EntryData(absl::StrCat("entry ", index))}},
      LogIndex(index - 1)};
  return message;
}

GrpcTransportOptions Options(uint64_t cluster = kCluster) {
  GrpcTransportOptions options;
  options.cluster_id = cluster;
  options.reconnect_min = absl::Milliseconds(20);
  options.reconnect_max = absl::Milliseconds(200);
  options.unreachable_interval = absl::Milliseconds(10);
  return options;
}

std::string Address(const GrpcTransport& transport) {
  return absl::StrCat("127.0.0.1:", transport.port());
}

// Two started transports, nodes 1 and 2, that know each other.
struct Pair {
  explicit Pair(GrpcTransportOptions options = Options()) {
    auto first = GrpcTransport::Create(options);
    auto second = GrpcTransport::Create(options);
    REQUIRE(first.ok());
    REQUIRE(second.ok());
    a = *std::move(first);
    b = *std::move(second);
    a->SetPeerAddress(NodeId(2), Address(*b));
    b->SetPeerAddress(NodeId(1), Address(*a));
    REQUIRE(a->Start(NodeId(1), &a_handler).ok());
    REQUIRE(b->Start(NodeId(2), &b_handler).ok());
  }
  // Stops node 2's transport; returns the port it listened on.
  int StopSecond() {
    const int port = b->port();
    b->Stop();
    b.reset();
    return port;
  }
  // Node 2 again on `port`, on a new transport delivering to `handler`.
  std::unique_ptr<GrpcTransport> RestartSecond(int port,
                                               RecordingHandler& handler) {
    GrpcTransportOptions options = Options();
    options.listen_address = absl::StrCat("127.0.0.1:", port);
    auto restarted = GrpcTransport::Create(options);
    REQUIRE(restarted.ok());
    (*restarted)->SetPeerAddress(NodeId(1), Address(*a));
    REQUIRE((*restarted)->Start(NodeId(2), &handler).ok());
    return *std::move(restarted);
  }

  RecordingHandler a_handler, b_handler;
  std::unique_ptr<GrpcTransport> a, b;
};

TEST_CASE("grpc transport: messages arrive in order, in batches",
          "[rpc][transport]") {
  Pair pair;
  std::vector<raft::Message> sent;
  for (uint64_t i = 1; i <= 2000; ++i) {
    std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), i)};
    sent.push_back(one[0]);
    pair.a->Send(one);
    if (i % 500 == 0) {
      pair.a->SendServerMessage(raft::ServerMessage{
          NodeId(1), NodeId(2),
          raft::ForwardRequest{.request_id = i,
                               .commands = {raft::EntryData("put")}}});
    }
  }
  REQUIRE(Eventually([&] {
    return pair.b_handler.messages().size() == sent.size() &&
           pair.b_handler.server_messages().size() == 4;
  }));
  CHECK(pair.b_handler.messages() == sent);
  std::vector<uint64_t> request_ids;
  for (const raft::ServerMessage& message : pair.b_handler.server_messages()) {
    request_ids.push_back(
        std::get<raft::ForwardRequest>(message.payload).request_id);
  }
  CHECK(request_ids == std::vector<uint64_t>{500, 1000, 1500, 2000});
  const raft::TransportCounters counters = pair.a->Counters();
  CHECK(counters.messages_sent == 2004);
  CHECK(counters.messages_dropped == 0);
  CHECK(counters.streams_opened == 1);
}

TEST_CASE(
    "grpc transport: a transport of another cluster or an unknown node is "
    "refused and counted, and nothing of it is delivered",
    "[rpc][transport]") {
  Pair pair;
  RecordingHandler stranger_handler;
  const bool other_cluster = GENERATE(true, false);
  auto stranger =
      GrpcTransport::Create(Options(other_cluster ? kCluster + 1 : kCluster));
  REQUIRE(stranger.ok());
  // As node 3 (unknown to node 2) or as node 1 of another cluster.
  const NodeId stranger_id = other_cluster ? NodeId(1) : NodeId(3);
  (*stranger)->SetPeerAddress(NodeId(2), Address(*pair.b));
  REQUIRE((*stranger)->Start(stranger_id, &stranger_handler).ok());
  REQUIRE(Eventually([&] {
    std::vector<raft::Message> one = {Append(stranger_id, NodeId(2), 1)};
    (*stranger)->Send(one);
    const raft::TransportCounters counters = pair.b->Counters();
    return (other_cluster ? counters.refused_cluster
                          : counters.refused_sender) >= 3 &&
           (*stranger)->Counters().stream_failures >= 3;
  }));
  CHECK(pair.b_handler.messages().empty());
  CHECK(stranger_handler.unreachable_reports(NodeId(2)) > 0);
  // The pair still talks.
  std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 7)};
  pair.a->Send(one);
  CHECK(Eventually([&] { return pair.b_handler.messages().size() == 1; }));
}

TEST_CASE(
    "grpc transport: messages to a stopped peer are dropped and it is "
    "reported unreachable, and delivery resumes when it is back",
    "[rpc][transport]") {
  Pair pair;
  const int port = pair.StopSecond();
  REQUIRE(Eventually([&] {
    std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 1)};
    pair.a->Send(one);
    return pair.a_handler.unreachable_reports(NodeId(2)) >= 2;
  }));
  CHECK(pair.a->Counters().messages_dropped > 0);

  RecordingHandler handler;
  std::unique_ptr<GrpcTransport> restarted = pair.RestartSecond(port, handler);
  CHECK(Eventually([&] {
    std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 2)};
    pair.a->Send(one);
    return !handler.messages().empty();
  }));
}

TEST_CASE(
    "grpc transport: a forwarded proposal sent while its peer is down is "
    "delivered once the peer is back",
    "[rpc][transport]") {
  Pair pair;
  const int port = pair.StopSecond();
  // Let the link notice and back off.
  REQUIRE(Eventually([&] {
    std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 1)};
    pair.a->Send(one);
    return pair.a->Counters().stream_failures >= 1;
  }));
  pair.a->SendServerMessage(raft::ServerMessage{
      NodeId(1), NodeId(2),
      raft::ForwardRequest{.request_id = 42,
                           .commands = {raft::EntryData("put")}}});
  RecordingHandler handler;
  std::unique_ptr<GrpcTransport> restarted = pair.RestartSecond(port, handler);
  REQUIRE(Eventually([&] { return handler.server_messages().size() == 1; }));
  CHECK(std::get<raft::ForwardRequest>(handler.server_messages()[0].payload)
            .request_id == 42);
}

TEST_CASE("grpc transport: options are validated", "[rpc][transport]") {
  GrpcTransportOptions options = Options();
  options.cluster_id = 0;
  CHECK(GrpcTransport::Create(options).status().code() ==
        absl::StatusCode::kInvalidArgument);
  options = Options();
  options.tls.cert_file = "/nonexistent/cert.pem";
  CHECK_THAT(std::string(GrpcTransport::Create(options).status().message()),
             Catch::Contains("cert_file, key_file and ca_file together"));
  options.tls.key_file = "/nonexistent/key.pem";
  options.tls.ca_file = "/nonexistent/ca.pem";
  absl::Status missing = GrpcTransport::Create(options).status();
  CHECK(missing.code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(missing.message()),
             Catch::Contains("/nonexistent/cert.pem"));
  auto first = GrpcTransport::Create(Options());
  REQUIRE(first.ok());
  options = Options();
  options.listen_address = Address(**first);
  absl::Status taken = GrpcTransport::Create(options).status();
  CHECK(taken.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(taken.message()), Catch::Contains("cannot listen"));
}

// A snapshot of three files (one empty) in a temporary folder.
struct SnapshotFiles {
  SnapshotFiles() {
    const std::vector<std::pair<std::string, size_t>> files = {
        {"a.data", size_t{3} << 20},
        {"b.empty", 0},
        {"c.data", size_t{1} << 20}};
    manifest.meta =
        raft::SnapshotMeta{LogIndex(50), Term(3),
                           raft::Configuration{{NodeId(1), NodeId(2)}, {}, {}}};
    for (const auto& [name, size] : files) {
      std::string bytes(size, '\0');
      for (size_t i = 0; i < size; ++i) {
        bytes[i] =
            static_cast<char>((i * 131 + static_cast<size_t>(name[0])) & 0xff);
      }
      std::ofstream(std::filesystem::path(dir.path()) / name, std::ios::binary)
          << bytes;
      manifest.files.push_back({name, size, raft::Crc32c(bytes)});
      manifest.total_bytes += size;
      contents[name] = std::move(bytes);
    }
  }
  raft::OutgoingSnapshot Outgoing(NodeId from, NodeId to) const {
    raft::Message message;
    message.from = from;
    message.to = to;
    message.term = Term(3);
    message.payload = raft::InstallSnapshot{manifest.meta};
    return raft::OutgoingSnapshot{message, manifest, dir.path()};
  }

  testing::TempDir dir;
  raft::SnapshotManifest manifest;
  std::map<std::string, std::string> contents;
};

struct DoneLatch {
  std::function<void(absl::Status)> Callback() {
    return [this](absl::Status status) {
      std::lock_guard<std::mutex> lock(mu);
      result = std::move(status);
      set.notify_all();
    };
  }
  std::optional<absl::Status> Wait(absl::Duration timeout = absl::Seconds(30)) {
    std::unique_lock<std::mutex> lock(mu);
    set.wait_for(lock, absl::ToChronoMilliseconds(timeout),
                 [this] { return result.has_value(); });
    return result;
  }
  std::mutex mu;
  std::condition_variable set;
  std::optional<absl::Status> result;
};

TEST_CASE("grpc transport: a snapshot streams its files in chunks",
          "[rpc][transport]") {
  GrpcTransportOptions options = Options();
  options.snapshot_chunk_bytes = 256 << 10;
  Pair pair(options);
  SnapshotFiles snapshot;
  DoneLatch done;
  pair.a->SendSnapshot(snapshot.Outgoing(NodeId(1), NodeId(2)),
                       done.Callback());
  std::optional<absl::Status> status = done.Wait();
  REQUIRE(status.has_value());
  REQUIRE(status->ok());
  const ReceivedSnapshot received = pair.b_handler.snapshot();
  CHECK(received.sinks == 1);
  CHECK(received.finished == 1);
  CHECK(received.files.at("a.data") == snapshot.contents.at("a.data"));
  CHECK(received.files.at("c.data") == snapshot.contents.at("c.data"));
  CHECK_FALSE(received.files.contains("b.empty"));
  CHECK(pair.a->Counters().snapshot_bytes_sent ==
        snapshot.manifest.total_bytes);
  CHECK(pair.b->Counters().snapshot_bytes_received ==
        snapshot.manifest.total_bytes);
}

TEST_CASE(
    "grpc transport: a snapshot stream broken midway resumes where the "
    "receiver stopped",
    "[rpc][transport]") {
  GrpcTransportOptions options = Options();
  options.snapshot_chunk_bytes = 64 << 10;
  // 4 MiB at 8 MiB/s: the sender is stopped midway.
  options.snapshot_bytes_per_second = 8 << 20;
  Pair pair(options);
  SnapshotFiles snapshot;
  DoneLatch first;
  pair.a->SendSnapshot(snapshot.Outgoing(NodeId(1), NodeId(2)),
                       first.Callback());
  REQUIRE(Eventually(
      [&] { return pair.b->Counters().snapshot_bytes_received > (1 << 20); }));
  pair.a->Stop();
  std::optional<absl::Status> stopped = first.Wait();
  REQUIRE(stopped.has_value());
  CHECK(stopped->code() == absl::StatusCode::kCancelled);
  const uint64_t before = pair.b->Counters().snapshot_bytes_received;
  REQUIRE(before < snapshot.manifest.total_bytes);

  // Node 1 again, on a new transport: the same snapshot continues.
  options.snapshot_bytes_per_second = 0;
  auto restarted = GrpcTransport::Create(options);
  REQUIRE(restarted.ok());
  RecordingHandler handler;
  (*restarted)->SetPeerAddress(NodeId(2), Address(*pair.b));
  REQUIRE((*restarted)->Start(NodeId(1), &handler).ok());
  DoneLatch second;
  (*restarted)
      ->SendSnapshot(snapshot.Outgoing(NodeId(1), NodeId(2)),
                     second.Callback());
  std::optional<absl::Status> status = second.Wait();
  REQUIRE(status.has_value());
  REQUIRE(status->ok());
  const ReceivedSnapshot received = pair.b_handler.snapshot();
  CHECK(received.sinks == 1);
  CHECK(received.finished == 1);
  CHECK(received.files.at("a.data") == snapshot.contents.at("a.data"));
  CHECK(received.files.at("c.data") == snapshot.contents.at("c.data"));
  CHECK(pair.b->Counters().snapshot_resumes == 1);
  // Every byte crossed once.
  CHECK(pair.b->Counters().snapshot_bytes_received ==
        snapshot.manifest.total_bytes);
  CHECK((*restarted)->Counters().snapshot_bytes_sent ==
        snapshot.manifest.total_bytes - before);
}

TEST_CASE("grpc transport: one snapshot stream per follower at a time",
          "[rpc][transport]") {
  GrpcTransportOptions options = Options();
  options.snapshot_bytes_per_second = 4 << 20;
  Pair pair(options);
  SnapshotFiles snapshot;
  DoneLatch first, second;
  pair.a->SendSnapshot(snapshot.Outgoing(NodeId(1), NodeId(2)),
                       first.Callback());
  pair.a->SendSnapshot(snapshot.Outgoing(NodeId(1), NodeId(2)),
                       second.Callback());
  std::optional<absl::Status> refused = second.Wait(absl::Seconds(1));
  REQUIRE(refused.has_value());
  CHECK(refused->code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(refused->message()),
             Catch::Contains("already running"));
  std::optional<absl::Status> status = first.Wait();
  REQUIRE(status.has_value());
  CHECK(status->ok());
}

// Runs only under libfaketime (the ctest entry grpc_transport_clock_step
// preloads it with FAKETIME_TIMESTAMP_FILE), which lets the test step this
// process's wall clock. Found by jepsen/'s clock fault: the transport kept its
// reconnect backoff on the wall clock, so a step back while a link was
// backing off postponed the reconnect by the step's length.
TEST_CASE(
    "grpc transport: a wall-clock step back while a link backs off does not "
    "postpone its reconnect",
    "[.clock-step]") {
  const char* clock_file = std::getenv("FAKETIME_TIMESTAMP_FILE");
  REQUIRE(clock_file != nullptr);
  const auto set_offset = [&](const char* offset) {
    std::ofstream out(clock_file, std::ios::trunc);
    out << offset << "\n";
  };
  set_offset("+0s");
  GrpcTransportOptions options = Options();
  options.reconnect_max = absl::Seconds(1);
  Pair pair(options);
  const int port = pair.StopSecond();
  REQUIRE(Eventually([&] {
    std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 1)};
    pair.a->Send(one);
    return pair.a->Counters().stream_failures >= 4;
  }));
  set_offset("-60s");
  RecordingHandler handler;
  std::unique_ptr<GrpcTransport> restarted = pair.RestartSecond(port, handler);
  // The backoff is at most a second; a wall-clock reconnect time would wait
  // out the whole minute.
  const bool delivered = Eventually(
      [&] {
        std::vector<raft::Message> one = {Append(NodeId(1), NodeId(2), 2)};
        pair.a->Send(one);
        return !handler.messages().empty();
      },
      absl::Seconds(10));
  set_offset("+0s");
  CHECK(delivered);
}

}  // namespace
}  // namespace driftwood::rpc
