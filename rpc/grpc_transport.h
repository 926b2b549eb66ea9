// Driftwood: GrpcTransport, the raft::Transport between processes
// (docs/design.md "The transport"), over the gRPC peer service of
// rpc/proto/peer.proto.
//
//   rpc::GrpcTransportOptions options;
//   options.listen_address = "0.0.0.0:7001";
//   options.cluster_id = raft::ClusterIdFor(members, token);
//   options.peers = {{raft::NodeId(2), "10.0.0.2:7001"}, ...};
//   auto transport = rpc::GrpcTransport::Create(options);   // listens
//   auto server = raft::Server::Start(server_options, sm, **transport);
//
// Outbound. Each peer has one long-lived client stream (Peer.Send) and a
// bounded queue. Send queues and returns; the stream writes whatever is
// queued as one Envelope per write (at most max_batch_bytes of entries), so
// messages sent while a write is on the wire go out together. When the queue
// is full, or the stream breaks, queued Raft messages are dropped and the
// Server is told ReportUnreachable(peer) (at most once per
// unreachable_interval per peer); while the link backs off after a failure,
// Raft messages are dropped the same way. Server messages (forwarded
// proposals and answers, which nobody resends) stay queued for the next
// stream, within the queue's bound; only those in a write the broken stream
// had in flight may be lost. A broken stream is reopened after an exponential
// backoff with jitter (reconnect_min doubling up to reconnect_max, each wait
// drawn in [0.5, 1] of the current step). Raft and forwarded-proposal messages
// to one peer travel in the same stream and arrive in order, Raft messages of a
// batch before its server messages.
//
// Inbound. An inbound stream costs no thread: each Envelope is handed to the
// TransportHandler as it arrives, on the thread of the process's call queue
// (rpc/call_queue.h), on which every call of the transport completes. Every
// envelope is checked before anything of it reaches the handler: protocol
// version, cluster id, receiver (this node), sender (a known peer), and every
// message (rpc/codec.h). A refused envelope ends its stream with an error
// status that names the reason (FAILED_PRECONDITION for another cluster,
// PERMISSION_DENIED for an unknown sender, INVALID_ARGUMENT for a malformed
// message or another protocol version), is counted in TransportCounters
// (NodeStatus::transport), and is logged at most once per log_interval per
// reason, with the count of those not logged.
//
// Snapshots (Peer.InstallSnapshot). SendSnapshot streams the manifest and
// then each file in chunks of snapshot_chunk_bytes, on a thread of its own;
// gRPC's flow control paces it and snapshot_bytes_per_second (when set)
// limits it. One stream runs per follower at a time (a second SendSnapshot
// to the same follower fails at once with Unavailable). The receiver answers
// the manifest with where to start: a stream broken midway leaves the
// receiver holding what it got, and the sender's next attempt (up to
// snapshot_attempts, with backoff) or a later SendSnapshot of the same
// snapshot continues at the first byte the receiver lacks, not from zero. A
// partial receive is kept until its sender streams another snapshot, or
// until partial_snapshot_ttl passes without progress, or Stop. After the
// last byte the receiver calls SnapshotSink::Finish (which checks every file
// against the manifest) and returns its status; that status is `done`'s.
//
// Security. With tls.cert_file set the server and the client channels use
// TLS: each side presents its certificate and verifies the other's against
// tls.ca_file (mutual TLS); a peer whose certificate that CA did not sign
// cannot connect. Without tls, traffic is plaintext (loopback tests and
// trusted networks only).
//
// Thread safety: every method may be called from any thread, including from
// handler calls and `done` callbacks, except Stop and the destructor.
#ifndef DRIFTWOOD_RPC_GRPC_TRANSPORT_H_
#define DRIFTWOOD_RPC_GRPC_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "raft/core/status.h"
#include "raft/core/types.h"
#include "raft/transport.h"

namespace driftwood::rpc {

// PEM files for TLS. All three set: mutual TLS. All empty: plaintext.
struct TlsFiles {
  // This node's certificate chain and private key.
  std::string cert_file;
  std::string key_file;
  // The cluster CA: peers' certificates must chain to it.
  std::string ca_file;
  // The name peers' server certificates are checked against; empty: the
  // host part of the peer's address. (Certificates for a test cluster on
  // 127.0.0.1 may name "localhost" instead.)
  std::string server_name_override;

  bool enabled() const { return !cert_file.empty(); }
};

struct GrpcTransportOptions {
  // host:port to listen on; port 0 lets the OS choose (see
  // GrpcTransport::port()).
  std::string listen_address = "127.0.0.1:0";
  // The cluster this node belongs to (raft::ClusterIdFor); envelopes of
  // another cluster are refused. Must equal the Server's.
  uint64_t cluster_id = 0;
  // host:port of every other member. Messages to a node not listed are
  // dropped and reported unreachable; envelopes from one are refused.
  std::map<raft::NodeId, std::string> peers;
  TlsFiles tls;

  // The most messages queued for one peer; more are dropped and the peer is
  // reported unreachable.
  size_t max_queued_messages = 4096;
  // The most entry bytes in one outbound Envelope (one stream write); an
  // AppendEntries larger than this goes alone.
  size_t max_batch_bytes = 4 << 20;
  // gRPC's limit on one message, both ways; gRPC's own default (4 MiB)
  // would refuse a large AppendEntries. Must exceed the Server's
  // max_message_bytes and max_request_bytes.
  size_t max_grpc_message_bytes = 64 << 20;
  // HTTP/2 keepalive pings on idle connections: sent after keepalive_time
  // without traffic; the connection is closed when one is not answered
  // within keepalive_timeout.
  absl::Duration keepalive_time = absl::Seconds(10);
  absl::Duration keepalive_timeout = absl::Seconds(5);
  // Reconnect backoff (see the file comment). gRPC's own connection backoff
  // is set to the same bounds.
  absl::Duration reconnect_min = absl::Milliseconds(50);
  absl::Duration reconnect_max = absl::Seconds(2);
  // The least time between two ReportUnreachable calls for one peer.
  absl::Duration unreachable_interval = absl::Milliseconds(100);
  // The least time between two log lines about refused envelopes or broken
  // streams of one kind.
  absl::Duration log_interval = absl::Seconds(10);

  // Snapshot streams.
  size_t snapshot_chunk_bytes = 1 << 20;
  // 0: unlimited.
  uint64_t snapshot_bytes_per_second = 0;
  // Attempts of one SendSnapshot before `done` gets the last error.
  int snapshot_attempts = 5;
  absl::Duration partial_snapshot_ttl = absl::Minutes(2);
  // Seeds the jitter of reconnect waits.
  uint64_t seed = 1;
};

absl::Status ValidateGrpcTransportOptions(const GrpcTransportOptions& options);

class GrpcTransport : public raft::Transport {
 public:
  // Validates the options, reads the TLS files and starts listening. Until
  // Start, inbound calls are refused with UNAVAILABLE. InvalidArgument for
  // bad options; NotFound for a TLS file that cannot be read; Unavailable
  // when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcTransport>> Create(
      const GrpcTransportOptions& options);

  // Stops (Stop()).
  ~GrpcTransport() override;

  GrpcTransport(const GrpcTransport&) = delete;
  GrpcTransport& operator=(const GrpcTransport&) = delete;

  // The port this transport listens on.
  int port() const;

  // Adds or changes a peer's address (membership changes, tests with ports
  // chosen by the OS). A changed address closes the old stream.
  void SetPeerAddress(raft::NodeId peer, std::string address);

  // raft::Transport.
  absl::Status Start(raft::NodeId self,
                     raft::TransportHandler* handler) override;
  void Stop() override;
  void Send(std::vector<raft::Message>& messages) override;
  void SendServerMessage(raft::ServerMessage message) override;
  void SendSnapshot(raft::OutgoingSnapshot snapshot,
                    std::function<void(absl::Status)> done) override;
  raft::TransportCounters Counters() const override;

 private:
  class Impl;
  explicit GrpcTransport(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace driftwood::rpc

#endif  // DRIFTWOOD_RPC_GRPC_TRANSPORT_H_
