#include "rpc/grpc_transport.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <limits>
#include <list>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "raft/util/thread_name.h"
#include "rpc/call_queue.h"
#include "rpc/codec.h"
#include "rpc/proto/peer.grpc.pb.h"

namespace driftwood::rpc {

namespace {

using raft::NodeId;

int ClampToInt(uint64_t value) {
  return static_cast<int>(
      std::min<uint64_t>(value, std::numeric_limits<int>::max()));
}

int Millis(absl::Duration duration) {
  return ClampToInt(static_cast<uint64_t>(
      std::max<int64_t>(0, absl::ToInt64Milliseconds(duration))));
}

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// Transport failures a new attempt may get past (a broken stream, a receiver
// still closing the previous one); refusals and the receiver's verdict are
// final.
bool Retryable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDeadlineExceeded:
      return true;
    default:
      return false;
  }
}

// Every time the transport keeps (reconnect backoff, unreachable reports,
// log rate limits, snapshot pacing and expiry) is on the monotonic clock, so
// a step of the wall clock (NTP, an operator) neither postpones a reconnect
// by the step's length nor expires anything early. Only differences of these
// values mean anything.
absl::Time MonotonicNow() {
  return absl::UnixEpoch() +
         absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the TLS ", what, " file '", path, "'"));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Logs one line per kind of event per interval at most, with the number of
// events not logged since the last line.
class LogLimiter {
 public:
  explicit LogLimiter(absl::Duration interval) : interval_(interval) {}

  // Whether to log an event of `kind` now; `*suppressed` is the number of
  // events of that kind not logged since the last one that was.
  bool Allow(const std::string& kind, uint64_t* suppressed) {
    std::lock_guard<std::mutex> lock(mu_);
    Kind& state = kinds_[kind];
    const absl::Time now = MonotonicNow();
    if (state.logged && now - state.last < interval_) {
      ++state.suppressed;
      return false;
    }
    state.logged = true;
    state.last = now;
    *suppressed = state.suppressed;
    state.suppressed = 0;
    return true;
  }

 private:
  struct Kind {
    bool logged = false;
    absl::Time last;
    uint64_t suppressed = 0;
  };
  const absl::Duration interval_;
  std::mutex mu_;
  std::map<std::string, Kind> kinds_;  // guarded by mu_
};

size_t EntryBytes(const raft::Message& message) {
  const auto* append = std::get_if<raft::AppendEntries>(&message.payload);
  if (append == nullptr) return 0;
  size_t bytes = 0;
  for (const raft::Entry& entry : append->entries) bytes += entry.data.size();
  return bytes;
}

struct AtomicTransportCounters {
  std::atomic<uint64_t> messages_sent{0};
  std::atomic<uint64_t> messages_dropped{0};
  std::atomic<uint64_t> streams_opened{0};
  std::atomic<uint64_t> stream_failures{0};
  std::atomic<uint64_t> refused_cluster{0};
  std::atomic<uint64_t> refused_sender{0};
  std::atomic<uint64_t> refused_malformed{0};
  std::atomic<uint64_t> snapshot_bytes_sent{0};
  std::atomic<uint64_t> snapshot_bytes_received{0};
  std::atomic<uint64_t> snapshot_resumes{0};

  raft::TransportCounters Load() const {
    constexpr auto kRelaxed = std::memory_order_relaxed;
    return raft::TransportCounters{
        .messages_sent = messages_sent.load(kRelaxed),
        .messages_dropped = messages_dropped.load(kRelaxed),
        .streams_opened = streams_opened.load(kRelaxed),
        .stream_failures = stream_failures.load(kRelaxed),
        .refused_cluster = refused_cluster.load(kRelaxed),
        .refused_sender = refused_sender.load(kRelaxed),
        .refused_malformed = refused_malformed.load(kRelaxed),
        .snapshot_bytes_sent = snapshot_bytes_sent.load(kRelaxed),
        .snapshot_bytes_received = snapshot_bytes_received.load(kRelaxed),
        .snapshot_resumes = snapshot_resumes.load(kRelaxed),
    };
  }
};

void Add(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.fetch_add(n, std::memory_order_relaxed);
}

}  // namespace

absl::Status ValidateGrpcTransportOptions(const GrpcTransportOptions& options) {
  const auto invalid = [](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("GrpcTransportOptions: ", what));
  };
  if (options.listen_address.empty()) return invalid("listen_address is empty");
  if (options.cluster_id == 0) return invalid("cluster_id is 0");
  for (const auto& [peer, address] : options.peers) {
    if (peer == raft::kNoNode) return invalid("a peer has id 0");
    if (address.empty()) {
      return invalid(absl::StrCat("peer ", peer.value(), " has no address"));
    }
  }
  const bool any_tls = !options.tls.cert_file.empty() ||
                       !options.tls.key_file.empty() ||
                       !options.tls.ca_file.empty();
  if (any_tls &&
      (options.tls.cert_file.empty() || options.tls.key_file.empty() ||
       options.tls.ca_file.empty())) {
    return invalid("tls needs cert_file, key_file and ca_file together");
  }
  if (options.max_queued_messages == 0) {
    return invalid("max_queued_messages is 0");
  }
  if (options.max_batch_bytes == 0) return invalid("max_batch_bytes is 0");
  if (options.max_grpc_message_bytes < (1u << 20) ||
      options.max_grpc_message_bytes >
          static_cast<size_t>(std::numeric_limits<int>::max())) {
    return invalid("max_grpc_message_bytes must be in [1 MiB, 2 GiB)");
  }
  if (options.snapshot_chunk_bytes == 0 ||
      options.snapshot_chunk_bytes + 4096 > options.max_grpc_message_bytes) {
    return invalid(
        "snapshot_chunk_bytes must be positive and fit in a gRPC message");
  }
  if (options.keepalive_time <= absl::ZeroDuration() ||
      options.keepalive_timeout <= absl::ZeroDuration()) {
    return invalid("keepalive_time and keepalive_timeout must be positive");
  }
  if (options.reconnect_min <= absl::ZeroDuration() ||
      options.reconnect_max < options.reconnect_min) {
    return invalid("reconnect_min must be positive and at most reconnect_max");
  }
  if (options.snapshot_attempts < 1) return invalid("snapshot_attempts < 1");
  return absl::OkStatus();
}

// Send is a raw method: the envelope's bytes are parsed here, so bytes that
// do not parse are refused like any other bad envelope instead of looking
// like the end of the stream.
using PeerService = Peer::WithRawMethod_Send<
    Peer::WithAsyncMethod_InstallSnapshot<Peer::Service>>;

class GrpcTransport::Impl final {
 public:
  explicit Impl(const GrpcTransportOptions& options)
      : options_(options),
        log_(options.log_interval),
        queue_(rpc::CallQueue::Shared()),
        random_(options.seed) {}

  ~Impl() { Stop(); }

  absl::Status Listen();
  absl::Status Start(NodeId self, raft::TransportHandler* handler);
  void Stop();
  void SetPeerAddress(NodeId peer, std::string address);
  void Send(std::vector<raft::Message>& messages);
  void SendServerMessage(raft::ServerMessage message);
  void SendSnapshot(raft::OutgoingSnapshot snapshot,
                    std::function<void(absl::Status)> done);
  raft::TransportCounters Counters() const { return counters_.Load(); }
  int port() const { return port_; }

 private:
  class PeerLink;
  class OutboundStream;
  class InboundStream;
  struct PartialReceive;
  struct SnapshotSend;

  // The handler, while the transport is started. Every handler call runs
  // between AcquireHandler (non-null) and ReleaseHandler, so Stop can wait
  // for the calls in progress.
  raft::TransportHandler* AcquireHandler();
  void ReleaseHandler();
  template <typename Fn>
  bool WithHandler(Fn&& fn) {
    raft::TransportHandler* handler = AcquireHandler();
    if (handler == nullptr) return false;
    fn(*handler);
    ReleaseHandler();
    return true;
  }

  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;
  std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) const;
  std::shared_ptr<PeerLink> Link(NodeId peer);

  // Checks an inbound message's routing against this node: the code and
  // message to refuse it with, counted and logged, or OK.
  grpc::Status CheckRouting(uint32_t protocol_version, uint64_t cluster_id,
                            uint64_t from, uint64_t to, absl::string_view what);
  grpc::Status Refuse(std::atomic<uint64_t>& counter, const std::string& kind,
                      grpc::StatusCode code, std::string message);
  // Takes the envelope by value: its entry payloads move to the messages.
  grpc::Status Deliver(Envelope envelope);
  grpc::Status DeliverBytes(grpc::ByteBuffer& bytes);

  // Snapshots.
  void RunSnapshotSend(std::shared_ptr<SnapshotSend> send);
  absl::Status SendSnapshotOnce(SnapshotSend& send);
  bool WaitUnlessStopping(absl::Duration duration);
  grpc::Status ReceiveSnapshotStream(
      rpc::BlockingServerStream<SnapshotChunkProto, SnapshotReplyProto>*
          stream);

  void MaintenanceLoop();
  void WakeMaintenance();
  absl::Duration Jitter(absl::Duration step);

  void LogWarning(const std::string& kind, const std::string& message);

  const GrpcTransportOptions options_;
  AtomicTransportCounters counters_;
  LogLimiter log_;
  std::string tls_cert_, tls_key_, tls_ca_;
  // Every call of this transport, inbound and outbound, completes on
  // queue_ (rpc/call_queue.h).
  std::shared_ptr<CallQueue> queue_;
  PeerService service_;
  std::unique_ptr<QueueServer> server_;
  int port_ = 0;

  std::mutex handler_mu_;
  std::condition_variable handler_idle_;
  NodeId self_;                                // guarded by handler_mu_
  raft::TransportHandler* handler_ = nullptr;  // guarded by handler_mu_
  int handler_calls_ = 0;                      // guarded by handler_mu_
  bool started_ = false;                       // guarded by handler_mu_
  bool stopped_ = false;                       // guarded by handler_mu_
  std::atomic<bool> stopping_{false};
  // The node id once started, for threads that do not take handler_mu_.
  std::atomic<uint64_t> self_id_{0};

  std::mutex links_mu_;
  std::map<NodeId, std::shared_ptr<PeerLink>> links_;  // guarded by links_mu_

  std::mutex maintenance_mu_;
  std::condition_variable maintenance_wake_;
  bool maintenance_stop_ = false;  // guarded by maintenance_mu_
  bool maintenance_kick_ = false;  // guarded by maintenance_mu_
  std::thread maintenance_;

  std::mutex random_mu_;
  std::mt19937_64 random_;  // guarded by random_mu_

  std::mutex snapshots_mu_;
  std::condition_variable snapshots_changed_;
  // Outbound streams by receiver (one at a time each).
  std::map<NodeId, std::shared_ptr<SnapshotSend>> sending_;  // snapshots_mu_
  // Every SendSnapshot whose thread was not joined yet.
  std::list<std::shared_ptr<SnapshotSend>> send_threads_;  // snapshots_mu_
  // Inbound partial receives by sender.
  std::map<NodeId, std::unique_ptr<PartialReceive>> partials_;  // snapshots_mu_
};

// A receive broken midway, kept so the sender's next stream continues it.
struct GrpcTransport::Impl::PartialReceive {
  raft::Message install;
  raft::SnapshotManifest manifest;
  std::unique_ptr<raft::SnapshotSink> sink;
  // The next byte expected: offset in manifest.files[file_index].
  size_t file_index = 0;
  uint64_t offset = 0;
  // A stream is using it; only that stream touches the fields below.
  bool in_use = false;  // guarded by snapshots_mu_
  absl::Time last_progress;

  // Moves past complete files (and empty ones, which get no bytes).
  void SkipCompleteFiles() {
    while (file_index < manifest.files.size() &&
           offset == manifest.files[file_index].size) {
      ++file_index;
      offset = 0;
    }
  }
};

// One SendSnapshot call.
struct GrpcTransport::Impl::SnapshotSend {
  raft::OutgoingSnapshot snapshot;
  std::function<void(absl::Status)> done;
  std::thread thread;
  bool finished = false;  // guarded by snapshots_mu_
  std::mutex mu;
  // The attempt in progress, for Stop to cancel.
  grpc::ClientContext* context = nullptr;  // guarded by mu
};

// ---------------------------------------------------------------------------
// Outbound: one PeerLink per peer, one OutboundStream at a time per link.

// A Send call. Besides the writes, a read of the receiver's summary stays
// pending for the whole call: it completes only when the call ends, so the
// link learns of a dead stream even when it has nothing to write.
class GrpcTransport::Impl::OutboundStream final
    : public ClientBidiReactor<Envelope, SendSummary> {
 public:
  explicit OutboundStream(std::shared_ptr<PeerLink> link)
      : link_(std::move(link)) {}

  void OnReadInitialMetadataDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  SendSummary summary;
  // The write in flight (one at a time).
  Envelope out;

 private:
  std::shared_ptr<PeerLink> link_;
};

class GrpcTransport::Impl::PeerLink
    : public std::enable_shared_from_this<PeerLink> {
 public:
  PeerLink(Impl& impl, NodeId peer, std::string address)
      : impl_(impl),
        peer_(peer),
        address_(std::move(address)),
        channel_(impl.MakeChannel(address_)),
        stub_(Peer::NewStub(channel_)),
        backoff_(impl.options_.reconnect_min) {}

  const std::string& address() const { return address_; }

  // Queues `messages` (all to this peer) unless the queue is full or, for
  // Raft messages, the link is backing off after a failure (Raft retries
  // them; it is told the peer is unreachable instead). Server messages
  // (forwarded proposals and answers, which nobody resends) wait for the
  // next stream. Those dropped are counted and the peer reported. With no
  // stream open and no backoff due, opens one first.
  void Enqueue(NodeId self, std::vector<raft::Message>&& messages,
               std::vector<raft::ServerMessage>&& server_messages) {
    size_t dropped = 0;
    bool connect = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      connect =
          stream_ == nullptr && !closed_ && MonotonicNow() >= reconnect_at_;
    }
    if (connect) MaybeConnect(self, MonotonicNow());
    {
      std::lock_guard<std::mutex> lock(mu_);
      const bool streaming = stream_ != nullptr && !closing_;
      const size_t limit = impl_.options_.max_queued_messages;
      if (closed_) {
        dropped = messages.size() + server_messages.size();
      } else {
        if (streaming && queued_ + messages.size() <= limit) {
          for (raft::Message& message : messages) {
            raft_queue_.push_back(std::move(message));
          }
          queued_ += messages.size();
        } else {
          dropped += messages.size();
        }
        for (raft::ServerMessage& message : server_messages) {
          if (queued_ + 1 > limit) {
            ++dropped;
            continue;
          }
          server_queue_.push_back(std::move(message));
          ++queued_;
        }
      }
    }
    if (dropped > 0) {
      Add(impl_.counters_.messages_dropped, dropped);
      MarkUnreachable();
    }
    MaybeWrite();
  }

  // Opens a stream when there is none and the backoff has passed. Returns
  // when the link next wants a Connect call (InfiniteFuture: never).
  absl::Time MaybeConnect(NodeId self, absl::Time now) {
    std::shared_ptr<OutboundStream> stream;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || stream_ != nullptr) return absl::InfiniteFuture();
      if (now < reconnect_at_) return reconnect_at_;
      stream = std::make_shared<OutboundStream>(shared_from_this());
      stream_ = stream;
      self_ = self;
      ready_ = false;
      closing_ = false;
      hold_released_ = false;
      established_ = false;
    }
    Add(impl_.counters_.streams_opened, 1);
    stream->Bind(
        stub_->PrepareAsyncSend(stream->context(), impl_.queue_->cq()));
    // The hold keeps the call (and OnDone) from ending while another thread
    // may be about to StartWrite; it is released once, by whoever closes.
    stream->AddHold();
    stream->StartRead(&stream->summary);
    stream->StartCall();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_ = true;
    }
    MaybeWrite();
    return absl::InfiniteFuture();
  }

  // Writes what is queued when no write is in flight.
  void MaybeWrite() {
    std::shared_ptr<OutboundStream> stream;
    std::vector<raft::Message> batch;
    std::vector<raft::ServerMessage> server_batch;
    NodeId self;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Nothing is written before the receiver answered the stream: a write
      // into a stream that never connects would lose server messages.
      if (stream_ == nullptr || !ready_ || !established_ || write_in_flight_ ||
          closing_ || queued_ == 0) {
        return;
      }
      size_t bytes = 0;
      size_t taken = 0;
      while (taken < raft_queue_.size()) {
        const size_t entry_bytes = EntryBytes(raft_queue_[taken]);
        if (taken > 0 && bytes + entry_bytes > impl_.options_.max_batch_bytes) {
          break;
        }
        bytes += entry_bytes;
        ++taken;
      }
      batch.assign(std::make_move_iterator(raft_queue_.begin()),
                   std::make_move_iterator(raft_queue_.begin() +
                                           static_cast<ptrdiff_t>(taken)));
      raft_queue_.erase(raft_queue_.begin(),
                        raft_queue_.begin() + static_cast<ptrdiff_t>(taken));
      server_batch.swap(server_queue_);
      queued_ -= batch.size() + server_batch.size();
      write_in_flight_ = true;
      stream = stream_;
      self = self_;
    }
    stream->out = EncodeEnvelope(impl_.options_.cluster_id, self, peer_, batch,
                                 server_batch);
    Add(impl_.counters_.messages_sent, batch.size() + server_batch.size());
    stream->StartWrite(&stream->out);
  }

  void Established(OutboundStream* stream) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stream_.get() != stream) return;
      established_ = true;
    }
    MaybeWrite();
  }

  // The call ended on its own (the pending read or the initial metadata
  // failed): no more writes; the hold goes now, or with the write in
  // flight.
  void CallEnded(OutboundStream* stream) {
    bool release_hold = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stream_.get() != stream) return;
      closing_ = true;
      if (!write_in_flight_ && !hold_released_) {
        hold_released_ = true;
        release_hold = true;
      }
    }
    if (release_hold) stream->RemoveHold();
  }

  void WriteDone(OutboundStream* stream, bool ok) {
    bool release_hold = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_in_flight_ = false;
      if (ok) established_ = true;
      if ((!ok || closing_) && !hold_released_) {
        closing_ = true;
        hold_released_ = true;
        release_hold = true;
      }
    }
    if (release_hold) {
      stream->RemoveHold();
      return;
    }
    MaybeWrite();
  }

  void StreamDone(const grpc::Status& status) {
    std::shared_ptr<OutboundStream> stream;
    size_t dropped = 0;
    bool failed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream = std::move(stream_);
      // Raft messages not yet written are dropped (the leader probes again);
      // server messages wait for the next stream, unless the link closed.
      dropped = raft_queue_.size();
      raft_queue_.clear();
      if (closed_) {
        dropped += server_queue_.size();
        server_queue_.clear();
      }
      queued_ = server_queue_.size();
      ready_ = false;
      failed = !closed_;
      if (!closed_) {
        backoff_ = established_
                       ? impl_.options_.reconnect_min
                       : std::min(backoff_ * 2, impl_.options_.reconnect_max);
        reconnect_at_ = MonotonicNow() + impl_.Jitter(backoff_);
      }
      stream_done_.notify_all();
    }
    if (dropped > 0) Add(impl_.counters_.messages_dropped, dropped);
    if (!failed) return;
    Add(impl_.counters_.stream_failures, 1);
    impl_.LogWarning(
        absl::StrCat("stream-", peer_.value()),
        absl::StrCat("stream to node ", peer_.value(), " at ", address_,
                     " ended (", FromGrpc(status).ToString(),
                     "); reconnecting"));
    MarkUnreachable();
    impl_.WakeMaintenance();
  }

  // Ends the stream and waits until gRPC is done with it; the link opens no
  // other.
  void Close() {
    std::shared_ptr<OutboundStream> stream;
    bool release_hold = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      if (stream_ == nullptr) return;
      stream = stream_;
      closing_ = true;
      if (!write_in_flight_ && !hold_released_) {
        hold_released_ = true;
        release_hold = true;
      }
    }
    // `stream` keeps the context alive even if the call ends meanwhile.
    stream->context()->TryCancel();
    if (release_hold) stream->RemoveHold();
    std::unique_lock<std::mutex> lock(mu_);
    stream_done_.wait(lock, [this] { return stream_ == nullptr; });
  }

  // Reports the peer unreachable (from the maintenance thread, at most once
  // per unreachable_interval).
  void MarkUnreachable() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (unreachable_pending_) return;
      unreachable_pending_ = true;
    }
    impl_.WakeMaintenance();
  }
  bool TakeUnreachable(absl::Time now) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!unreachable_pending_ ||
        now - last_unreachable_ < impl_.options_.unreachable_interval) {
      return false;
    }
    unreachable_pending_ = false;
    last_unreachable_ = now;
    return true;
  }
  absl::Time NextUnreachable() {
    std::lock_guard<std::mutex> lock(mu_);
    return unreachable_pending_
               ? last_unreachable_ + impl_.options_.unreachable_interval
               : absl::InfiniteFuture();
  }

  NodeId peer() const { return peer_; }

 private:
  Impl& impl_;
  const NodeId peer_;
  const std::string address_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<Peer::Stub> stub_;

  std::mutex mu_;
  std::condition_variable stream_done_;
  // The open stream, from MaybeConnect until its OnDone.
  std::shared_ptr<OutboundStream> stream_;  // guarded by mu_
  NodeId self_;                             // guarded by mu_
  bool ready_ = false;                      // guarded by mu_: StartCall done
  bool write_in_flight_ = false;            // guarded by mu_
  bool closing_ = false;        // guarded by mu_: no more writes on stream_
  bool hold_released_ = false;  // guarded by mu_
  // The receiver answered stream_ (or a write of it succeeded).
  bool established_ = false;               // guarded by mu_
  bool closed_ = false;                    // guarded by mu_: Close was called
  std::vector<raft::Message> raft_queue_;  // guarded by mu_
  std::vector<raft::ServerMessage> server_queue_;       // guarded by mu_
  size_t queued_ = 0;                                   // guarded by mu_
  absl::Duration backoff_;                              // guarded by mu_
  absl::Time reconnect_at_ = absl::InfinitePast();      // guarded by mu_
  bool unreachable_pending_ = false;                    // guarded by mu_
  absl::Time last_unreachable_ = absl::InfinitePast();  // guarded by mu_
};

void GrpcTransport::Impl::OutboundStream::OnReadInitialMetadataDone(bool ok) {
  if (ok) {
    link_->Established(this);
  } else {
    link_->CallEnded(this);
  }
}

void GrpcTransport::Impl::OutboundStream::OnReadDone(bool /*ok*/) {
  // The receiver writes only when the stream ends.
  link_->CallEnded(this);
}

void GrpcTransport::Impl::OutboundStream::OnWriteDone(bool ok) {
  link_->WriteDone(this, ok);
}

void GrpcTransport::Impl::OutboundStream::OnDone(const grpc::Status& status) {
  // The link drops its reference here; `link` keeps it alive for the call.
  std::shared_ptr<PeerLink> link = std::move(link_);
  link->StreamDone(status);
}

// ---------------------------------------------------------------------------
// Inbound Raft traffic: a reactor per stream, no thread.

class GrpcTransport::Impl::InboundStream final
    : public ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit InboundStream(Impl& impl) : impl_(impl) {
    // Tells the sender the stream is up.
    StartSendInitialMetadata();
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The sender closed or cancelled the stream.
      SendSummary summary;
      summary.set_envelopes(envelopes_);
      bool own_buffer = false;
      if (!grpc::SerializationTraits<SendSummary>::Serialize(summary, &out_,
                                                             &own_buffer)
               .ok()) {
        Finish(grpc::Status::OK);
        return;
      }
      StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    grpc::Status status = impl_.DeliverBytes(in_);
    in_.Clear();
    if (!status.ok()) {
      Finish(status);
      return;
    }
    ++envelopes_;
    StartRead(&in_);
  }
  void OnDone() override { delete this; }

 private:
  Impl& impl_;
  grpc::ByteBuffer in_;
  grpc::ByteBuffer out_;
  uint64_t envelopes_ = 0;
};

raft::TransportHandler* GrpcTransport::Impl::AcquireHandler() {
  std::lock_guard<std::mutex> lock(handler_mu_);
  if (handler_ == nullptr) return nullptr;
  ++handler_calls_;
  return handler_;
}

void GrpcTransport::Impl::ReleaseHandler() {
  std::lock_guard<std::mutex> lock(handler_mu_);
  if (--handler_calls_ == 0) handler_idle_.notify_all();
}

void GrpcTransport::Impl::LogWarning(const std::string& kind,
                                     const std::string& message) {
  uint64_t suppressed = 0;
  if (!log_.Allow(kind, &suppressed)) return;
  if (suppressed > 0) {
    spdlog::warn("node {}: {} ({} more like this not logged)",
                 self_id_.load(std::memory_order_relaxed), message, suppressed);
  } else {
    spdlog::warn("node {}: {}", self_id_.load(std::memory_order_relaxed),
                 message);
  }
}

grpc::Status GrpcTransport::Impl::Refuse(std::atomic<uint64_t>& counter,
                                         const std::string& kind,
                                         grpc::StatusCode code,
                                         std::string message) {
  Add(counter, 1);
  LogWarning(kind, absl::StrCat("refused: ", message));
  return grpc::Status(code, std::move(message));
}

grpc::Status GrpcTransport::Impl::CheckRouting(uint32_t protocol_version,
                                               uint64_t cluster_id,
                                               uint64_t from, uint64_t to,
                                               absl::string_view what) {
  const uint64_t self = self_id_.load(std::memory_order_acquire);
  if (self == 0) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "this node is not started yet");
  }
  if (protocol_version != kProtocolVersion) {
    return Refuse(
        counters_.refused_malformed, "refused-version",
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat(what, " from node ", from, ": protocol version ",
                     protocol_version, " is not supported (this node speaks ",
                     kProtocolVersion, ")"));
  }
  if (cluster_id != options_.cluster_id) {
    return Refuse(
        counters_.refused_cluster, "refused-cluster",
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat(what, " from node ", from, " of cluster ",
                     absl::Hex(cluster_id), "; this node is in cluster ",
                     absl::Hex(options_.cluster_id)));
  }
  if (to != self) {
    return Refuse(
        counters_.refused_sender, "refused-receiver",
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat(what, " from node ", from, " is addressed to node ", to,
                     "; this is node ", self));
  }
  bool known = false;
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    known = links_.contains(NodeId(from));
  }
  if (!known) {
    return Refuse(
        counters_.refused_sender, "refused-sender",
        grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat(what, " from node ", from, ", which is not a known peer"));
  }
  return grpc::Status::OK;
}

grpc::Status GrpcTransport::Impl::DeliverBytes(grpc::ByteBuffer& bytes) {
  Envelope envelope;
  grpc::ProtoBufferReader reader(&bytes);
  if (!envelope.ParseFromZeroCopyStream(&reader)) {
    return Refuse(counters_.refused_malformed, "refused-malformed",
                  grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("a Send message of ", bytes.Length(),
                               " bytes is not a valid Envelope"));
  }
  return Deliver(std::move(envelope));
}

grpc::Status GrpcTransport::Impl::Deliver(Envelope envelope) {
  grpc::Status routing =
      CheckRouting(envelope.protocol_version(), envelope.cluster_id(),
                   envelope.from(), envelope.to(), "envelope");
  if (!routing.ok()) return routing;
  const uint64_t sender = envelope.from();
  absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelope(std::move(envelope));
  if (!decoded.ok()) {
    return Refuse(
        counters_.refused_malformed, "refused-malformed",
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("from node ", sender, ": ", decoded.status().message()));
  }
  const bool delivered = WithHandler([&](raft::TransportHandler& handler) {
    if (!decoded->messages.empty()) {
      handler.HandleMessages(std::move(decoded->messages));
    }
    for (raft::ServerMessage& message : decoded->server_messages) {
      handler.HandleServerMessage(std::move(message));
    }
  });
  if (!delivered) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this node stopped");
  }
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// Lifecycle.

std::shared_ptr<grpc::ChannelCredentials>
GrpcTransport::Impl::ChannelCredentials() const {
  if (!options_.tls.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls_ca_;
  ssl.pem_private_key = tls_key_;
  ssl.pem_cert_chain = tls_cert_;
  return grpc::SslCredentials(ssl);
}

std::shared_ptr<grpc::Channel> GrpcTransport::Impl::MakeChannel(
    const std::string& address) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(ClampToInt(options_.max_grpc_message_bytes));
  args.SetMaxSendMessageSize(ClampToInt(options_.max_grpc_message_bytes));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options_.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              Millis(options_.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              Millis(options_.reconnect_min));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              Millis(options_.reconnect_min));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              Millis(options_.reconnect_max));
  // A connection of its own per link: one peer's stream never waits behind
  // another's.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!options_.tls.server_name_override.empty()) {
    args.SetSslTargetNameOverride(options_.tls.server_name_override);
  }
  return grpc::CreateCustomChannel(address, ChannelCredentials(), args);
}

absl::Status GrpcTransport::Impl::Listen() {
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (options_.tls.enabled()) {
    absl::StatusOr<std::string> cert =
        ReadFile(options_.tls.cert_file, "certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(options_.tls.key_file, "key");
    if (!key.ok()) return key.status();
    absl::StatusOr<std::string> ca = ReadFile(options_.tls.ca_file, "CA");
    if (!ca.ok()) return ca.status();
    tls_cert_ = *std::move(cert);
    tls_key_ = *std::move(key);
    tls_ca_ = *std::move(ca);
    // Mutual TLS: a client must present a certificate the cluster CA signed.
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = tls_ca_;
    ssl.pem_key_cert_pairs.push_back({tls_key_, tls_cert_});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen_address, credentials, &port_);
  builder.RegisterService(&service_);
  builder.SetMaxReceiveMessageSize(ClampToInt(options_.max_grpc_message_bytes));
  builder.SetMaxSendMessageSize(ClampToInt(options_.max_grpc_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             Millis(options_.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             Millis(options_.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Peers ping idle connections every keepalive_time; do not punish that.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      Millis(options_.keepalive_time / 2));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // A second transport on the same port is an error, not a shared port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  server_ = queue_->BuildAndStart(builder);
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen_address,
                     " (in use, or not an address of this host)"));
  }
  ServeBidi(*server_, &service_, &PeerService::RequestSend,
            [this](grpc::ServerContext*) { return new InboundStream(*this); });
  ServeBidiOnThread(
      *server_, &service_, &PeerService::RequestInstallSnapshot,
      [this](grpc::ServerContext*,
             BlockingServerStream<SnapshotChunkProto, SnapshotReplyProto>*
                 stream) { return ReceiveSnapshotStream(stream); });
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    for (const auto& [peer, address] : options_.peers) {
      links_[peer] = std::make_shared<PeerLink>(*this, peer, address);
    }
  }
  maintenance_ = std::thread([this] {
    raft::SetThreadName("dw-rpc-maint");
    MaintenanceLoop();
  });
  return absl::OkStatus();
}

absl::Status GrpcTransport::Impl::Start(NodeId self,
                                        raft::TransportHandler* handler) {
  {
    std::lock_guard<std::mutex> lock(handler_mu_);
    if (started_ || stopped_) {
      return absl::FailedPreconditionError(
          "GrpcTransport: a transport is started at most once");
    }
    {
      std::lock_guard<std::mutex> links_lock(links_mu_);
      if (links_.contains(self)) {
        return absl::InvalidArgumentError(
            absl::StrCat("GrpcTransport: node ", self.value(),
                         " is listed among its peers"));
      }
    }
    started_ = true;
    self_ = self;
    handler_ = handler;
    self_id_.store(self.value(), std::memory_order_release);
  }
  WakeMaintenance();
  return absl::OkStatus();
}

void GrpcTransport::Impl::Stop() {
  {
    std::unique_lock<std::mutex> lock(handler_mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_.store(true);
    handler_ = nullptr;
    handler_idle_.wait(lock, [this] { return handler_calls_ == 0; });
  }
  {
    std::lock_guard<std::mutex> lock(maintenance_mu_);
    maintenance_stop_ = true;
    maintenance_wake_.notify_all();
  }
  if (maintenance_.joinable()) maintenance_.join();
  std::map<NodeId, std::shared_ptr<PeerLink>> links;
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    links = links_;
  }
  for (auto& [peer, link] : links) link->Close();
  std::list<std::shared_ptr<SnapshotSend>> threads;
  {
    std::lock_guard<std::mutex> lock(snapshots_mu_);
    for (auto& [peer, send] : sending_) {
      std::lock_guard<std::mutex> send_lock(send->mu);
      if (send->context != nullptr) send->context->TryCancel();
    }
    snapshots_changed_.notify_all();
    threads.swap(send_threads_);
  }
  for (const std::shared_ptr<SnapshotSend>& send : threads) {
    send->thread.join();
  }
  // Cancels inbound streams at once and waits for their handlers.
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  std::map<NodeId, std::unique_ptr<PartialReceive>> partials;
  {
    std::lock_guard<std::mutex> lock(snapshots_mu_);
    partials.swap(partials_);
  }
  partials.clear();
}

void GrpcTransport::Impl::SetPeerAddress(NodeId peer, std::string address) {
  std::shared_ptr<PeerLink> old;
  {
    std::lock_guard<std::mutex> lock(links_mu_);
    auto it = links_.find(peer);
    if (it != links_.end() && it->second->address() == address) return;
    if (it != links_.end()) old = it->second;
    links_[peer] = std::make_shared<PeerLink>(*this, peer, std::move(address));
  }
  if (old != nullptr) old->Close();
  WakeMaintenance();
}

std::shared_ptr<GrpcTransport::Impl::PeerLink> GrpcTransport::Impl::Link(
    NodeId peer) {
  std::lock_guard<std::mutex> lock(links_mu_);
  auto it = links_.find(peer);
  return it == links_.end() ? nullptr : it->second;
}

void GrpcTransport::Impl::Send(std::vector<raft::Message>& messages) {
  const NodeId self(self_id_.load(std::memory_order_acquire));
  // Nothing goes out before Start or after Stop.
  if (messages.empty() || self == raft::kNoNode ||
      stopping_.load(std::memory_order_relaxed)) {
    return;
  }
  // Usually every message goes to one of a few peers: group them.
  std::vector<std::pair<NodeId, std::vector<raft::Message>>> by_peer;
  for (raft::Message& message : messages) {
    auto it = std::find_if(
        by_peer.begin(), by_peer.end(),
        [&](const auto& group) { return group.first == message.to; });
    if (it == by_peer.end()) {
      by_peer.emplace_back(message.to, std::vector<raft::Message>());
      it = by_peer.end() - 1;
    }
    it->second.push_back(std::move(message));
  }
  for (auto& [peer, group] : by_peer) {
    std::shared_ptr<PeerLink> link = Link(peer);
    if (link == nullptr) {
      Add(counters_.messages_dropped, group.size());
      LogWarning(absl::StrCat("unknown-", peer.value()),
                 absl::StrCat("no address for node ", peer.value(),
                              "; its messages are dropped"));
      continue;
    }
    link->Enqueue(self, std::move(group), {});
  }
}

void GrpcTransport::Impl::SendServerMessage(raft::ServerMessage message) {
  const NodeId self(self_id_.load(std::memory_order_acquire));
  if (self == raft::kNoNode || stopping_.load(std::memory_order_relaxed)) {
    return;
  }
  std::shared_ptr<PeerLink> link = Link(message.to);
  if (link == nullptr) {
    Add(counters_.messages_dropped, 1);
    return;
  }
  std::vector<raft::ServerMessage> one;
  one.push_back(std::move(message));
  link->Enqueue(self, {}, std::move(one));
}

void GrpcTransport::Impl::WakeMaintenance() {
  std::lock_guard<std::mutex> lock(maintenance_mu_);
  maintenance_kick_ = true;
  maintenance_wake_.notify_all();
}

absl::Duration GrpcTransport::Impl::Jitter(absl::Duration step) {
  std::lock_guard<std::mutex> lock(random_mu_);
  std::uniform_real_distribution<double> fraction(0.5, 1.0);
  return step * fraction(random_);
}

// Reconnects links whose backoff passed, reports unreachable peers and
// expires stale partial snapshot receives.
void GrpcTransport::Impl::MaintenanceLoop() {
  for (;;) {
    const absl::Time now = MonotonicNow();
    absl::Time next = now + absl::Seconds(1);
    const NodeId self(self_id_.load(std::memory_order_acquire));
    std::vector<std::shared_ptr<PeerLink>> links;
    {
      std::lock_guard<std::mutex> lock(links_mu_);
      for (const auto& [peer, link] : links_) links.push_back(link);
    }
    for (const std::shared_ptr<PeerLink>& link : links) {
      if (self != raft::kNoNode)
        next = std::min(next, link->MaybeConnect(self, now));
      if (link->TakeUnreachable(now)) {
        WithHandler([&](raft::TransportHandler& handler) {
          handler.ReportUnreachable(link->peer());
        });
      }
      next = std::min(next, link->NextUnreachable());
    }
    std::vector<std::unique_ptr<PartialReceive>> expired;
    {
      std::lock_guard<std::mutex> lock(snapshots_mu_);
      for (auto it = partials_.begin(); it != partials_.end();) {
        if (!it->second->in_use &&
            now - it->second->last_progress > options_.partial_snapshot_ttl) {
          expired.push_back(std::move(it->second));
          it = partials_.erase(it);
        } else {
          ++it;
        }
      }
    }
    expired.clear();
    std::unique_lock<std::mutex> lock(maintenance_mu_);
    if (maintenance_stop_) return;
    if (!maintenance_kick_) {
      maintenance_wake_.wait_for(
          lock,
          absl::ToChronoNanoseconds(
              std::max(next - MonotonicNow(), absl::Milliseconds(1))),
          [this] { return maintenance_stop_ || maintenance_kick_; });
    }
    maintenance_kick_ = false;
    if (maintenance_stop_) return;
  }
}

// ---------------------------------------------------------------------------
// Snapshots.

void GrpcTransport::Impl::SendSnapshot(raft::OutgoingSnapshot snapshot,
                                       std::function<void(absl::Status)> done) {
  const NodeId to = snapshot.message.to;
  absl::Status refused;
  std::list<std::shared_ptr<SnapshotSend>> finished;
  {
    std::lock_guard<std::mutex> lock(snapshots_mu_);
    if (stopping_.load()) {
      refused = absl::CancelledError("the transport stopped");
    } else if (sending_.contains(to)) {
      refused = absl::UnavailableError(absl::StrCat(
          "a snapshot stream to node ", to.value(), " is already running"));
    } else {
      auto send = std::make_shared<SnapshotSend>();
      send->snapshot = std::move(snapshot);
      send->done = std::move(done);
      sending_[to] = send;
      send->thread = std::thread([this, send] {
        raft::SetThreadName("dw-snap-send");
        RunSnapshotSend(send);
      });
      send_threads_.push_back(send);
    }
    // Reap the threads of streams that ended.
    for (auto it = send_threads_.begin(); it != send_threads_.end();) {
      if ((*it)->finished) {
        finished.push_back(std::move(*it));
        it = send_threads_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const std::shared_ptr<SnapshotSend>& send : finished) {
    send->thread.join();
  }
  if (!refused.ok()) done(refused);
}

bool GrpcTransport::Impl::WaitUnlessStopping(absl::Duration duration) {
  std::unique_lock<std::mutex> lock(snapshots_mu_);
  snapshots_changed_.wait_for(
      lock, absl::ToChronoNanoseconds(std::max(duration, absl::ZeroDuration())),
      [this] { return stopping_.load(); });
  return !stopping_.load();
}

void GrpcTransport::Impl::RunSnapshotSend(std::shared_ptr<SnapshotSend> send) {
  const NodeId to = send->snapshot.message.to;
  absl::Status status;
  absl::Duration backoff =
      std::max(options_.reconnect_min, absl::Milliseconds(100));
  for (int attempt = 1; attempt <= options_.snapshot_attempts; ++attempt) {
    status = SendSnapshotOnce(*send);
    if (status.ok() || !Retryable(status) || stopping_.load()) break;
    if (attempt == options_.snapshot_attempts) break;
    LogWarning(absl::StrCat("snapshot-", to.value()),
               absl::StrCat("snapshot stream to node ", to.value(), " broke (",
                            status.ToString(), "); attempt ", attempt + 1,
                            " of ", options_.snapshot_attempts,
                            " continues where the receiver stopped"));
    if (!WaitUnlessStopping(Jitter(backoff))) break;
    backoff = std::min(backoff * 2, options_.reconnect_max);
  }
  if (!status.ok() && stopping_.load()) {
    status = absl::CancelledError(
        absl::StrCat("the transport stopped while streaming a snapshot to "
                     "node ",
                     to.value()));
  }
  send->done(status);
  std::lock_guard<std::mutex> lock(snapshots_mu_);
  auto it = sending_.find(to);
  if (it != sending_.end() && it->second == send) sending_.erase(it);
  send->finished = true;
}

absl::Status GrpcTransport::Impl::SendSnapshotOnce(SnapshotSend& send) {
  const raft::OutgoingSnapshot& snapshot = send.snapshot;
  const NodeId to = snapshot.message.to;
  std::shared_ptr<PeerLink> link = Link(to);
  if (link == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("no address for node ", to.value()));
  }
  // A connection of its own, so a catch-up does not queue Raft messages
  // behind its chunks.
  Peer::Stub stub(MakeChannel(link->address()));
  grpc::ClientContext context;
  {
    std::lock_guard<std::mutex> lock(send.mu);
    if (stopping_.load()) return absl::CancelledError("the transport stopped");
    send.context = &context;
  }
  struct ClearContext {
    SnapshotSend& send;
    ~ClearContext() {
      std::lock_guard<std::mutex> lock(send.mu);
      send.context = nullptr;
    }
  } clear_context{send};

  std::unique_ptr<
      grpc::ClientReaderWriter<SnapshotChunkProto, SnapshotReplyProto>>
      stream = stub.InstallSnapshot(&context);
  const auto broken = [&]() -> absl::Status {
    context.TryCancel();
    grpc::Status status = stream->Finish();
    if (status.ok()) {
      return absl::InternalError("the snapshot stream ended without a result");
    }
    return FromGrpc(status);
  };
  SnapshotChunkProto chunk;
  *chunk.mutable_header() = EncodeSnapshotHeader(options_.cluster_id, snapshot);
  if (!stream->Write(chunk)) return broken();
  SnapshotReplyProto reply;
  if (!stream->Read(&reply)) return FromGrpc(stream->Finish());
  const raft::SnapshotManifest& manifest = snapshot.manifest;
  if (!reply.has_resume() ||
      reply.resume().file_index() > manifest.files.size() ||
      (reply.resume().file_index() < manifest.files.size() &&
       reply.resume().offset() >
           manifest.files[reply.resume().file_index()].size)) {
    return broken();
  }
  const absl::Time start = MonotonicNow();
  uint64_t sent = 0;
  std::string buffer(options_.snapshot_chunk_bytes, '\0');
  for (size_t i = reply.resume().file_index(); i < manifest.files.size(); ++i) {
    const raft::SnapshotFile& file = manifest.files[i];
    uint64_t offset =
        i == reply.resume().file_index() ? reply.resume().offset() : 0;
    if (offset == file.size) continue;
    const std::string path = (snapshot.dir / file.name).string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      context.TryCancel();
      stream->Finish();
      return absl::NotFoundError(absl::StrCat("opening snapshot file ", path,
                                              ": ", std::strerror(errno)));
    }
    struct CloseFd {
      int fd;
      ~CloseFd() { ::close(fd); }
    } close_fd{fd};
    while (offset < file.size) {
      const size_t want = static_cast<size_t>(
          std::min<uint64_t>(file.size - offset, buffer.size()));
      const ssize_t got =
          ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
      if (got <= 0) {
        context.TryCancel();
        stream->Finish();
        return absl::DataLossError(absl::StrCat(
            "snapshot file ", path, " is shorter than the ", file.size,
            " bytes of its manifest (read at ", offset, ": ",
            got < 0 ? std::strerror(errno) : "end of file", ")"));
      }
      SnapshotDataProto* data = chunk.mutable_data();
      data->set_file_name(file.name);
      data->set_offset(offset);
      data->set_data(buffer.data(), static_cast<size_t>(got));
      if (options_.snapshot_bytes_per_second > 0) {
        const absl::Time due =
            start + absl::Seconds(static_cast<double>(sent) /
                                  static_cast<double>(
                                      options_.snapshot_bytes_per_second));
        if (!WaitUnlessStopping(due - MonotonicNow())) return broken();
      }
      if (!stream->Write(chunk)) return broken();
      offset += static_cast<uint64_t>(got);
      sent += static_cast<uint64_t>(got);
      Add(counters_.snapshot_bytes_sent, static_cast<uint64_t>(got));
    }
  }
  stream->WritesDone();
  if (!stream->Read(&reply) || !reply.has_result()) return broken();
  stream->Finish();
  if (reply.result().code() < 0 || reply.result().code() > 16) {
    return absl::InternalError(
        absl::StrCat("the receiver answered with unknown status code ",
                     reply.result().code()));
  }
  return absl::Status(static_cast<absl::StatusCode>(reply.result().code()),
                      reply.result().error());
}

grpc::Status GrpcTransport::Impl::ReceiveSnapshotStream(
    BlockingServerStream<SnapshotChunkProto, SnapshotReplyProto>* stream) {
  SnapshotChunkProto chunk;
  if (!stream->Read(&chunk)) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the snapshot stream ended before its header");
  }
  if (!chunk.has_header()) {
    return Refuse(counters_.refused_malformed, "refused-malformed",
                  grpc::StatusCode::INVALID_ARGUMENT,
                  "a snapshot stream must begin with its header");
  }
  const SnapshotHeaderProto& header = chunk.header();
  grpc::Status routing =
      CheckRouting(header.protocol_version(), header.cluster_id(),
                   header.from(), header.to(), "snapshot stream");
  if (!routing.ok()) return routing;
  absl::StatusOr<DecodedSnapshotHeader> decoded = DecodeSnapshotHeader(header);
  if (!decoded.ok()) {
    return Refuse(counters_.refused_malformed, "refused-malformed",
                  grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("from node ", header.from(), ": ",
                               decoded.status().message()));
  }
  const NodeId from = decoded->routing.from;

  // Claim this sender's partial receive, continuing it when it is of the
  // same snapshot.
  PartialReceive* partial = nullptr;
  bool resumed = false;
  std::unique_ptr<PartialReceive> stale;
  {
    std::lock_guard<std::mutex> lock(snapshots_mu_);
    std::unique_ptr<PartialReceive>& slot = partials_[from];
    if (slot != nullptr && slot->in_use) {
      return grpc::Status(grpc::StatusCode::ABORTED,
                          absl::StrCat("a snapshot stream from node ",
                                       from.value(), " is still running here"));
    }
    if (slot != nullptr && slot->sink != nullptr &&
        slot->install == decoded->install &&
        slot->manifest == decoded->manifest) {
      resumed = true;
    } else {
      stale = std::move(slot);
      slot = std::make_unique<PartialReceive>();
      slot->install = decoded->install;
      slot->manifest = decoded->manifest;
    }
    slot->in_use = true;
    partial = slot.get();
  }
  stale.reset();
  // Gives the partial back (kept for a resume) or drops it.
  const auto release = [&](bool keep) {
    std::unique_ptr<PartialReceive> dropped;
    std::lock_guard<std::mutex> lock(snapshots_mu_);
    auto it = partials_.find(from);
    if (it == partials_.end() || it->second.get() != partial) return;
    partial->in_use = false;
    partial->last_progress = MonotonicNow();
    if (!keep) {
      dropped = std::move(it->second);
      partials_.erase(it);
    }
  };
  const auto stopped = [&] {
    release(true);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "this node stopped");
  };

  if (!resumed) {
    absl::StatusOr<std::unique_ptr<raft::SnapshotSink>> sink;
    if (!WithHandler([&](raft::TransportHandler& handler) {
          sink = handler.ReceiveSnapshot(decoded->install, decoded->manifest);
        })) {
      return stopped();
    }
    if (!sink.ok()) {
      release(false);
      return ToGrpc(sink.status());
    }
    partial->sink = *std::move(sink);
  } else if (partial->file_index > 0 || partial->offset > 0) {
    Add(counters_.snapshot_resumes, 1);
    spdlog::info(
        "node {}: snapshot stream from node {} resumes at byte {} of "
        "file {} of {}",
        self_id_.load(), from.value(), partial->offset, partial->file_index + 1,
        partial->manifest.files.size());
  }
  partial->SkipCompleteFiles();
  SnapshotReplyProto reply;
  reply.mutable_resume()->set_file_index(
      static_cast<uint32_t>(partial->file_index));
  reply.mutable_resume()->set_offset(partial->offset);
  if (!stream->Write(reply)) {
    release(true);
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "the snapshot stream broke");
  }
  const std::vector<raft::SnapshotFile>& files = partial->manifest.files;
  while (partial->file_index < files.size()) {
    if (!stream->Read(&chunk)) {
      release(true);
      return grpc::Status(
          grpc::StatusCode::CANCELLED,
          absl::StrCat("the snapshot stream broke at byte ", partial->offset,
                       " of file '", files[partial->file_index].name,
                       "'; what arrived is kept for a resume"));
    }
    const raft::SnapshotFile& file = files[partial->file_index];
    if (!chunk.has_data() || chunk.data().file_name() != file.name ||
        chunk.data().offset() != partial->offset ||
        chunk.data().data().empty() ||
        chunk.data().data().size() > file.size - partial->offset) {
      release(false);
      return Refuse(
          counters_.refused_malformed, "refused-malformed",
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat(
              "snapshot stream from node ", from.value(),
              ": expected bytes of file '", file.name, "' at ", partial->offset,
              ", got ",
              chunk.has_data()
                  ? absl::StrCat(chunk.data().data().size(), " bytes of '",
                                 chunk.data().file_name(), "' at ",
                                 chunk.data().offset())
                  : std::string("another header")));
    }
    absl::Status written;
    if (!WithHandler([&](raft::TransportHandler&) {
          written = partial->sink->Write(file.name, chunk.data().data());
        })) {
      return stopped();
    }
    if (!written.ok()) {
      release(false);
      return ToGrpc(written);
    }
    partial->offset += chunk.data().data().size();
    Add(counters_.snapshot_bytes_received, chunk.data().data().size());
    partial->SkipCompleteFiles();
  }
  absl::Status finished;
  if (!WithHandler([&](raft::TransportHandler&) {
        finished = partial->sink->Finish();
      })) {
    return stopped();
  }
  release(false);
  reply.mutable_result()->set_code(static_cast<int32_t>(finished.code()));
  reply.mutable_result()->set_error(std::string(finished.message()));
  stream->Write(reply);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------

GrpcTransport::GrpcTransport(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

GrpcTransport::~GrpcTransport() { Stop(); }

absl::StatusOr<std::unique_ptr<GrpcTransport>> GrpcTransport::Create(
    const GrpcTransportOptions& options) {
  if (absl::Status status = ValidateGrpcTransportOptions(options);
      !status.ok()) {
    return status;
  }
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status status = impl->Listen(); !status.ok()) return status;
  return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(impl)));
}

int GrpcTransport::port() const { return impl_->port(); }

void GrpcTransport::SetPeerAddress(NodeId peer, std::string address) {
  impl_->SetPeerAddress(peer, std::move(address));
}

absl::Status GrpcTransport::Start(NodeId self,
                                  raft::TransportHandler* handler) {
  return impl_->Start(self, handler);
}

void GrpcTransport::Stop() { impl_->Stop(); }

void GrpcTransport::Send(std::vector<raft::Message>& messages) {
  impl_->Send(messages);
}

void GrpcTransport::SendServerMessage(raft::ServerMessage message) {
  impl_->SendServerMessage(std::move(message));
}

void GrpcTransport::SendSnapshot(raft::OutgoingSnapshot snapshot,
                                 std::function<void(absl::Status)> done) {
  impl_->SendSnapshot(std::move(snapshot), std::move(done));
}

raft::TransportCounters GrpcTransport::Counters() const {
  return impl_->Counters();
}

}  // namespace driftwood::rpc
