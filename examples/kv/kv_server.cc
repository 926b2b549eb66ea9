#include "examples/kv/kv_server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "examples/kv/backup.h"
#include "examples/kv/lease_service.h"
#include "examples/kv/lessor.h"
#include "examples/kv/lock_service.h"
#include "examples/kv/metrics.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "examples/kv/service_context.h"
#include "examples/kv/watch_service.h"
#include "httplib.h"
#include "raft/server/node_runtime.h"
#include "raft/server/server.h"
#include "rpc/grpc_transport.h"
#include "statemachine/mvcc/mvcc_state_machine.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/mvcc/watch_hub.h"

namespace driftwood::kv {

namespace {

namespace fs = std::filesystem;

// The version Status reports: clients accept a server of API 3.4.
constexpr char kVersion[] = "3.4.0";
// gRPC's cap on a client message, as etcd's: the 1.5 MiB request limit plus
// 512 KiB.
constexpr int kMaxClientMessageBytes = 2 * 1024 * 1024;
absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the ", what, " file '", path, "'"));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

std::string UrlHostPort(const std::string& url, bool* tls) {
  for (const char* scheme : {"http://", "https://"}) {
    const std::string prefix(scheme);
    if (url.rfind(prefix, 0) == 0) {
      if (tls != nullptr) *tls = prefix == "https://";
      return url.substr(prefix.size());
    }
  }
  return "";
}

uint64_t MemberIdFor(const std::string& name) {
  // FNV-1a, 64 bits; never 0 (raft's "no node").
  uint64_t hash = 14695981039346656037ull;
  for (char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return hash == 0 ? 1 : hash;
}

namespace {

class KvService final {
 public:
  explicit KvService(const Context& context) : context_(context) {}

  etcdserverpb::KV::AsyncService async;
  void Serve(rpc::QueueServer& server) {
    using S = etcdserverpb::KV::AsyncService;
    rpc::ServeUnaryMember(server, &async, &S::RequestRange, this,
                          &KvService::Range);
    rpc::ServeUnaryMember(server, &async, &S::RequestPut, this,
                          &KvService::Put);
    rpc::ServeUnaryMember(server, &async, &S::RequestDeleteRange, this,
                          &KvService::DeleteRange);
    rpc::ServeUnaryMember(server, &async, &S::RequestTxn, this,
                          &KvService::Txn);
    rpc::ServeUnaryMember(server, &async, &S::RequestCompact, this,
                          &KvService::Compact);
  }

  rpc::UnaryReactor* Range(rpc::UnaryServerContext* context,
                           const etcdserverpb::RangeRequest* request,
                           etcdserverpb::RangeResponse* response) {
    if (absl::Status status = mvcc::ValidateRange(*request); !status.ok()) {
      return Refuse(context, status);
    }
    MvccQuery query;
    *query.mutable_range() = *request;
    return context_.Read(context, Method::kRange, query,
                         request->serializable(),
                         [this, response](MvccResult& result) {
                           *response = std::move(*result.mutable_range());
                           context_.FillHeader(response->mutable_header());
                         });
  }

  rpc::UnaryReactor* Put(rpc::UnaryServerContext* context,
                         const etcdserverpb::PutRequest* request,
                         etcdserverpb::PutResponse* response) {
    if (absl::Status status = mvcc::ValidatePut(*request); !status.ok()) {
      return Refuse(context, status);
    }
    MvccCommand command;
    *command.mutable_put() = *request;
    return context_.Propose(context, Method::kPut, command,
                            [this, response](MvccResult& result) {
                              *response = std::move(*result.mutable_put());
                              context_.FillHeader(response->mutable_header());
                            });
  }

  rpc::UnaryReactor* DeleteRange(
      rpc::UnaryServerContext* context,
      const etcdserverpb::DeleteRangeRequest* request,
      etcdserverpb::DeleteRangeResponse* response) {
    if (absl::Status status = mvcc::ValidateDeleteRange(*request);
        !status.ok()) {
      return Refuse(context, status);
    }
    MvccCommand command;
    *command.mutable_delete_range() = *request;
    return context_.Propose(context, Method::kDeleteRange, command,
                            [this, response](MvccResult& result) {
                              *response =
                                  std::move(*result.mutable_delete_range());
                              context_.FillHeader(response->mutable_header());
                            });
  }

  rpc::UnaryReactor* Txn(rpc::UnaryServerContext* context,
                         const etcdserverpb::TxnRequest* request,
                         etcdserverpb::TxnResponse* response) {
    if (absl::Status status = mvcc::ValidateTxn(*request); !status.ok()) {
      return Refuse(context, status);
    }
    MvccCommand command;
    *command.mutable_txn() = *request;
    return context_.Propose(context, Method::kTxn, command,
                            [this, response](MvccResult& result) {
                              *response = std::move(*result.mutable_txn());
                              context_.FillHeader(response->mutable_header());
                            });
  }

  rpc::UnaryReactor* Compact(rpc::UnaryServerContext* context,
                             const etcdserverpb::CompactionRequest* request,
                             etcdserverpb::CompactionResponse* response) {
    MvccCommand command;
    *command.mutable_compact() = *request;
    return context_.Propose(context, Method::kCompact, command,
                            [this, response](MvccResult& result) {
                              *response = std::move(*result.mutable_compact());
                              context_.FillHeader(response->mutable_header());
                            });
  }

 private:
  static rpc::UnaryReactor* Refuse(rpc::UnaryServerContext* context,
                                   const absl::Status& status) {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                                 std::string(status.message())));
    return reactor;
  }

  const Context& context_;
};

// Maintenance.Snapshot: the store's data at one consistent point, written
// to SST files in a folder of its own under the data folder (on a thread of
// its own: it can take a while), then streamed in 1 MiB pieces in the
// backup format (backup.h). The folder is removed when the call ends.
class BackupStream final
    : public rpc::ServerWriteReactor<etcdserverpb::SnapshotResponse> {
 public:
  explicit BackupStream(const Context& context)
      : context_(context), start_(absl::Now()) {
    std::thread([this] { Prepare(); }).detach();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    SendNext();
  }
  void OnDone() override {
    std::error_code error;
    if (!folder_.empty()) fs::remove_all(folder_, error);
    delete this;
  }

 private:
  void Prepare() {
    static std::atomic<uint64_t> sequence{0};
    folder_ = context_.options.data_dir /
              absl::StrCat("backup-", getpid(), "-", sequence.fetch_add(1));
    std::error_code error;
    fs::remove_all(folder_, error);
    fs::create_directories(folder_, error);
    if (error) {
      Done(grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("cannot create ", folder_.string(), ": ",
                                     error.message())));
      return;
    }
    absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> data =
        context_.state_machine->CaptureData();
    absl::Status status = data.status();
    if (status.ok()) status = (*data)->WriteTo(folder_);
    if (status.ok()) {
      absl::StatusOr<std::unique_ptr<BackupWriter>> writer =
          BackupWriter::Open(folder_);
      status = writer.status();
      if (status.ok()) writer_ = *std::move(writer);
    }
    if (!status.ok()) {
      Done(grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(status.message())));
      return;
    }
    spdlog::info("backup: streaming {} bytes", writer_->total_bytes());
    SendNext();
  }

  void SendNext() {
    absl::StatusOr<std::string> chunk = writer_->Next(1 << 20);
    if (!chunk.ok()) {
      Done(grpc::Status(grpc::StatusCode::INTERNAL,
                        std::string(chunk.status().message())));
      return;
    }
    if (chunk->empty()) {
      Done(grpc::Status::OK);
      return;
    }
    response_.Clear();
    context_.FillHeader(response_.mutable_header());
    response_.set_remaining_bytes(writer_->remaining_bytes());
    *response_.mutable_blob() = *std::move(chunk);
    StartWrite(&response_);
  }

  void Done(grpc::Status status) {
    context_.metrics.Record(Method::kSnapshot, absl::Now() - start_,
                            status.ok());
    Finish(std::move(status));
  }

  const Context& context_;
  const absl::Time start_;
  fs::path folder_;
  std::unique_ptr<BackupWriter> writer_;
  etcdserverpb::SnapshotResponse response_;
};

class MaintenanceService final {
 public:
  explicit MaintenanceService(const Context& context) : context_(context) {}

  etcdserverpb::Maintenance::AsyncService async;
  void Serve(rpc::QueueServer& server) {
    using S = etcdserverpb::Maintenance::AsyncService;
    using M = MaintenanceService;
    rpc::ServeUnaryMember(server, &async, &S::RequestAlarm, this, &M::Alarm);
    rpc::ServeUnaryMember(server, &async, &S::RequestStatus, this, &M::Status);
    rpc::ServeUnaryMember(server, &async, &S::RequestDefragment, this,
                          &M::Defragment);
    rpc::ServeUnaryMember(server, &async, &S::RequestHash, this, &M::Hash);
    rpc::ServeUnaryMember(server, &async, &S::RequestHashKV, this, &M::HashKV);
    rpc::ServeUnaryMember(server, &async, &S::RequestMoveLeader, this,
                          &M::MoveLeader);
    rpc::ServeServerStreaming(
        server, &async, &S::RequestSnapshot,
        [this](grpc::ServerContext* call,
               const etcdserverpb::SnapshotRequest* request) {
          return Snapshot(call, request);
        });
  }

  rpc::UnaryReactor* Status(rpc::UnaryServerContext* context,
                            const etcdserverpb::StatusRequest*,
                            etcdserverpb::StatusResponse* response) {
    const absl::Time start = absl::Now();
    const raft::NodeStatus status = context_.server->Status();
    response->set_version(kVersion);
    response->set_dbsize(FolderBytes(context_.options.data_dir / "mvcc"));
    response->set_dbsizeinuse(response->dbsize());
    response->set_leader(status.leader.value());
    response->set_raftindex(status.commit.value());
    response->set_raftterm(status.term.value());
    response->set_raftappliedindex(status.applied.value());
    context_.FillHeader(response->mutable_header());
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    // The header's revision is the store's; active alarms are errors, as
    // etcd lists them.
    MvccQuery query;
    query.mutable_alarms();
    context_.server->ReadLocal(
        query.SerializeAsString(),
        [this, reactor, response, start](absl::StatusOr<std::string> out) {
          context_.metrics.Record(Method::kStatus, absl::Now() - start, true);
          MvccResult result;
          if (out.ok() && result.ParseFromString(*out) && result.code() == 0) {
            response->mutable_header()->set_revision(
                result.alarm().header().revision());
            for (const etcdserverpb::AlarmMember& alarm :
                 result.alarm().alarms()) {
              response->add_errors(absl::StrCat(
                  "memberID:", alarm.memberid(),
                  " alarm:", etcdserverpb::AlarmType_Name(alarm.alarm()), " "));
            }
          }
          reactor->Finish(grpc::Status::OK);
        });
    return reactor;
  }

  rpc::UnaryReactor* HashKV(rpc::UnaryServerContext* context,
                            const etcdserverpb::HashKVRequest* request,
                            etcdserverpb::HashKVResponse* response) {
    MvccQuery query;
    *query.mutable_hash_kv() = *request;
    return context_.Read(context, Method::kHashKV, query, /*serializable=*/true,
                         [this, response](MvccResult& result) {
                           *response = std::move(*result.mutable_hash_kv());
                           context_.FillHeader(response->mutable_header());
                         });
  }

  rpc::UnaryReactor* Alarm(rpc::UnaryServerContext* context,
                           const etcdserverpb::AlarmRequest* request,
                           etcdserverpb::AlarmResponse* response) {
    // etcd answers Alarm without a header.
    const auto respond = [response](MvccResult& result) {
      *response = std::move(*result.mutable_alarm());
      response->clear_header();
    };
    if (request->action() == etcdserverpb::AlarmRequest::GET) {
      MvccQuery query;
      *query.mutable_alarms() = *request;
      return context_.Read(context, Method::kAlarm, query,
                           /*serializable=*/true, respond);
    }
    MvccCommand command;
    *command.mutable_alarm() = *request;
    return context_.Propose(context, Method::kAlarm, command, respond);
  }

  rpc::UnaryReactor* Defragment(rpc::UnaryServerContext* context,
                                const etcdserverpb::DefragmentRequest*,
                                etcdserverpb::DefragmentResponse* response) {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    const absl::Time start = absl::Now();
    absl::Status status = context_.state_machine->CompactStorage();
    context_.metrics.Record(Method::kDefragment, absl::Now() - start,
                            status.ok());
    if (!status.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL,
                                   std::string(status.message())));
      return reactor;
    }
    context_.FillHeader(response->mutable_header());
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  rpc::UnaryReactor* Hash(rpc::UnaryServerContext* context,
                          const etcdserverpb::HashRequest*,
                          etcdserverpb::HashResponse*) {
    return Finish(context, Unimplemented("Maintenance.Hash (use HashKV)"));
  }
  rpc::UnaryReactor* MoveLeader(rpc::UnaryServerContext* context,
                                const etcdserverpb::MoveLeaderRequest*,
                                etcdserverpb::MoveLeaderResponse*) {
    return Finish(context, Unimplemented("Maintenance.MoveLeader"));
  }
  rpc::ServerWriteReactor<etcdserverpb::SnapshotResponse>* Snapshot(
      grpc::ServerContext*, const etcdserverpb::SnapshotRequest*) {
    return new BackupStream(context_);
  }

 private:
  static rpc::UnaryReactor* Finish(rpc::UnaryServerContext* context,
                                   grpc::Status status) {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(std::move(status));
    return reactor;
  }

  const Context& context_;
};

class ClusterService final {
 public:
  explicit ClusterService(const Context& context) : context_(context) {}

  etcdserverpb::Cluster::AsyncService async;
  void Serve(rpc::QueueServer& server) {
    using S = etcdserverpb::Cluster::AsyncService;
    using C = ClusterService;
    rpc::ServeUnaryMember(server, &async, &S::RequestMemberAdd, this,
                          &C::MemberAdd);
    rpc::ServeUnaryMember(server, &async, &S::RequestMemberRemove, this,
                          &C::MemberRemove);
    rpc::ServeUnaryMember(server, &async, &S::RequestMemberUpdate, this,
                          &C::MemberUpdate);
    rpc::ServeUnaryMember(server, &async, &S::RequestMemberList, this,
                          &C::MemberList);
    rpc::ServeUnaryMember(server, &async, &S::RequestMemberPromote, this,
                          &C::MemberPromote);
  }

  rpc::UnaryReactor* MemberList(rpc::UnaryServerContext* context,
                                const etcdserverpb::MemberListRequest*,
                                etcdserverpb::MemberListResponse* response) {
    // Names and peer URLs come from the configuration; client URLs from what
    // each member published through the log when it started.
    MvccQuery query;
    query.mutable_members();
    return context_.Read(
        context, Method::kMemberList, query, /*serializable=*/true,
        [this, response](MvccResult& result) {
          std::map<uint64_t, etcdserverpb::Member> members;
          for (const auto& [name, peer_url] :
               context_.options.initial_cluster) {
            etcdserverpb::Member& member = members[MemberIdFor(name)];
            member.set_id(MemberIdFor(name));
            member.set_name(name);
            member.add_peerurls(peer_url);
          }
          for (const etcdserverpb::Member& published :
               result.member_list().members()) {
            auto it = members.find(published.id());
            if (it == members.end()) continue;
            *it->second.mutable_clienturls() = published.clienturls();
          }
          for (auto& [id, member] : members) {
            *response->add_members() = std::move(member);
          }
          context_.FillHeader(response->mutable_header());
        });
  }

  rpc::UnaryReactor* MemberAdd(rpc::UnaryServerContext* context,
                               const etcdserverpb::MemberAddRequest*,
                               etcdserverpb::MemberAddResponse*) {
    return Refuse(context, "Cluster.MemberAdd");
  }
  rpc::UnaryReactor* MemberRemove(rpc::UnaryServerContext* context,
                                  const etcdserverpb::MemberRemoveRequest*,
                                  etcdserverpb::MemberRemoveResponse*) {
    return Refuse(context, "Cluster.MemberRemove");
  }
  rpc::UnaryReactor* MemberUpdate(rpc::UnaryServerContext* context,
                                  const etcdserverpb::MemberUpdateRequest*,
                                  etcdserverpb::MemberUpdateResponse*) {
    return Refuse(context, "Cluster.MemberUpdate");
  }
  rpc::UnaryReactor* MemberPromote(rpc::UnaryServerContext* context,
                                   const etcdserverpb::MemberPromoteRequest*,
                                   etcdserverpb::MemberPromoteResponse*) {
    return Refuse(context, "Cluster.MemberPromote");
  }

 private:
  static rpc::UnaryReactor* Refuse(rpc::UnaryServerContext* context,
                                   const char* what) {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Unimplemented(what));
    return reactor;
  }

  const Context& context_;
};

class AuthService final {
 public:
  etcdserverpb::Auth::AsyncService async;
  void Serve(rpc::QueueServer& server) {
    rpc::ServeUnaryMember(
        server, &async, &etcdserverpb::Auth::AsyncService::RequestAuthenticate,
        this, &AuthService::Authenticate);
  }

  rpc::UnaryReactor* Authenticate(rpc::UnaryServerContext* context,
                                  const etcdserverpb::AuthenticateRequest*,
                                  etcdserverpb::AuthenticateResponse*) {
    rpc::UnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "etcdserver: authentication is not enabled"));
    return reactor;
  }
};

}  // namespace

class KvServer::Impl : public mvcc::ApplyObserver {
 public:
  explicit Impl(const KvServerOptions& options)
      : options_(options), context_{options_} {}

  ~Impl() { Stop(); }

  absl::Status Start();
  void Stop();

  int client_port() const { return client_port_; }
  int metrics_port() const { return metrics_port_; }
  int peer_port() const { return transport_ ? transport_->port() : 0; }
  uint64_t member_id() const { return context_.member_id; }

  // The apply thread's news (mvcc::ApplyObserver).
  void OnApplied(mvcc::AppliedChanges changes) override {
    if (options_.before_observing_applied) options_.before_observing_applied();
    for (const auto& [id, ttl] : changes.granted_leases) {
      lessor_.Granted(id, ttl);
    }
    for (int64_t id : changes.revoked_leases) lessor_.Revoked(id);
    if (!watch_hub_.Publish(std::move(changes.events), changes.revision,
                            changes.compact_revision)) {
      spdlog::error(
          "watch hub: the batch ending at revision {} does not follow the "
          "previous one; watchers read the store for it",
          changes.revision);
    }
  }
  void OnRestored() override {
    watch_hub_.Reset();
    LoadLeases();
  }

 private:
  // The store's leases into the lessor.
  void LoadLeases();
  // /metrics lines for watches and leases (Prometheus text).
  std::string CoordinationMetrics() const;
  // The lessor's duties, once per tick: follow leadership (Promote/Demote),
  // propose the revokes of expired leases, and note since when no leader
  // is known.
  void LeaseLoop();
  absl::StatusOr<mvcc::EventsResponse> ReadEvents(
      const mvcc::EventsQuery& query) const;

  const KvServerOptions options_;
  Context context_;
  std::unique_ptr<rpc::GrpcTransport> transport_;
  // etcd's minimum TTL: 1.5 election timeouts, rounded up to seconds.
  Lessor lessor_{(3 * options_.election_ticks *
                      absl::ToInt64Milliseconds(options_.tick_interval) / 2 +
                  999) /
                 1000};
  mvcc::WatchHub watch_hub_{
      [this](const mvcc::EventsQuery& query) { return ReadEvents(query); },
      mvcc::WatchHubOptions{.ring_events = options_.watch_ring_events}};
  std::unique_ptr<mvcc::MvccStateMachine> state_machine_;
  std::unique_ptr<raft::Server> server_;
  KvService kv_{context_};
  MaintenanceService maintenance_{context_};
  ClusterService cluster_{context_};
  AuthService auth_;
  WatchService watch_{context_, options_.watch_progress_notify_interval};
  LeaseService lease_{context_};
  LeaseForwardingService lease_forwarding_{lease_};
  LockService lock_{context_};
  ElectionService election_{context_};
  std::thread lease_loop_;
  // Every gRPC call of this member completes on call_queue_
  // (rpc/call_queue.h); the transport shares it.
  std::shared_ptr<rpc::CallQueue> call_queue_ = rpc::CallQueue::Shared();
  std::unique_ptr<rpc::QueueServer> client_server_;
  int client_port_ = 0;
  bool stopped_ = false;

  // /metrics and /health over HTTP.
  absl::Status StartMetrics();
  httplib::Server metrics_http_;
  std::thread metrics_thread_;
  int metrics_port_ = 0;

  // Auto-compaction (the leader's): a thread that wakes every interval.
  void AutoCompactLoop();
  // Publishes this member's name and client URL through the log, retrying
  // until it is applied.
  void PublishLoop();
  std::thread publisher_;
  std::optional<int64_t> CurrentRevision();
  std::mutex compactor_mu_;
  std::condition_variable compactor_wake_;
  bool compactor_stop_ = false;  // guarded by compactor_mu_
  std::thread compactor_;
};

absl::StatusOr<mvcc::EventsResponse> KvServer::Impl::ReadEvents(
    const mvcc::EventsQuery& query) const {
  MvccQuery request;
  *request.mutable_events() = query;
  absl::StatusOr<std::string> out =
      state_machine_->Query(request.SerializeAsString());
  if (!out.ok()) return out.status();
  MvccResult result;
  if (!result.ParseFromString(*out)) {
    return absl::InternalError("mvcc: an unreadable events result");
  }
  if (result.code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(result.code()),
                        result.message());
  }
  return std::move(*result.mutable_events());
}

std::string KvServer::Impl::CoordinationMetrics() const {
  std::string out;
  const auto gauge = [&out](const char* name, const char* help, double value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name,
                    " gauge\n", name, " ", value, "\n");
  };
  gauge("driftwood_watch_streams", "Open Watch streams.",
        static_cast<double>(context_.watch_streams.load()));
  gauge("driftwood_watchers", "Watchers on the open Watch streams.",
        static_cast<double>(context_.watchers.load()));
  gauge("driftwood_watch_ring_events",
        "Events held in the watch hub's ring of applied batches.",
        static_cast<double>(watch_hub_.ring_events()));
  gauge("driftwood_watch_store_reads",
        "Watch reads served from the store's history (watchers behind the "
        "ring), since the start.",
        static_cast<double>(watch_hub_.store_reads()));
  gauge("driftwood_watch_hub_gaps",
        "Applied batches that did not follow the previous one in the watch "
        "hub (0 unless something is wrong; watchers then read the store).",
        static_cast<double>(watch_hub_.gaps()));
  gauge("driftwood_leases", "Leases this member knows.",
        static_cast<double>(lessor_.size()));
  gauge("driftwood_lessor_primary",
        "1 when this member's lessor decides expiry (the leader's).",
        lessor_.primary() ? 1 : 0);
  return out;
}

void KvServer::Impl::LoadLeases() {
  MvccQuery query;
  query.mutable_leases();
  absl::StatusOr<std::string> out =
      state_machine_->Query(query.SerializeAsString());
  MvccResult result;
  if (!out.ok() || !result.ParseFromString(*out) || result.code() != 0) {
    // Fatal: without the table, leases would never expire.
    spdlog::critical("cannot read the lease table: {}",
                     out.ok() ? result.message() : out.status().ToString());
    std::abort();
  }
  std::vector<std::pair<int64_t, int64_t>> leases;
  for (const auto& lease : result.leases().leases()) {
    leases.emplace_back(lease.id(), lease.ttl());
  }
  lessor_.Reset(leases);
}

void KvServer::Impl::LeaseLoop() {
  uint64_t promoted_term = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(compactor_mu_);
      compactor_wake_.wait_for(
          lock, absl::ToChronoNanoseconds(options_.tick_interval),
          [this] { return compactor_stop_; });
      if (compactor_stop_) return;
    }
    const raft::NodeStatus status = server_->Status();
    const int64_t now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now().time_since_epoch())
            .count();
    if (status.leader == raft::kNoNode) {
      int64_t expected = 0;
      context_.leaderless_since_ms.compare_exchange_strong(expected, now_ms);
    } else {
      context_.leaderless_since_ms.store(0);
    }
    if (status.role != raft::Role::kLeader) {
      if (lessor_.primary()) lessor_.Demote();
      continue;
    }
    if (!lessor_.primary() || promoted_term != status.term.value()) {
      lessor_.Promote();
      promoted_term = status.term.value();
    }
    // etcd revokes at most 1000 leases a second.
    const size_t limit = std::max<size_t>(
        1, static_cast<size_t>(1000 *
                               absl::ToDoubleSeconds(options_.tick_interval)));
    for (int64_t id : lessor_.TakeExpired(limit)) {
      MvccCommand command;
      command.mutable_lease_revoke()->set_id(id);
      server_->Propose(
          command.SerializeAsString(), absl::Now() + kDefaultRequestTimeout,
          [this, id](absl::StatusOr<std::string> out) {
            MvccResult result;
            if (!out.ok() || !result.ParseFromString(*out)) return;
            if (result.code() == 0) {
              spdlog::info("lease {:x} expired and was revoked", id);
            } else if (result.code() ==
                       static_cast<int>(absl::StatusCode::kNotFound)) {
              lessor_.Revoked(id);  // revoked meanwhile
            }
          });
    }
  }
}

absl::Status KvServer::Impl::StartMetrics() {
  if (options_.metrics_address.empty()) return absl::OkStatus();
  const size_t colon = options_.metrics_address.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options_.metrics_address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address '", options_.metrics_address, "' is not host:port"));
  }
  const std::string host = options_.metrics_address.substr(0, colon);
  metrics_http_.Get(
      "/metrics", [this](const httplib::Request&, httplib::Response& response) {
        response.set_content(
            context_.metrics.Render(server_->Status()) + CoordinationMetrics(),
            "text/plain; version=0.0.4");
      });
  // etcd's /health: healthy when a leader is known.
  metrics_http_.Get("/health", [this](const httplib::Request&,
                                      httplib::Response& response) {
    const bool healthy = server_->leader() != raft::kNoNode;
    response.status = healthy ? 200 : 503;
    response.set_content(healthy ? R"({"health":"true","reason":""})"
                                 : R"({"health":"false","reason":"no leader"})",
                         "application/json");
  });
  if (port == 0) {
    metrics_port_ = metrics_http_.bind_to_any_port(host);
  } else if (metrics_http_.bind_to_port(host, port)) {
    metrics_port_ = port;
  }
  if (metrics_port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for metrics on ", options_.metrics_address,
                     " (in use, or not an address of this host)"));
  }
  metrics_thread_ = std::thread([this] { metrics_http_.listen_after_bind(); });
  return absl::OkStatus();
}

void KvServer::Impl::PublishLoop() {
  MvccCommand command;
  command.mutable_publish()->set_id(context_.member_id);
  command.mutable_publish()->set_name(options_.name);
  command.mutable_publish()->add_clienturls(options_.advertise_client_url);
  for (;;) {
    std::promise<bool> applied;
    std::future<bool> done = applied.get_future();
    server_->Propose(command.SerializeAsString(),
                     absl::Now() + kDefaultRequestTimeout,
                     [&applied](absl::StatusOr<std::string> out) {
                       applied.set_value(out.ok());
                     });
    if (done.get()) {
      spdlog::info("member {} published its client URL {}", options_.name,
                   options_.advertise_client_url);
      return;
    }
    std::unique_lock<std::mutex> lock(compactor_mu_);
    compactor_wake_.wait_for(lock, std::chrono::milliseconds(500),
                             [this] { return compactor_stop_; });
    if (compactor_stop_) return;
  }
}

std::optional<int64_t> KvServer::Impl::CurrentRevision() {
  // A count-only Range of one key answers with the store's revision.
  MvccQuery query;
  query.mutable_range()->set_key(std::string(1, '\0'));
  query.mutable_range()->set_count_only(true);
  std::promise<absl::StatusOr<std::string>> answer;
  std::future<absl::StatusOr<std::string>> result = answer.get_future();
  server_->ReadLocal(query.SerializeAsString(),
                     [&answer](absl::StatusOr<std::string> out) {
                       answer.set_value(std::move(out));
                     });
  absl::StatusOr<std::string> out = result.get();
  MvccResult parsed;
  if (!out.ok() || !parsed.ParseFromString(*out) || parsed.code() != 0) {
    return std::nullopt;
  }
  return parsed.range().header().revision();
}

void KvServer::Impl::AutoCompactLoop() {
  const bool periodic = options_.auto_compaction_mode == "periodic";
  // Periodic: samples of (time, revision); compacts to the newest sample at
  // least retention_period old.
  std::deque<std::pair<absl::Time, int64_t>> samples;
  const absl::Duration interval =
      periodic ? std::clamp(options_.retention_period / 10, absl::Seconds(1),
                            absl::Hours(1))
               : options_.auto_compaction_interval;
  int64_t compacted = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(compactor_mu_);
      compactor_wake_.wait_for(lock, absl::ToChronoNanoseconds(interval),
                               [this] { return compactor_stop_; });
      if (compactor_stop_) return;
    }
    if (server_->Status().role != raft::Role::kLeader) continue;
    const std::optional<int64_t> revision = CurrentRevision();
    if (!revision) continue;
    int64_t target = 0;
    const absl::Time now = absl::Now();
    if (periodic) {
      samples.emplace_back(now, *revision);
      while (samples.size() > 1 &&
             samples[1].first <= now - options_.retention_period) {
        samples.pop_front();
      }
      if (samples.front().first <= now - options_.retention_period) {
        target = samples.front().second;
      }
    } else {
      target = *revision - options_.retention_revisions;
    }
    if (target <= compacted) continue;
    MvccCommand command;
    command.mutable_compact()->set_revision(target);
    server_->Propose(
        command.SerializeAsString(), now + kDefaultRequestTimeout,
        [target](absl::StatusOr<std::string> out) {
          MvccResult result;
          if (out.ok() && result.ParseFromString(*out) && result.code() == 0) {
            spdlog::info("auto-compaction: compacted to revision {}", target);
          }
        });
    compacted = target;
  }
}

absl::Status KvServer::Impl::Start() {
  const KvServerOptions& o = options_;
  if (o.name.empty()) return absl::InvalidArgumentError("--name is empty");
  if (!o.initial_cluster.contains(o.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--initial-cluster has no member named '", o.name,
                     "' (--name); list every member as name=http://host:port"));
  }
  std::vector<raft::NodeId> members;
  for (const auto& [name, url] : o.initial_cluster) {
    members.emplace_back(MemberIdFor(name));
  }
  context_.member_id = MemberIdFor(o.name);

  raft::ServerOptions server_options;
  server_options.id = raft::NodeId(context_.member_id);
  server_options.members = members;
  server_options.cluster_token = o.cluster_token;
  server_options.data_dir = o.data_dir / "raft";
  server_options.bootstrap = o.new_cluster;
  server_options.log_background_write_bytes_per_second =
      o.log_background_write_bytes_per_second;
  server_options.tick_interval = o.tick_interval;
  server_options.election_ticks = static_cast<uint64_t>(o.election_ticks);
  server_options.seed = context_.member_id;
  server_options.hold_proposals_in_flight = o.hold_proposals_in_flight;
  server_options.hand_over_before_persist = o.hand_over_before_persist;
  server_options.compaction.compact_every_entries = o.snapshot_count;
  server_options.compaction.trailing_entries = o.snapshot_catchup_entries;

  rpc::GrpcTransportOptions net;
  net.listen_address = o.peer_address;
  net.cluster_id = raft::ClusterIdFor(members, o.cluster_token);
  for (const auto& [name, url] : o.initial_cluster) {
    if (name != o.name) {
      net.peers[raft::NodeId(MemberIdFor(name))] = UrlHostPort(url);
    }
  }
  net.tls = {.cert_file = o.peer_cert_file,
             .key_file = o.peer_key_file,
             .ca_file = o.peer_trusted_ca_file};
  absl::StatusOr<std::unique_ptr<rpc::GrpcTransport>> transport =
      rpc::GrpcTransport::Create(net);
  if (!transport.ok()) {
    return absl::Status(transport.status().code(),
                        absl::StrCat("peer address ", o.peer_address, ": ",
                                     transport.status().message()));
  }
  transport_ = *std::move(transport);

  statemachine::RocksDbKvStateMachineOptions store;
  store.path = o.data_dir / "mvcc";
  store.background_write_bytes_per_second =
      o.store_background_write_bytes_per_second;
  state_machine_ = std::make_unique<mvcc::MvccStateMachine>(
      store, this, o.value_cache_bytes);
  absl::StatusOr<std::unique_ptr<raft::Server>> server =
      raft::Server::Start(server_options, *state_machine_, *transport_);
  if (!server.ok()) return server.status();
  server_ = *std::move(server);
  context_.server = server_.get();
  context_.state_machine = state_machine_.get();
  context_.watch_hub = &watch_hub_;
  context_.lessor = &lessor_;
  context_.call_queue = call_queue_.get();
  LoadLeases();

  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (!o.cert_file.empty() || !o.key_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(o.cert_file, "--cert-file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(o.key_file, "--key-file");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl(
        o.client_cert_auth
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    if (!o.trusted_ca_file.empty()) {
      absl::StatusOr<std::string> ca =
          ReadFile(o.trusted_ca_file, "--trusted-ca-file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.client_address, credentials, &client_port_);
  for (grpc::Service* service : std::initializer_list<grpc::Service*>{
           &kv_.async, &maintenance_.async, &cluster_.async, &auth_.async,
           &watch_.async, &lease_.async, &lease_forwarding_.async, &lock_.async,
           &election_.async}) {
    builder.RegisterService(service);
  }
  builder.SetMaxReceiveMessageSize(kMaxClientMessageBytes);
  // etcd allows a client ping every 5 s without data; gRPC's default would
  // answer an idle etcdctl watch with GOAWAY too_many_pings.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  client_server_ = call_queue_->BuildAndStart(builder);
  if (client_server_ == nullptr || client_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for clients on ", o.client_address,
                     " (in use, or not an address of this host)"));
  }
  kv_.Serve(*client_server_);
  maintenance_.Serve(*client_server_);
  cluster_.Serve(*client_server_);
  auth_.Serve(*client_server_);
  watch_.Serve(*client_server_);
  lease_.Serve(*client_server_);
  lease_forwarding_.Serve(*client_server_);
  lock_.Serve(*client_server_);
  election_.Serve(*client_server_);
  if (absl::Status status = StartMetrics(); !status.ok()) return status;
  const bool compacting =
      (o.auto_compaction_mode == "revision" && o.retention_revisions > 0) ||
      (o.auto_compaction_mode == "periodic" &&
       o.retention_period > absl::ZeroDuration());
  if (compacting) compactor_ = std::thread([this] { AutoCompactLoop(); });
  publisher_ = std::thread([this] { PublishLoop(); });
  lease_loop_ = std::thread([this] { LeaseLoop(); });
  spdlog::info("member {} ({:x}) serves clients on {} and peers on {}", o.name,
               context_.member_id, o.client_address, o.peer_address);
  return absl::OkStatus();
}

void KvServer::Impl::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lock(compactor_mu_);
    compactor_stop_ = true;
    compactor_wake_.notify_all();
  }
  if (compactor_.joinable()) compactor_.join();
  if (lease_loop_.joinable()) lease_loop_.join();
  if (metrics_thread_.joinable()) {
    metrics_http_.stop();
    metrics_thread_.join();
  }
  // The replica first: it completes every waiting request (Cancelled), so
  // the client server's Shutdown, which waits for every call in progress,
  // does not wait for request deadlines. Calls that arrive meanwhile are
  // refused by the stopped replica.
  if (server_ != nullptr) server_->Stop();
  // Calls forwarded to the leader are not the replica's: cancel them, for
  // a leader without a quorum would answer only at their deadline.
  lease_.leader().CancelForwarded();
  // Its waiting proposal completed (Cancelled) when the replica stopped.
  if (publisher_.joinable()) publisher_.join();
  if (client_server_ != nullptr) {
    client_server_->Shutdown(std::chrono::system_clock::now());
  }
  server_.reset();
  if (transport_ != nullptr) transport_->Stop();
}

KvServer::KvServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvServer::~KvServer() = default;

absl::StatusOr<std::unique_ptr<KvServer>> KvServer::Start(
    const KvServerOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status status = impl->Start(); !status.ok()) return status;
  return std::unique_ptr<KvServer>(new KvServer(std::move(impl)));
}

int KvServer::client_port() const { return impl_->client_port(); }
int KvServer::metrics_port() const { return impl_->metrics_port(); }
int KvServer::peer_port() const { return impl_->peer_port(); }
uint64_t KvServer::member_id() const { return impl_->member_id(); }
void KvServer::Stop() { impl_->Stop(); }

}  // namespace driftwood::kv
