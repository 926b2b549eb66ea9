// Driftwood: the snapshot writer, the step function that moves snapshot
// files (docs/design.md "The runtime": snapshots wired end to end).
//
// SnapshotWriter performs SnapshotJobs in the background, away from the raft
// and apply loops:
//  * WriteSnapshotJob: writes a captured image into the snapshot store and
//    publishes it durably (ReplicaState::WriteSnapshot), then tells the raft
//    loop, which records it in the log store and compacts behind it;
//  * SendSnapshotJob: pins the published snapshot an InstallSnapshot refers
//    to and hands its files to the transport; the pin is released, and the
//    core told the outcome (Node::ReportSnapshot), when the stream ends;
//  * RetireSnapshotsJob: retires the snapshots the compacted log no longer
//    needs (pinned ones wait for their stream to end).
//
// SnapshotReceiver is the receiving end of a stream: the files go into a
// pending folder of the snapshot store, FinishReceive verifies them against
// the sender's manifest and publishes them, and only then is the
// InstallSnapshot message delivered to the core.
//
// Not thread-safe: one thread (or the simulation's scheduler) calls Handle.
#ifndef DRIFTWOOD_RAFT_SERVER_SNAPSHOT_WRITER_H_
#define DRIFTWOOD_RAFT_SERVER_SNAPSHOT_WRITER_H_

#include <atomic>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/server/replica_state.h"
#include "raft/server/runtime_types.h"
#include "raft/transport.h"

namespace driftwood::raft {

class SnapshotWriter {
 public:
  // `replica` and `transport` must outlive the writer. `raft` queues an event
  // for the raft loop; it may be called from transport threads.
  SnapshotWriter(NodeId self, ReplicaState& replica, Transport& transport,
                 std::function<void(ControlEvent)> raft,
                 AtomicCounters& counters,
                 std::atomic<bool>& snapshot_in_progress);

  // Performs one job. Failures are logged and reported, never fatal: a
  // snapshot that could not be written is retried when next due, a stream
  // that failed is retried by the leader.
  void Handle(SnapshotJob job);

 private:
  void Write(WriteSnapshotJob& job);
  void Send(SendSnapshotJob& job);

  NodeId self_;
  ReplicaState& replica_;
  Transport& transport_;
  std::function<void(ControlEvent)> raft_;
  AtomicCounters& counters_;
  std::atomic<bool>& snapshot_in_progress_;
};

class SnapshotReceiver : public SnapshotSink {
 public:
  // Starts receiving the snapshot `message` (an InstallSnapshot) refers to;
  // `deliver` hands the message to the raft loop once the files are
  // verified and published. FailedPrecondition when the manifest does not
  // describe the message's snapshot or names an unsafe file.
  static absl::StatusOr<std::unique_ptr<SnapshotReceiver>> Begin(
      ReplicaState& replica, const Message& message,
      const SnapshotManifest& manifest, std::function<void(Message)> deliver,
      AtomicCounters& counters);
  ~SnapshotReceiver() override;

  absl::Status Write(std::string_view file_name,
                     std::string_view bytes) override;
  absl::Status Finish() override;

 private:
  SnapshotReceiver(ReplicaState& replica, Message message,
                   SnapshotManifest manifest,
                   std::optional<PendingSnapshot> pending,
                   std::function<void(Message)> deliver,
                   AtomicCounters& counters);
  absl::Status CloseFile();

  ReplicaState& replica_;
  Message message_;
  SnapshotManifest manifest_;
  // Empty when the snapshot is already published here: the files are
  // skipped and the message delivered.
  std::optional<PendingSnapshot> pending_;
  std::function<void(Message)> deliver_;
  AtomicCounters& counters_;
  // The manifest file being written, its handle and the bytes written.
  size_t file_ = 0;
  std::FILE* out_ = nullptr;
  uint64_t written_ = 0;
  bool finished_ = false;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_SNAPSHOT_WRITER_H_
