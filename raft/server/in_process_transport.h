// Driftwood: InProcessNetwork, a Transport (raft/transport.h) between nodes
// of one process, with fault injection, for threaded tests and benchmarks.
//
// Delivery. Every node id that was ever started has one delivery thread of
// the network's. HandleMessages, HandleServerMessage and ReportUnreachable
// run on the receiving node's delivery thread (snapshot stream calls on a
// stream worker, see below): never on a sender's thread, and never with a
// network lock held. Raft and server messages from one sender to one
// receiver share one queue and arrive in the order sent, or not at all. The
// Raft messages due for a receiver are handed over in one HandleMessages
// call (each sender's in order, at most Options::max_batch), followed by the
// server messages due.
//
// Loss. A message ("message" counts Raft and server messages alike) is lost
//  * when its receiver is not started, or its sender→receiver queue already
//    holds Options::max_queued messages: the sender's handler is told
//    ReportUnreachable(receiver), from the sender's delivery thread, at most
//    once per peer per Options::unreachable_interval;
//  * silently, when a LinkFaults drop hits it, when the link is cut (see
//    Partition) at send time or when it is due, and when its receiver stops
//    before it is delivered (Stop discards the messages queued for a node).
// Messages a node sent before it stopped are still delivered.
//
// Snapshot streams run on a worker thread per sender→receiver pair, one
// stream of a pair after the other, so a stream never holds up messages.
// A stream calls the receiver's ReceiveSnapshot, writes each file of the
// manifest in order in chunks of Options::snapshot_chunk_bytes (a file of
// size 0 gets no Write), then calls Finish, whose status goes to `done`. The
// transport does not deliver the InstallSnapshot message itself: the
// receiver's Finish hands it to its core. Exactly `size` bytes (the
// manifest's) of each file are sent; a missing file fails the stream with
// the open error (NotFound), a file shorter than the manifest with DataLoss,
// and a sink error with that error. Before the start, before every chunk
// and before Finish the stream checks the link: a cut link or a receiver
// that is not started fails it with Unavailable, and each check is lost with
// the link's drop probability (Unavailable). A stream that fails after the
// sink was created destroys the sink without Finish. A stopped sender fails
// its streams with Cancelled. Delays and duplicates do not apply to streams.
//
// Determinism: every random choice comes from one generator seeded with
// Options::seed, drawn in the order messages are sent (and stream checks
// made); with one sending thread the same seed gives the same faults.
//
// Lifetimes: the network and its transports may be destroyed in either
// order. Destroying the network stops its threads: streams in progress end
// with Cancelled, queued messages are discarded, and from then on its
// transports deliver nothing (Start fails, Send drops, SendSnapshot calls
// `done` with Cancelled on the caller's thread). The network must not be
// destroyed from a handler call or a `done` callback.
//
// Thread-safe: every method may be called from any thread, including from
// handler calls.
#ifndef DRIFTWOOD_RAFT_SERVER_IN_PROCESS_TRANSPORT_H_
#define DRIFTWOOD_RAFT_SERVER_IN_PROCESS_TRANSPORT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "raft/core/types.h"
#include "raft/transport.h"

namespace driftwood::raft {

namespace in_process_internal {
class Medium;
}  // namespace in_process_internal

// The faults of one direction of a link, applied to each message when it is
// sent.
struct LinkFaults {
  // Probability that a message is lost. In [0, 1].
  double drop = 0;
  // Probability that a message is delivered twice (both copies in order).
  // In [0, 1].
  double duplicate = 0;
  // Each message is due a uniformly drawn delay in [min_delay,
  // max(min_delay, max_delay)] after it is sent, but never before an earlier
  // message of the same sender→receiver pair: due = max(now + delay, the
  // previous one's due). min_delay >= 0.
  absl::Duration min_delay = absl::ZeroDuration();
  absl::Duration max_delay = absl::ZeroDuration();

  bool operator==(const LinkFaults&) const = default;
};

class InProcessNetwork {
 public:
  struct Options {
    // Seeds the generator of every random choice.
    uint64_t seed = 1;
    // The most messages one sender→receiver queue holds. Greater than 0.
    size_t max_queued = 10000;
    // The most Raft messages in one HandleMessages call. Greater than 0.
    size_t max_batch = 1024;
    // The size of a snapshot stream's chunks. Greater than 0.
    size_t snapshot_chunk_bytes = 64 * 1024;
    // The least time between two ReportUnreachable calls for the same
    // sender and peer.
    absl::Duration unreachable_interval = absl::Milliseconds(10);
    // Messages due at once (no delay) are handed to the receiver on the
    // sender's thread when the receiver's delivery thread is idle, saving
    // two thread hand-offs per message; order per pair is kept (one
    // delivery round per receiver at a time). Handlers then also run on
    // senders' threads, inside Send: they must only queue work, never wait
    // for the sender (Server's handlers only queue).
    bool inline_delivery = false;
  };

  // Counters since the network was created. Every message sent is, at any
  // time, delivered, dropped or queued, so that
  // sent + duplicated == delivered + dropped + queued.
  struct Stats {
    // Messages passed to Send and SendServerMessage.
    uint64_t sent = 0;
    // Messages handed to a handler.
    uint64_t delivered = 0;
    // Messages lost, for any reason.
    uint64_t dropped = 0;
    // Extra copies made by LinkFaults::duplicate.
    uint64_t duplicated = 0;
    // Messages waiting in queues now.
    uint64_t queued = 0;
    // The most messages any one sender→receiver queue ever held.
    uint64_t peak_queued = 0;
    // ReportUnreachable calls made.
    uint64_t unreachable_reports = 0;
    // Snapshot streams whose `done` got OK, and the others.
    uint64_t snapshots_sent = 0;
    uint64_t snapshots_failed = 0;
    // Stop calls that found their transport started, counted as the
    // transport stops sending and receiving (before Stop waits for the
    // handler calls and streams in progress).
    uint64_t stops_begun = 0;

    bool operator==(const Stats&) const = default;
  };

  explicit InProcessNetwork(uint64_t seed = 1);
  explicit InProcessNetwork(Options options);
  // Stops the network's threads (see "Lifetimes" above).
  ~InProcessNetwork();

  InProcessNetwork(const InProcessNetwork&) = delete;
  InProcessNetwork& operator=(const InProcessNetwork&) = delete;

  // A new endpoint on this network. Start registers it as its node; one
  // started transport per node id at a time (Start of a second one fails
  // with AlreadyExists until the first is stopped). A restarted node uses a
  // new transport: a transport is started at most once.
  //
  // Stop of either end of a snapshot stream returns after the stream's
  // `done` ran. So a transport's Stop must not be called from a call into
  // its own handler, nor from the `done` of a stream it sends or receives
  // (it would wait for itself). Destroying a transport stops it.
  std::unique_ptr<Transport> CreateTransport();

  // Sets the faults of every link, replacing every SetLinkFaults.
  void SetFaults(LinkFaults faults);
  // Sets the faults of the link from `from` to `to` (one direction).
  void SetLinkFaults(NodeId from, NodeId to, LinkFaults faults);

  // Cuts the links between nodes of different groups, both ways, replacing
  // the previous Partition (Isolate and BlockOneWay stay). Nodes listed in no
  // group form one more group together. REQUIRES: no node is listed twice.
  void Partition(std::vector<std::vector<NodeId>> groups);
  // Cuts every link to and from `node`.
  void Isolate(NodeId node);
  // Cuts the link from `from` to `to`; the link from `to` to `from` stays.
  void BlockOneWay(NodeId from, NodeId to);
  // Removes every cut (Partition, Isolate, BlockOneWay); faults stay.
  void Heal();
  // Heal, and every link's faults back to none.
  void ClearFaults();

  Stats stats() const;

  // For tests of inline_delivery: whether `node`'s delivery thread waits
  // with nothing queued for it and no sender's round in progress, the state
  // in which a Send's round runs on the sender's thread. False for a node
  // never started.
  bool DeliveryIdleForTesting(NodeId node) const;

 private:
  std::shared_ptr<in_process_internal::Medium> medium_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_IN_PROCESS_TRANSPORT_H_
