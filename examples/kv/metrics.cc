#include "examples/kv/metrics.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace driftwood::kv {

namespace {

constexpr const char* kMethodNames[] = {
    "Range",      "Put",         "DeleteRange",     "Txn",         "Compact",
    "Status",     "HashKV",      "Alarm",           "Defragment",  "MemberList",
    "LeaseGrant", "LeaseRevoke", "LeaseTimeToLive", "LeaseLeases", "Snapshot",
    "Lock",       "Unlock"};
static_assert(std::size(kMethodNames) == static_cast<size_t>(Method::kCount));

void Metric(std::string& out, const char* name, const char* type,
            const char* help, double value) {
  absl::StrAppendFormat(&out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name,
                        help, name, type, name, value);
}

}  // namespace

void RequestMetrics::Record(Method method, absl::Duration latency, bool ok) {
  PerMethod& m = methods_[static_cast<size_t>(method)];
  constexpr auto kRelaxed = std::memory_order_relaxed;
  m.requests.fetch_add(1, kRelaxed);
  if (!ok) m.errors.fetch_add(1, kRelaxed);
  m.latency_micros.fetch_add(static_cast<uint64_t>(std::max<int64_t>(
                                 0, absl::ToInt64Microseconds(latency))),
                             kRelaxed);
  const double seconds = absl::ToDoubleSeconds(latency);
  size_t bucket = 0;
  while (bucket < kBucketSeconds.size() && seconds > kBucketSeconds[bucket]) {
    ++bucket;
  }
  m.buckets[bucket].fetch_add(1, kRelaxed);
}

std::string RequestMetrics::Render(const raft::NodeStatus& status) const {
  std::string out;
  constexpr auto kRelaxed = std::memory_order_relaxed;
  out +=
      "# HELP driftwood_grpc_requests_total Client requests by method.\n"
      "# TYPE driftwood_grpc_requests_total counter\n";
  for (size_t i = 0; i < methods_.size(); ++i) {
    absl::StrAppend(&out, "driftwood_grpc_requests_total{method=\"",
                    kMethodNames[i], "\"} ",
                    methods_[i].requests.load(kRelaxed), "\n");
  }
  out +=
      "# HELP driftwood_grpc_request_errors_total Client requests that failed, "
      "by method.\n"
      "# TYPE driftwood_grpc_request_errors_total counter\n";
  for (size_t i = 0; i < methods_.size(); ++i) {
    absl::StrAppend(&out, "driftwood_grpc_request_errors_total{method=\"",
                    kMethodNames[i], "\"} ", methods_[i].errors.load(kRelaxed),
                    "\n");
  }
  out +=
      "# HELP driftwood_grpc_request_duration_seconds Client request latency "
      "by method.\n"
      "# TYPE driftwood_grpc_request_duration_seconds histogram\n";
  for (size_t i = 0; i < methods_.size(); ++i) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kBucketSeconds.size(); ++b) {
      cumulative += methods_[i].buckets[b].load(kRelaxed);
      const std::string le = b < kBucketSeconds.size()
                                 ? absl::StrFormat("%g", kBucketSeconds[b])
                                 : std::string("+Inf");
      absl::StrAppend(
          &out, "driftwood_grpc_request_duration_seconds_bucket{method=\"",
          kMethodNames[i], "\",le=\"", le, "\"} ", cumulative, "\n");
    }
    absl::StrAppendFormat(
        &out,
        "driftwood_grpc_request_duration_seconds_sum{method=\"%s\"} %.6f\n"
        "driftwood_grpc_request_duration_seconds_count{method=\"%s\"} %d\n",
        kMethodNames[i],
        static_cast<double>(methods_[i].latency_micros.load(kRelaxed)) / 1e6,
        kMethodNames[i], cumulative);
  }
  const raft::RuntimeCounters& c = status.counters;
  const raft::TransportCounters& t = status.transport;
  const auto d = [](uint64_t v) { return static_cast<double>(v); };
  Metric(out, "driftwood_raft_term", "gauge", "The current term.",
         d(status.term.value()));
  Metric(out, "driftwood_raft_is_leader", "gauge", "1 when this node leads.",
         status.role == raft::Role::kLeader ? 1 : 0);
  Metric(out, "driftwood_raft_has_leader", "gauge", "1 when a leader is known.",
         status.leader == raft::kNoNode ? 0 : 1);
  Metric(out, "driftwood_raft_commit_index", "gauge", "The commit index.",
         d(status.commit.value()));
  Metric(out, "driftwood_raft_applied_index", "gauge", "The applied index.",
         d(status.applied.value()));
  Metric(out, "driftwood_raft_apply_lag", "gauge",
         "Entries committed but not applied.", d(c.apply_lag));
  Metric(out, "driftwood_raft_fsyncs_total", "counter", "Synced log writes.",
         d(c.fsyncs));
  Metric(out, "driftwood_raft_fsync_seconds_total", "counter",
         "Time spent in synced log writes.", d(c.fsync_micros) / 1e6);
  Metric(out, "driftwood_raft_entries_persisted_total", "counter",
         "Entries written to the log.", d(c.entries_persisted));
  Metric(out, "driftwood_raft_apply_batches_total", "counter",
         "State machine applies of committed entries.", d(c.apply_batches));
  Metric(out, "driftwood_raft_entries_applied_total", "counter",
         "Committed entries applied to the state machine.",
         d(c.entries_applied));
  Metric(out, "driftwood_raft_elections_total", "counter",
         "Times this node became a candidate.", d(c.elections));
  Metric(out, "driftwood_raft_leader_changes_total", "counter",
         "Leader changes seen.", d(c.leader_changes));
  Metric(out, "driftwood_raft_proposals_ok_total", "counter",
         "Proposals applied.", d(c.proposals_ok));
  Metric(out, "driftwood_raft_proposals_failed_total", "counter",
         "Proposals that failed, any outcome.",
         d(c.proposals_aborted + c.proposals_unavailable +
           c.proposals_resource_exhausted + c.proposals_deadline_exceeded +
           c.proposals_cancelled + c.proposals_invalid));
  Metric(out, "driftwood_raft_proposals_forwarded_total", "counter",
         "Proposals forwarded to the leader.", d(c.proposals_forwarded));
  Metric(out, "driftwood_raft_reads_ok_total", "counter",
         "Linearizable reads answered.", d(c.reads_ok));
  Metric(out, "driftwood_raft_read_index_retries_total", "counter",
         "ReadIndex requests sent again for lack of an answer.",
         d(c.read_index_retries));
  Metric(out, "driftwood_raft_snapshots_created_total", "counter",
         "Snapshots written.", d(c.snapshots_created));
  Metric(out, "driftwood_raft_snapshots_sent_total", "counter",
         "Snapshots streamed to followers.", d(c.snapshots_sent));
  Metric(out, "driftwood_raft_snapshots_received_total", "counter",
         "Snapshots installed from a leader.", d(c.snapshots_received));
  Metric(out, "driftwood_transport_messages_sent_total", "counter",
         "Messages handed to the network.", d(t.messages_sent));
  Metric(out, "driftwood_transport_messages_dropped_total", "counter",
         "Messages dropped before the network.", d(t.messages_dropped));
  Metric(out, "driftwood_transport_stream_failures_total", "counter",
         "Peer streams that ended with an error.", d(t.stream_failures));
  Metric(out, "driftwood_transport_refused_total", "counter",
         "Inbound envelopes refused (another cluster, unknown sender, "
         "malformed).",
         d(t.refused_cluster + t.refused_sender + t.refused_malformed));
  Metric(out, "driftwood_transport_snapshot_bytes_sent_total", "counter",
         "Snapshot bytes streamed out.", d(t.snapshot_bytes_sent));
  return out;
}

}  // namespace driftwood::kv
