#include "raft/server/server.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <variant>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "raft/util/thread_name.h"
#include "spdlog/spdlog.h"

namespace driftwood::raft {

namespace {

// A queue one thread pops everything from at once. Unbounded by itself:
// its producers bound what they put in (see each use).
template <typename T>
class TaskQueue {
 public:
  // `wake` false leaves a waiting consumer asleep: the item waits for the
  // next Push that wakes it (or Close), and is then taken in order.
  void Push(T item, bool wake = true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(item));
    }
    if (wake) ready_.notify_one();
  }
  // Waits for items or Close; false once closed and empty.
  bool PopAll(std::deque<T>& out) {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [this] { return closed_ || !items_.empty(); });
    if (items_.empty()) return false;
    out.swap(items_);
    return true;
  }
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<T> items_;  // guarded by mu_
  bool closed_ = false;  // guarded by mu_
};

}  // namespace

class Server::Impl {
 public:
  Impl(Server& server, const ServerOptions& options,
       StateMachine& state_machine, Transport& transport)
      : server_(server),
        options_(options),
        clock_(options.clock != nullptr ? *options.clock : SystemClock()),
        state_machine_(state_machine),
        transport_(transport) {}

  absl::Status Open();
  void Run();
  void Stop();

  // Lets `add` put work into the raft loop's inbox; false (without calling
  // it) once the server stops. `proposal`: `add` adds proposals only, which
  // do not wake a raft thread that holds proposals (HoldsProposals).
  bool Enqueue(absl::FunctionRef<void(RaftInput&)> add, bool proposal = false);
  // Admits one request of the API: refuses it at once (counted, on this
  // thread) when it has more than max_request_bytes or its kind's pending
  // limit is reached; otherwise returns `done` wrapped to release its slot
  // when it completes.
  std::optional<ResultCallback> Admit(uint64_t bytes, bool read,
                                      ResultCallback done);
  // Completes a request that was not queued with `status`.
  void Refuse(ResultCallback& done, absl::Status status, bool read);
  NodeStatus Status() const;
  void Fatal(const absl::Status& status);

  Server& server_;
  const ServerOptions& options_;
  Clock& clock_;
  StateMachine& state_machine_;
  Transport& transport_;

  std::unique_ptr<NodeRuntime> runtime_;
  // Stored by the apply thread whenever the applied index moves, before the
  // requests the applied entries answer complete.
  std::atomic<uint64_t> applied_index_{0};
  // published_.term and published_.leader, readable without status_mu_.
  std::atomic<uint64_t> published_term_{0};
  std::atomic<uint64_t> published_leader_{0};
  std::atomic<uint64_t> pending_proposals_{0};
  std::atomic<uint64_t> pending_reads_{0};
  std::atomic<bool> failed_{false};

  // The raft loop's queue.
  // std::mutex rather than absl::Mutex throughout: ThreadSanitizer sees
  // these, so a TSan run of the server is meaningful.
  std::mutex inbox_mu_;
  std::condition_variable inbox_ready_;
  RaftInput inbox_;            // guarded by inbox_mu_
  bool inbox_closed_ = false;  // guarded by inbox_mu_
  // When the oldest of inbox_.proposals arrived (by clock_).
  absl::Time oldest_proposal_at_;  // guarded by inbox_mu_
  // False while the raft thread waits with a round in flight and
  // hold_proposals_in_flight on: a proposal alone would not end its wait,
  // so Enqueue does not wake it for one (waking it would only put it back
  // to sleep, a futex round trip per proposal). Set by the raft thread each
  // time it checks whether to wait.
  bool proposals_wake_raft_ = true;  // guarded by inbox_mu_

  TaskQueue<ApplyTask> apply_queue_;
  TaskQueue<SnapshotJob> snapshot_queue_;

  // What Status() reports, published by the raft loop after each turn.
  mutable std::mutex status_mu_;
  std::condition_variable status_changed_;
  NodeStatus published_;  // guarded by status_mu_

  std::mutex timer_mu_;
  std::condition_variable timer_stop_;
  bool timer_stopping_ = false;  // guarded by timer_mu_
  std::thread raft_thread_;
  std::thread apply_thread_;
  std::thread snapshot_thread_;
  std::thread timer_thread_;
  std::once_flag stop_once_;

 private:
  void RaftThread();
  void ApplyThread();
  void SnapshotThread();
  void TimerThread();
  void Publish();
  bool ApplyBacklogged() const;
  // Whether the raft thread leaves the inbox's proposals where they are this
  // turn (ServerOptions::hold_proposals_in_flight). REQUIRES: inbox_mu_
  // held, on the raft thread.
  bool HoldsProposals() const;
  void CancelInbox(RaftInput& input);
};

absl::Status Server::Impl::Open() {
  absl::StatusOr<std::unique_ptr<NodeRuntime>> runtime = NodeRuntime::Open(
      options_, state_machine_, transport_,
      RuntimeQueues{
          .apply =
              [this](ApplyTask task) {
                // A task that only registers requests completes none: what
                // completes them (a hand-over, a forward's answer, a
                // deadline) comes later in this queue and wakes the apply
                // thread, and the timer's DeadlineTask wakes it every tick
                // while requests are pending. Not waking it for these saves
                // a thread switch per replication round.
                const bool registers_only =
                    std::holds_alternative<TrackProposalsTask>(task) ||
                    std::holds_alternative<TrackForwardTask>(task) ||
                    std::holds_alternative<TrackReadsTask>(task);
                apply_queue_.Push(std::move(task), !registers_only);
              },
          .snapshot =
              [this](SnapshotJob job) { snapshot_queue_.Push(std::move(job)); },
          .raft_control =
              [this](ControlEvent event) {
                Enqueue([&event](RaftInput& input) {
                  input.controls.push_back(std::move(event));
                });
              },
          .raft_message =
              [this](Message message) {
                Enqueue([&message](RaftInput& input) {
                  input.messages.push_back(std::move(message));
                });
              },
          .applied_index =
              [this] {
                return LogIndex(applied_index_.load(std::memory_order_acquire));
              },
          .applied_advanced =
              [this](LogIndex applied) {
                applied_index_.store(applied.value(),
                                     std::memory_order_release);
              }});
  if (!runtime.ok()) return runtime.status();
  runtime_ = *std::move(runtime);
  applied_index_.store(runtime_->replica().applied().value());
  Publish();
  return absl::OkStatus();
}

void Server::Impl::Run() {
  const auto start = [this](const char* name, void (Impl::*body)()) {
    return std::thread([this, name, body] {
      SetThreadName(name);
      (this->*body)();
    });
  };
  raft_thread_ = start("dw-raft", &Impl::RaftThread);
  apply_thread_ = start("dw-apply", &Impl::ApplyThread);
  snapshot_thread_ = start("dw-snapshot", &Impl::SnapshotThread);
  timer_thread_ = start("dw-timer", &Impl::TimerThread);
}

bool Server::Impl::Enqueue(absl::FunctionRef<void(RaftInput&)> add,
                           bool proposal) {
  bool wake = true;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (inbox_closed_) return false;
    add(inbox_);
    if (proposal) wake = proposals_wake_raft_;
  }
  if (wake) inbox_ready_.notify_one();
  return true;
}

void Server::Impl::Refuse(ResultCallback& done, absl::Status status,
                          bool read) {
  runtime_->counters().CountOutcome(status, read);
  if (done) done(std::move(status));
}

std::optional<ResultCallback> Server::Impl::Admit(uint64_t bytes, bool read,
                                                  ResultCallback done) {
  if (bytes > options_.max_request_bytes) {
    Refuse(done,
           absl::InvalidArgumentError(
               absl::StrCat("request is too large: ", bytes, " bytes > ",
                            options_.max_request_bytes)),
           read);
    return std::nullopt;
  }
  std::atomic<uint64_t>& pending = read ? pending_reads_ : pending_proposals_;
  const uint64_t limit =
      read ? options_.max_pending_reads : options_.max_pending_proposals;
  if (pending.fetch_add(1) >= limit) {
    pending.fetch_sub(1);
    Refuse(done,
           absl::ResourceExhaustedError(
               absl::StrCat("too many pending ", read ? "reads" : "proposals",
                            " (", limit, ")")),
           read);
    return std::nullopt;
  }
  return ResultCallback([&pending, done = std::move(done)](
                            absl::StatusOr<std::string> result) mutable {
    pending.fetch_sub(1);
    if (done) done(std::move(result));
  });
}

bool Server::Impl::ApplyBacklogged() const {
  const uint64_t handed_over = runtime_->raft_loop().handed_over().value();
  const uint64_t applied = applied_index_.load(std::memory_order_acquire);
  // The raft loop stops handing over (and so stops taking Readies) while
  // the apply loop is far behind, which bounds the apply queue.
  return handed_over > applied &&
         handed_over - applied >
             4 * std::max<uint64_t>(options_.max_apply_lag, 1);
}

bool Server::Impl::HoldsProposals() const {
  // A round that cannot commit (no quorum) holds proposals for about one
  // tick from the oldest one's arrival (at most two: the wait is checked
  // when input arrives, and a tick is input); after that they are appended
  // and tracked as before, so their deadlines run in the apply loop.
  return options_.hold_proposals_in_flight && !inbox_.proposals.empty() &&
         runtime_->raft_loop().ProposalsInFlight() &&
         clock_.Now() - oldest_proposal_at_ < options_.tick_interval;
}

void Server::Impl::RaftThread() {
  bool backlogged = false;
  while (true) {
    RaftInput input;
    bool held = false;
    {
      std::unique_lock<std::mutex> lock(inbox_mu_);
      auto has_work = [this] {
        if (inbox_closed_) return true;
        // Held proposals whose tick ran out are taken at the next input
        // (a tick at the latest), as HoldsProposals says.
        proposals_wake_raft_ = !(options_.hold_proposals_in_flight &&
                                 runtime_->raft_loop().ProposalsInFlight());
        if (!HoldsProposals()) return !inbox_.empty();
        return inbox_.ticks != 0 || !inbox_.messages.empty() ||
               !inbox_.server_messages.empty() || !inbox_.controls.empty() ||
               !inbox_.reads.empty();
      };
      if (backlogged) {
        inbox_ready_.wait_for(lock, std::chrono::milliseconds(1), has_work);
      } else {
        inbox_ready_.wait(lock, has_work);
      }
      if (inbox_closed_) return;
      held = HoldsProposals();
      std::vector<ProposalInput> proposals;
      if (held) proposals.swap(inbox_.proposals);
      std::swap(input, inbox_);
      if (held) inbox_.proposals.swap(proposals);
    }
    if (absl::Status status = runtime_->raft_loop().Drain(std::move(input));
        !status.ok()) {
      Fatal(status);
      return;
    }
    if (held && !runtime_->raft_loop().ProposalsInFlight()) {
      // The messages just drained committed the round: the proposals it held
      // back join this turn, so one AppendEntries carries them and the new
      // commit index.
      RaftInput released;
      {
        std::lock_guard<std::mutex> lock(inbox_mu_);
        released.proposals.swap(inbox_.proposals);
      }
      if (absl::Status status =
              runtime_->raft_loop().Drain(std::move(released));
          !status.ok()) {
        Fatal(status);
        return;
      }
    }
    backlogged = ApplyBacklogged();
    if (!backlogged) {
      if (absl::Status status = runtime_->raft_loop().ProcessReadies();
          !status.ok()) {
        Fatal(status);
        return;
      }
    }
    Publish();
  }
}

void Server::Impl::ApplyThread() {
  std::deque<ApplyTask> tasks;
  while (apply_queue_.PopAll(tasks)) {
    for (ApplyTask& task : tasks) {
      if (failed_.load()) {
        // Nothing is applied after a fatal failure, but every request the
        // task carries still completes exactly once.
        runtime_->apply_loop().Abandon(
            std::move(task),
            absl::CancelledError("the server failed; the outcome is unknown"));
        continue;
      }
      if (absl::Status status = runtime_->apply_loop().Handle(std::move(task));
          !status.ok()) {
        Fatal(status);
      }
    }
    tasks.clear();
  }
  runtime_->apply_loop().CancelAll(
      absl::CancelledError("the server stopped before the outcome was known"));
}

void Server::Impl::SnapshotThread() {
  std::deque<SnapshotJob> jobs;
  while (snapshot_queue_.PopAll(jobs)) {
    for (SnapshotJob& job : jobs)
      runtime_->snapshot_writer().Handle(std::move(job));
    jobs.clear();
  }
}

void Server::Impl::TimerThread() {
  const auto tick = absl::ToChronoNanoseconds(options_.tick_interval);
  auto next = std::chrono::steady_clock::now() + tick;
  std::unique_lock<std::mutex> lock(timer_mu_);
  while (
      !timer_stop_.wait_until(lock, next, [this] { return timer_stopping_; })) {
    lock.unlock();
    Enqueue([now = clock_.Now()](RaftInput& input) {
      ++input.ticks;
      input.now = std::max(input.now, now);
    });
    if (pending_proposals_.load(std::memory_order_relaxed) +
            pending_reads_.load(std::memory_order_relaxed) >
        0) {
      apply_queue_.Push(DeadlineTask{clock_.Now()});
    }
    next += tick;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) next = now + tick;  // fell behind: skip missed ticks
    lock.lock();
  }
}

void Server::Impl::Publish() {
  NodeStatus status = runtime_->Status();
  published_term_.store(status.term.value(), std::memory_order_release);
  published_leader_.store(status.leader.value(), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    published_ = std::move(status);
  }
  status_changed_.notify_all();
}

NodeStatus Server::Impl::Status() const {
  NodeStatus status;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status = published_;
  }
  runtime_->counters().LoadInto(status.counters);
  status.transport = transport_.Counters();
  status.applied = LogIndex(applied_index_.load(std::memory_order_acquire));
  // An applied index is a committed one; the apply thread may have moved
  // past the commit index of the raft loop's last published turn.
  status.commit = std::max(status.commit, status.applied);
  status.counters.apply_lag = status.commit > status.applied
                                  ? Distance(status.applied, status.commit)
                                  : 0;
  return status;
}

void Server::Impl::Fatal(const absl::Status& status) {
  if (failed_.exchange(true)) return;
  spdlog::critical("node {} must stop: {}", options_.id.value(),
                   status.ToString());
  if (options_.on_fatal) {
    options_.on_fatal(status);
    return;
  }
  std::abort();
}

void Server::Impl::CancelInbox(RaftInput& input) {
  const absl::Status stopped =
      absl::CancelledError("the server stopped before the request was sent");
  std::vector<PendingRequest> proposals;
  for (ProposalInput& proposal : input.proposals) {
    proposals.push_back(std::move(proposal.request));
  }
  std::vector<PendingRequest> reads;
  for (ReadInput& read : input.reads) reads.push_back(std::move(read.request));
  for (ControlEvent& event : input.controls) {
    if (auto* transfer = std::get_if<TransferEvent>(&event)) {
      if (transfer->done) transfer->done(stopped);
    }
  }
  apply_queue_.Push(CompleteTask{std::move(proposals), stopped, false});
  apply_queue_.Push(CompleteTask{std::move(reads), stopped, true});
}

void Server::Impl::Stop() {
  const NodeStatus status = Status();
  if (status.role == Role::kLeader && !failed_.load()) {
    // A clean stop of a leader hands over first (docs/design.md "The
    // runtime"), to the live voter with the longest matching log.
    NodeId best;
    LogIndex best_match;
    for (const auto& [peer, progress] : status.peers) {
      if (peer == options_.id || !status.configuration.IsVoter(peer) ||
          !progress.recent_active) {
        continue;
      }
      if (best == kNoNode || progress.match > best_match) {
        best = peer;
        best_match = progress.match;
      }
    }
    if (best != kNoNode) {
      Enqueue([best](RaftInput& input) {
        input.controls.push_back(TransferEvent{best, nullptr});
      });
      const absl::Duration wait =
          options_.tick_interval *
          static_cast<int64_t>(2 * options_.election_ticks);
      std::unique_lock<std::mutex> lock(status_mu_);
      status_changed_.wait_for(lock, absl::ToChronoMilliseconds(wait), [this] {
        return published_.role != Role::kLeader;
      });
      spdlog::info("node {} stops {}", options_.id.value(),
                   published_.role == Role::kLeader
                       ? "as leader: the transfer did not finish in time"
                       : absl::StrCat("after handing leadership to node ",
                                      best.value()));
    }
  }
  {
    std::lock_guard<std::mutex> lock(timer_mu_);
    timer_stopping_ = true;
  }
  timer_stop_.notify_all();
  if (timer_thread_.joinable()) timer_thread_.join();
  RaftInput left;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_closed_ = true;
    std::swap(left, inbox_);
  }
  inbox_ready_.notify_all();
  if (raft_thread_.joinable()) raft_thread_.join();
  CancelInbox(left);
  snapshot_queue_.Close();
  if (snapshot_thread_.joinable()) snapshot_thread_.join();
  transport_.Stop();
  apply_queue_.Close();
  if (apply_thread_.joinable()) apply_thread_.join();
  spdlog::info("node {} stopped", options_.id.value());
}

Server::Server(const ServerOptions& options) : options_(options) {}

Server::~Server() { Stop(); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options, StateMachine& state_machine,
    Transport& transport) {
  std::unique_ptr<Server> server(new Server(options));
  server->impl_ = std::make_unique<Impl>(*server, server->options_,
                                         state_machine, transport);
  Impl& impl = *server->impl_;
  if (absl::Status status = impl.Open(); !status.ok()) {
    server->impl_.reset();
    return status;
  }
  impl.Run();
  if (absl::Status status = transport.Start(options.id, server.get());
      !status.ok()) {
    return status;  // the destructor stops the threads
  }
  const NodeStatus status = impl.Status();
  spdlog::info(
      "node {} started in cluster {:016x}: term {}, log [{}, {}], commit {}, "
      "applied {}",
      options.id.value(), server->cluster_id(), status.term.value(),
      status.first_index.value(), status.last_index.value(),
      status.commit.value(), status.applied.value());
  return server;
}

uint64_t Server::cluster_id() const { return impl_->runtime_->cluster_id(); }

void Server::Stop() {
  if (impl_ == nullptr) return;
  std::call_once(impl_->stop_once_, [this] { impl_->Stop(); });
}

void Server::Propose(std::string command, absl::Time deadline,
                     ResultCallback done) {
  std::optional<ResultCallback> admitted =
      impl_->Admit(command.size(), /*read=*/false, std::move(done));
  if (!admitted) return;
  ProposalInput proposal{std::move(command),
                         PendingRequest{deadline, *std::move(admitted)}};
  if (!impl_->Enqueue(
          [&](RaftInput& input) {
            if (input.proposals.empty()) {
              impl_->oldest_proposal_at_ = impl_->clock_.Now();
            }
            input.proposals.push_back(std::move(proposal));
          },
          /*proposal=*/true)) {
    impl_->Refuse(proposal.request.done,
                  absl::CancelledError("the server is stopped"), false);
  }
}

void Server::Read(std::string query, absl::Time deadline, ResultCallback done) {
  std::optional<ResultCallback> admitted =
      impl_->Admit(query.size(), /*read=*/true, std::move(done));
  if (!admitted) return;
  ReadInput read{std::move(query),
                 PendingRequest{deadline, *std::move(admitted)}};
  if (!impl_->Enqueue(
          [&](RaftInput& input) { input.reads.push_back(std::move(read)); })) {
    impl_->Refuse(read.request.done,
                  absl::CancelledError("the server is stopped"), true);
  }
}

void Server::ReadLocal(std::string query, ResultCallback done) {
  Impl& impl = *impl_;
  if (impl.state_machine_.ConcurrentQueries()) {
    absl::StatusOr<std::string> result = impl.state_machine_.Query(query);
    impl.runtime_->counters().CountOutcome(result.status(), true);
    if (done) done(std::move(result));
    return;
  }
  // A local read never leaves this node, so only the pending-reads limit
  // applies.
  std::optional<ResultCallback> admitted =
      impl.Admit(/*bytes=*/0, /*read=*/true, std::move(done));
  if (!admitted) return;
  impl.apply_queue_.Push(LocalReadTask{
      ReadInput{std::move(query),
                PendingRequest{absl::InfiniteFuture(), *std::move(admitted)}}});
}

void Server::TransferLeadership(NodeId to,
                                absl::AnyInvocable<void(absl::Status)> done) {
  impl_->Enqueue([&](RaftInput& input) {
    input.controls.push_back(TransferEvent{to, std::move(done)});
  });
}

NodeStatus Server::Status() const { return impl_->Status(); }

Term Server::term() const {
  return Term(impl_->published_term_.load(std::memory_order_acquire));
}

NodeId Server::leader() const {
  return NodeId(impl_->published_leader_.load(std::memory_order_acquire));
}

void Server::HandleMessages(std::vector<Message> messages) {
  Impl& impl = *impl_;
  uint64_t dropped = 0;
  impl.Enqueue([&](RaftInput& input) {
    const size_t room =
        input.messages.size() >= options_.max_queued_messages
            ? 0
            : options_.max_queued_messages - input.messages.size();
    const size_t taken = std::min(room, messages.size());
    dropped = messages.size() - taken;
    for (size_t i = 0; i < taken; ++i) {
      input.messages.push_back(std::move(messages[i]));
    }
  });
  if (dropped > 0) {
    impl.runtime_->counters().messages_dropped.fetch_add(
        dropped, std::memory_order_relaxed);
  }
}

void Server::HandleServerMessage(ServerMessage message) {
  Impl& impl = *impl_;
  bool dropped = false;
  impl.Enqueue([&](RaftInput& input) {
    if (input.server_messages.size() >= options_.max_queued_messages) {
      dropped = true;
      return;
    }
    input.server_messages.push_back(std::move(message));
  });
  if (dropped) {
    impl.runtime_->counters().messages_dropped.fetch_add(
        1, std::memory_order_relaxed);
  }
}

absl::StatusOr<std::unique_ptr<SnapshotSink>> Server::ReceiveSnapshot(
    const Message& message, const SnapshotManifest& manifest) {
  return impl_->runtime_->ReceiveSnapshot(message, manifest);
}

void Server::ReportUnreachable(NodeId peer) {
  impl_->Enqueue([peer](RaftInput& input) {
    input.controls.push_back(UnreachableEvent{peer});
  });
}

}  // namespace driftwood::raft
