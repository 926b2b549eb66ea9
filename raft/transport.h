// Driftwood: the interface between a Server and the network (docs/design.md
// "The transport").
//
// A Transport carries three kinds of traffic from one node to its peers:
//  * Raft messages (raft/core/message.h), in batches;
//  * server-level messages: proposals a follower forwards to the leader and
//    the leader's answers;
//  * snapshot streams: the files of a published snapshot with its manifest,
//    followed by the InstallSnapshot message that refers to them.
// Delivery is one-way and best effort: anything may be lost, and a lost
// message is not an error (Raft retries). Messages from one sender to one
// receiver arrive in the order they were sent, or not at all.
//
// The in-process implementation (raft/server/in_process_transport.h) serves
// tests and benchmarks; rpc/ implements it over gRPC.
#ifndef DRIFTWOOD_RAFT_TRANSPORT_H_
#define DRIFTWOOD_RAFT_TRANSPORT_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/message.h"
#include "raft/core/status.h"
#include "raft/core/types.h"
#include "raft/storage/snapshot_store.h"

namespace driftwood::raft {

// A follower asks the leader to append `commands` (docs/design.md "The
// runtime": forwarded proposals). `request_id` is the follower's.
struct ForwardRequest {
  uint64_t request_id = 0;
  std::vector<EntryData> commands;

  bool operator==(const ForwardRequest&) const = default;
};

// The leader's answer. OK: the commands were appended, in order, at indexes
// last.index - n + 1 through last.index, all in term last.term (n =
// commands.size()). Otherwise the code and message say why they were not
// appended (Unavailable: not the leader, or a transfer or limit;
// ResourceExhausted: a queue was full); such commands are known not to be in
// the log.
struct ForwardResponse {
  uint64_t request_id = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error;
  EntryId last;

  bool operator==(const ForwardResponse&) const = default;
};

using ServerPayload = std::variant<ForwardRequest, ForwardResponse>;

struct ServerMessage {
  NodeId from;
  NodeId to;
  ServerPayload payload;

  bool operator==(const ServerMessage&) const = default;
};

// A snapshot on its way out: the InstallSnapshot message the core produced,
// and the published snapshot it refers to. The sender keeps `dir` pinned
// (its files are not retired) until the transport reports the outcome.
struct OutgoingSnapshot {
  // Payload InstallSnapshot; message.to is the receiver.
  Message message;
  SnapshotManifest manifest;
  std::filesystem::path dir;
};

// The receiving end of one snapshot stream.
class SnapshotSink {
 public:
  // Destroying a sink without a successful Finish abandons what was
  // received.
  virtual ~SnapshotSink() = default;

  // Appends `bytes` to file `file_name` of the manifest. Files arrive in
  // manifest order, each from offset 0 without gaps. A non-OK status ends
  // the stream.
  virtual absl::Status Write(std::string_view file_name,
                             std::string_view bytes) = 0;

  // Every file was written: the receiver verifies them against the manifest
  // and publishes them durably, and only then hands the InstallSnapshot to
  // its core. Non-OK (DataLoss for files that differ from the manifest)
  // means the snapshot was not accepted.
  virtual absl::Status Finish() = 0;
};

// What a transport delivers to: the Server of the receiving node. Every call
// may come from any transport thread and must not block for long.
class TransportHandler {
 public:
  virtual ~TransportHandler() = default;

  // Raft messages addressed to this node, in the order sent.
  virtual void HandleMessages(std::vector<Message> messages) = 0;

  virtual void HandleServerMessage(ServerMessage message) = 0;

  // A peer starts streaming a snapshot (snapshot.message is the
  // InstallSnapshot that follows the files). Returns the sink to write the
  // files into, or an error to refuse the stream.
  virtual absl::StatusOr<std::unique_ptr<SnapshotSink>> ReceiveSnapshot(
      const Message& message, const SnapshotManifest& manifest) = 0;

  // A message to `peer` could not be handed to the network (the peer is
  // unknown, stopped, or its queue is full). Partitions are silent.
  virtual void ReportUnreachable(NodeId peer) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Begins delivering traffic addressed to `self` to `handler`, which must
  // stay valid until Stop returns. Called once.
  virtual absl::Status Start(NodeId self, TransportHandler* handler) = 0;

  // Stops delivering: when it returns, no handler call is running or will
  // start, and snapshot streams in progress have reported their outcome.
  // Idempotent.
  virtual void Stop() = 0;

  // Sends each message to message.to. Never blocks on the network. The
  // transport may move from the messages.
  virtual void Send(std::vector<Message>& messages) = 0;

  virtual void SendServerMessage(ServerMessage message) = 0;

  // Streams the snapshot's files and then its InstallSnapshot message to
  // snapshot.message.to. `done` runs exactly once, on any thread, when the
  // receiver accepted the snapshot (OK) or the stream failed; the files must
  // stay in place until then.
  virtual void SendSnapshot(OutgoingSnapshot snapshot,
                            std::function<void(absl::Status)> done) = 0;

  // What the transport did so far (reported in NodeStatus::transport).
  virtual TransportCounters Counters() const { return {}; }
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_TRANSPORT_H_
