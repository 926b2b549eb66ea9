// Driftwood: what the etcd services of driftwood-kv (examples/kv) share: the
// replica they serve, etcd's error mapping, and the propose and read paths
// that answer a unary call.
#ifndef DRIFTWOOD_EXAMPLES_KV_SERVICE_CONTEXT_H_
#define DRIFTWOOD_EXAMPLES_KV_SERVICE_CONTEXT_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "examples/kv/kv_server.h"
#include "examples/kv/lessor.h"
#include "examples/kv/metrics.h"
#include "raft/server/server.h"
#include "rpc/call_queue.h"
#include "statemachine/mvcc/mvcc_state_machine.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/mvcc/watch_hub.h"

namespace driftwood::kv {

using mvcc::MvccCommand;
using mvcc::MvccQuery;
using mvcc::MvccResult;

// etcd's default --quota-backend-bytes.
inline constexpr int64_t kDefaultQuotaBytes = int64_t{2} << 30;
// Requests without a deadline get this one.
inline constexpr absl::Duration kDefaultRequestTimeout = absl::Seconds(10);

// What etcd answers for the runtime's outcomes (etcdserver/errors.go,
// v3rpc/rpctypes).
inline grpc::Status ToEtcdError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrContains(status.message(), "leader")
                              ? "etcdserver: no leader"
                              : "etcdserver: leader changed");
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: request timed out");
    case absl::StatusCode::kResourceExhausted:
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "etcdserver: too many requests");
    case absl::StatusCode::kCancelled:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "etcdserver: server stopped");
    case absl::StatusCode::kInvalidArgument:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          mvcc::mvcc_errors::kRequestTooLarge);
    default:
      return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                          std::string(status.message()));
  }
}

inline grpc::Status ResultError(const MvccResult& result) {
  return grpc::Status(static_cast<grpc::StatusCode>(result.code()),
                      result.message());
}

inline grpc::Status Unimplemented(const char* what) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      absl::StrCat("driftwood: ", what,
                                   " is not implemented yet by this server"));
}

inline absl::Time Deadline(const grpc::ServerContextBase* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::Now() + kDefaultRequestTimeout;
  }
  return std::min(absl::FromChrono(deadline),
                  absl::Now() + kDefaultRequestTimeout);
}

inline int64_t FolderBytes(const std::filesystem::path& folder) {
  std::error_code error;
  int64_t bytes = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(folder, error);
       !error && it != std::filesystem::recursive_directory_iterator();
       it.increment(error)) {
    // RocksDB removes obsolete files while this walks the folder: a file
    // gone meanwhile counts nothing and the walk goes on.
    std::error_code file_error;
    if (it->is_regular_file(file_error)) {
      const std::uintmax_t size = it->file_size(file_error);
      if (!file_error) bytes += static_cast<int64_t>(size);
    }
  }
  return bytes;
}

// What every service needs: the replica and the member table.
struct Context {
  const KvServerOptions& options;
  raft::Server* server = nullptr;
  mvcc::MvccStateMachine* state_machine = nullptr;
  mvcc::WatchHub* watch_hub = nullptr;
  Lessor* lessor = nullptr;
  // Where client calls to other members complete.
  rpc::CallQueue* call_queue = nullptr;
  uint64_t member_id = 0;
  mutable RequestMetrics metrics;
  // Since when (steady clock, in ms) this member has known no leader; 0
  // while it knows one. Kept by the server's lease loop.
  mutable std::atomic<int64_t> leaderless_since_ms{0};
  // Open watch streams and the watchers on them (for /metrics).
  mutable std::atomic<int64_t> watch_streams{0};
  mutable std::atomic<int64_t> watchers{0};

  // The store's files, measured at most once a second.
  int64_t StoreBytes() const {
    std::lock_guard<std::mutex> lock(size_mu);
    const absl::Time now = absl::Now();
    if (now - size_measured >= absl::Seconds(1)) {
      size_bytes = FolderBytes(options.data_dir / "mvcc");
      size_measured = now;
    }
    return size_bytes;
  }

  // etcd's quota: a request that would add data is refused once the store
  // exceeds it, and the NOSPACE alarm is raised through the log so that
  // every member refuses writes until it is disarmed.
  bool OverQuota(const MvccCommand& command) const {
    if (!command.has_put() && !command.has_txn()) return false;
    const int64_t quota = options.quota_backend_bytes > 0
                              ? options.quota_backend_bytes
                              : kDefaultQuotaBytes;
    if (StoreBytes() <= quota) return false;
    {
      // One alarm proposal per second is enough; the state machine refuses
      // writes on every member once it is applied.
      std::lock_guard<std::mutex> lock(size_mu);
      const absl::Time now = absl::Now();
      if (now - alarm_proposed < absl::Seconds(1)) return true;
      alarm_proposed = now;
    }
    MvccCommand alarm;
    alarm.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
    alarm.mutable_alarm()->set_memberid(member_id);
    alarm.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
    server->Propose(alarm.SerializeAsString(),
                    absl::Now() + kDefaultRequestTimeout,
                    [](absl::StatusOr<std::string>) {});
    return true;
  }

  void FillHeader(etcdserverpb::ResponseHeader* header) const {
    header->set_cluster_id(server->cluster_id());
    header->set_member_id(member_id);
    header->set_raft_term(server->term().value());
  }

  // Replicates `command`; `respond` turns a successful result into the
  // response. Any error finishes the call with etcd's code and message.
  template <typename Respond>
  rpc::UnaryReactor* Propose(rpc::UnaryServerContext* context, Method method,
                             const MvccCommand& command,
                             Respond respond) const {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    const absl::Time start = absl::Now();
    if (OverQuota(command)) {
      metrics.Record(method, absl::Now() - start, false);
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   mvcc::mvcc_errors::kNoSpace));
      return reactor;
    }
    std::string bytes = command.SerializeAsString();
    if (bytes.size() > mvcc::kMaxRequestBytes) {
      metrics.Record(method, absl::Now() - start, false);
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   mvcc::mvcc_errors::kRequestTooLarge));
      return reactor;
    }
    server->Propose(std::move(bytes), Deadline(context),
                    [this, reactor, respond, method,
                     start](absl::StatusOr<std::string> out) {
                      Complete(reactor, out, respond, method, start);
                    });
    return reactor;
  }

  // Answers `query` (linearizably unless `serializable`).
  template <typename Respond>
  rpc::UnaryReactor* Read(rpc::UnaryServerContext* context, Method method,
                          const MvccQuery& query, bool serializable,
                          Respond respond) const {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    const absl::Time start = absl::Now();
    auto done = [this, reactor, respond, method,
                 start](absl::StatusOr<std::string> out) {
      Complete(reactor, out, respond, method, start);
    };
    if (serializable) {
      server->ReadLocal(query.SerializeAsString(), std::move(done));
    } else {
      server->Read(query.SerializeAsString(), Deadline(context),
                   std::move(done));
    }
    return reactor;
  }

  template <typename Respond>
  void Complete(rpc::UnaryReactor* reactor,
                const absl::StatusOr<std::string>& out, const Respond& respond,
                Method method, absl::Time start) const {
    grpc::Status status = grpc::Status::OK;
    MvccResult result;
    if (!out.ok()) {
      status = ToEtcdError(out.status());
    } else if (!result.ParseFromString(*out)) {
      status = grpc::Status(grpc::StatusCode::INTERNAL,
                            "driftwood: an unreadable result");
    } else if (result.code() != 0) {
      status = ResultError(result);
    } else {
      respond(result);
    }
    metrics.Record(method, absl::Now() - start, status.ok());
    reactor->Finish(status);
  }

  mutable std::mutex size_mu;
  mutable absl::Time size_measured = absl::InfinitePast();   // size_mu
  mutable int64_t size_bytes = 0;                            // size_mu
  mutable absl::Time alarm_proposed = absl::InfinitePast();  // size_mu
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_SERVICE_CONTEXT_H_
