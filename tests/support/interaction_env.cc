#include "tests/support/interaction_env.h"

#include <cstdlib>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "raft/core/describe.h"

namespace driftwood::testing {

using raft::Configuration;
using raft::Entry;
using raft::LogIndex;
using raft::Message;
using raft::NodeId;

namespace {

uint64_t ParseU64(const std::string& text) {
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  RAFT_CHECK(end != text.c_str() && *end == '\0',
             absl::StrCat("not a number: '", text, "'"));
  return value;
}

bool ParseBool(const std::string& text) {
  RAFT_CHECK(text == "true" || text == "false",
             absl::StrCat("not a boolean: '", text, "'"));
  return text == "true";
}

}  // namespace

std::vector<NodeId> ParseIds(const std::vector<std::string>& values) {
  std::vector<NodeId> ids;
  for (const std::string& value : values) ids.emplace_back(ParseU64(value));
  return ids;
}

void InteractionEnv::AddNodes(const std::vector<NodeId>& ids,
                              const Configuration& configuration,
                              const raft::Config& base) {
  for (NodeId id : ids) {
    EnvNode env_node;
    env_node.config = base;
    env_node.config.id = id;
    env_node.store = std::make_unique<raft::MemoryLogStore>(configuration);
    Start(id, nodes_[id] = std::move(env_node));
  }
}

InteractionEnv::EnvNode& InteractionEnv::Get(NodeId id) {
  auto it = nodes_.find(id);
  RAFT_CHECK(it != nodes_.end(), absl::StrCat("no node ", id.value()));
  return it->second;
}

raft::Node& InteractionEnv::node(NodeId id) {
  EnvNode& env_node = Get(id);
  RAFT_CHECK(env_node.node != nullptr,
             absl::StrCat("node ", id.value(), " is crashed"));
  return *env_node.node;
}

raft::MemoryLogStore& InteractionEnv::store(NodeId id) {
  return *Get(id).store;
}

const std::vector<Entry>& InteractionEnv::applied(NodeId id) {
  return Get(id).applied;
}

std::vector<NodeId> InteractionEnv::LiveIds() const {
  std::vector<NodeId> ids;
  for (const auto& [id, env_node] : nodes_) {
    if (env_node.node != nullptr) ids.push_back(id);
  }
  return ids;
}

void InteractionEnv::Enqueue(const Message& message) {
  if (cut_.count({message.from, message.to}) != 0) return;
  if (nodes_.count(message.to) == 0) return;
  inbox_[message.to].push_back(message);
}

std::string InteractionEnv::ProcessReady(NodeId id, bool crash_before_persist) {
  EnvNode& env_node = Get(id);
  if (env_node.node == nullptr) return "";
  raft::ReadyProcessor& processor = *env_node.processor;
  if (!processor.Take()) return "";
  std::string out =
      absl::StrCat("> ", id.value(), " handling Ready\n",
                   raft::DescribeReadyLines(processor.ready(), "  "));
  processor.SendNow();
  if (processor.hands_over_before_persist()) processor.HandOver();
  if (crash_before_persist) {
    Crash(id);
    return absl::StrCat(out, "  crashed before persisting\n");
  }
  absl::Status status = processor.Finish();
  RAFT_CHECK(status.ok(), status.ToString());
  return out;
}

void InteractionEnv::Start(NodeId id, EnvNode& env_node) {
  env_node.processor.reset();
  auto node = raft::Node::Create(env_node.config, *env_node.store);
  RAFT_CHECK(node.ok(), node.status().ToString());
  env_node.node = *std::move(node);
  env_node.processor = std::make_unique<raft::ReadyProcessor>(
      *env_node.node, *env_node.store,
      raft::ReadyProcessor::Callbacks{
          .send =
              [this](std::vector<Message>& messages) {
                for (const Message& message : messages) Enqueue(message);
              },
          .hand_over =
              [&env_node, id](const raft::Ready& ready) {
                // Restore, then apply strictly in order.
                if (ready.snapshot) {
                  env_node.applied.clear();
                  env_node.config.applied = ready.snapshot->index;
                }
                for (const Entry& entry : ready.committed_entries) {
                  const LogIndex expected =
                      env_node.config.applied + env_node.applied.size() + 1;
                  RAFT_CHECK(entry.index == expected,
                             absl::StrCat("node ", id.value(), " applied ",
                                          entry.index.value(), " but expected ",
                                          expected.value()));
                  env_node.applied.push_back(entry);
                }
              }});
}

std::string InteractionEnv::DeliverMessages(NodeId id) {
  EnvNode& env_node = Get(id);
  auto& queue = inbox_[id];
  if (queue.empty() || env_node.node == nullptr) return "";
  std::string out = absl::StrCat("> ", id.value(), " receiving messages\n");
  std::deque<Message> messages;
  messages.swap(queue);
  for (const Message& message : messages) {
    absl::StrAppend(&out, "  ", raft::Describe(message), "\n");
    absl::Status status = env_node.node->Step(message);
    if (!status.ok())
      absl::StrAppend(&out, "  error: ", status.ToString(), "\n");
  }
  return out;
}

std::string InteractionEnv::DropMessages(NodeId id) {
  std::string out;
  for (const Message& message : inbox_[id]) {
    absl::StrAppend(&out, "dropped: ", raft::Describe(message), "\n");
  }
  inbox_[id].clear();
  return out;
}

std::string InteractionEnv::Stabilize(const std::vector<NodeId>& ids) {
  std::string out;
  for (int round = 0; round < 1000; ++round) {
    bool progressed = false;
    for (NodeId id : ids) {
      while (Get(id).node != nullptr && Get(id).node->HasReady()) {
        absl::StrAppend(&out, ProcessReady(id));
        progressed = true;
      }
    }
    for (NodeId id : ids) {
      if (Get(id).node != nullptr && !inbox_[id].empty()) {
        absl::StrAppend(&out, DeliverMessages(id));
        progressed = true;
      }
    }
    if (!progressed) return out;
  }
  RAFT_CHECK(false, "stabilize did not converge in 1000 rounds");
}

void InteractionEnv::Crash(NodeId id) {
  EnvNode& env_node = Get(id);
  env_node.processor.reset();
  env_node.node.reset();
  inbox_[id].clear();
}

void InteractionEnv::Restart(NodeId id) {
  EnvNode& env_node = Get(id);
  RAFT_CHECK(env_node.node == nullptr, "restart needs a crashed node");
  // The in-memory state machine restarts from the stored snapshot, if any,
  // and replays the log after it.
  auto snapshot = env_node.store->Snapshot();
  env_node.config.applied = snapshot.ok() ? snapshot->index : LogIndex(0);
  env_node.applied.clear();
  Start(id, env_node);
}

void InteractionEnv::Cut(NodeId a, NodeId b) {
  cut_.insert({a, b});
  cut_.insert({b, a});
}

void InteractionEnv::Isolate(NodeId id) {
  for (const auto& [other, env_node] : nodes_) {
    if (other != id) Cut(id, other);
  }
}

void InteractionEnv::Heal() { cut_.clear(); }

std::string InteractionEnv::Status(NodeId id) {
  EnvNode& env_node = Get(id);
  if (env_node.node == nullptr)
    return absl::StrCat("node ", id.value(), " crashed");
  const raft::Node& n = *env_node.node;
  std::string out = n.DebugString();
  if (n.role() == raft::Role::kLeader) {
    for (NodeId peer : n.configuration().AllNodes()) {
      const std::optional<raft::PeerStatus> progress = n.Status().Peer(peer);
      if (!progress.has_value()) continue;
      absl::StrAppend(&out, "\n  ", peer.value(), ": ",
                      raft::ProgressStateName(progress->state),
                      " match=", progress->match.value(),
                      " next=", progress->next.value(),
                      " inflight=", progress->inflight_messages);
    }
  }
  return out;
}

std::string InteractionEnv::RaftLog(NodeId id) {
  EnvNode& env_node = Get(id);
  const raft::MemoryLogStore& store = *env_node.store;
  std::string out =
      absl::StrCat("durable: ", raft::Describe(store.hard_state()));
  if (store.LastIndex() >= store.FirstIndex()) {
    auto entries =
        store.Entries(store.FirstIndex(), store.LastIndex().next(), UINT64_MAX);
    RAFT_CHECK(entries.ok(), entries.status().ToString());
    for (const Entry& entry : *entries) {
      absl::StrAppend(&out, "\n  ", raft::Describe(entry));
    }
  }
  absl::StrAppend(&out, "\napplied: ", raft::Describe(env_node.applied));
  return out;
}

std::string InteractionEnv::Handle(const TestCase& tc) {
  const std::vector<std::string> positional = tc.Positional();
  auto id_at = [&](size_t i) {
    RAFT_CHECK(i < positional.size(),
               absl::StrCat(tc.position, ": missing node id"));
    return NodeId(ParseU64(positional[i]));
  };
  auto each_id = [&](auto&& action) {
    std::string out;
    std::vector<NodeId> ids =
        positional.empty() ? LiveIds() : ParseIds(positional);
    for (NodeId id : ids) absl::StrAppend(&out, action(id));
    return out;
  };

  if (tc.command == "add-nodes") {
    Configuration configuration;
    configuration.voters = ParseIds(*tc.Values("voters"));
    if (auto learners = tc.Values("learners")) {
      configuration.learners = ParseIds(*learners);
    }
    raft::Config base;
    base.pre_vote = ParseBool(tc.Value("pre-vote", "true"));
    base.check_quorum = ParseBool(tc.Value("check-quorum", "true"));
    base.election_ticks = ParseU64(tc.Value("election", "10"));
    base.heartbeat_ticks = ParseU64(tc.Value("heartbeat", "1"));
    base.max_inflight_messages = ParseU64(tc.Value("max-inflight", "256"));
    base.max_message_bytes = ParseU64(tc.Value("max-message-bytes", "1048576"));
    base.seed = ParseU64(tc.Value("seed", "1"));
    AddNodes(configuration.AllNodes(), configuration, base);
    return absl::StrCat("created ", Describe(configuration));
  }
  if (tc.command == "campaign") {
    return each_id([&](NodeId id) {
      node(id).Campaign();
      return std::string();
    });
  }
  if (tc.command == "propose") {
    RAFT_CHECK(positional.size() >= 2, tc.position + ": propose ID DATA");
    auto id = node(id_at(0)).Propose(positional[1]);
    if (!id.ok()) return absl::StrCat("error: ", id.status().ToString());
    return absl::StrCat("proposed ", id->term.value(), "/", id->index.value());
  }
  if (tc.command == "tick") {
    const uint64_t count = ParseU64(tc.Value("n", "1"));
    return each_id([&](NodeId id) {
      for (uint64_t i = 0; i < count; ++i) node(id).Tick();
      return std::string();
    });
  }
  if (tc.command == "tick-heartbeat") {
    return each_id([&](NodeId id) {
      for (uint64_t i = 0; i < Get(id).config.heartbeat_ticks; ++i)
        node(id).Tick();
      return std::string();
    });
  }
  if (tc.command == "tick-election") {
    // Leaders tick one election timeout (a CheckQuorum round); others tick
    // until their randomized timeout fires.
    return each_id([&](NodeId id) {
      raft::Node& n = node(id);
      if (n.role() == raft::Role::kLeader) {
        for (uint64_t i = 0; i < Get(id).config.election_ticks; ++i) n.Tick();
        return std::string();
      }
      const uint64_t timeout = n.Status().election_timeout;
      const raft::Role role = n.role();
      const raft::Term term = n.term();
      for (uint64_t i = 0; i < timeout; ++i) {
        n.Tick();
        if (n.role() != role || n.term() != term || n.HasReady()) break;
      }
      return std::string();
    });
  }
  if (tc.command == "process-ready") {
    const bool crash = tc.Value("crash-before-persist", "false") == "true";
    return each_id([&](NodeId id) { return ProcessReady(id, crash); });
  }
  if (tc.command == "deliver-msgs") {
    return each_id([&](NodeId id) { return DeliverMessages(id); });
  }
  if (tc.command == "drop-msgs") {
    return each_id([&](NodeId id) { return DropMessages(id); });
  }
  if (tc.command == "stabilize") {
    return Stabilize(positional.empty() ? LiveIds() : ParseIds(positional));
  }
  if (tc.command == "crash") {
    return each_id([&](NodeId id) {
      Crash(id);
      return std::string();
    });
  }
  if (tc.command == "restart") {
    return each_id([&](NodeId id) {
      Restart(id);
      return std::string();
    });
  }
  if (tc.command == "read-index") {
    RAFT_CHECK(positional.size() >= 2, tc.position + ": read-index ID REQUEST");
    absl::Status status = node(id_at(0)).ReadIndex(ParseU64(positional[1]));
    return status.ok() ? "" : absl::StrCat("error: ", status.ToString());
  }
  if (tc.command == "transfer-leadership") {
    absl::Status status = node(id_at(0)).TransferLeadership(id_at(1));
    return status.ok() ? "" : absl::StrCat("error: ", status.ToString());
  }
  if (tc.command == "report-snapshot") {
    node(id_at(0)).ReportSnapshot(id_at(1), tc.Value("ok", "true") == "true");
    return "";
  }
  if (tc.command == "report-unreachable") {
    node(id_at(0)).ReportUnreachable(id_at(1));
    return "";
  }
  if (tc.command == "snapshot-unavailable") {
    store(id_at(0)).set_snapshot_unavailable(
        ParseBool(tc.Value("value", "true")));
    return "";
  }
  if (tc.command == "compact") {
    // Takes a snapshot at the node's applied index and compacts the log
    // through `index` (default: the snapshot index).
    RAFT_CHECK(positional.size() >= 1, tc.position + ": compact ID [index=N]");
    const NodeId id = id_at(0);
    raft::Node& n = node(id);
    const LogIndex applied = n.applied_index();
    auto term = store(id).TermAt(applied);
    RAFT_CHECK(term.ok(), term.status().ToString());
    absl::Status status = store(id).SetSnapshot(
        raft::SnapshotMeta{applied, *term, n.configuration()});
    if (status.ok()) {
      status = store(id).Compact(LogIndex(
          ParseU64(tc.Value("index", std::to_string(applied.value())))));
    }
    if (!status.ok()) return absl::StrCat("error: ", status.ToString());
    return absl::StrCat("snapshot at ", term->value(), "/", applied.value(),
                        ", log starts at ", store(id).FirstIndex().value());
  }
  if (tc.command == "cut") {
    Cut(id_at(0), id_at(1));
    return "";
  }
  if (tc.command == "isolate") {
    Isolate(id_at(0));
    return "";
  }
  if (tc.command == "heal") {
    Heal();
    return "";
  }
  if (tc.command == "status") {
    std::vector<std::string> lines;
    std::vector<NodeId> ids =
        positional.empty() ? std::vector<NodeId>() : ParseIds(positional);
    if (ids.empty()) {
      for (const auto& [id, env_node] : nodes_) ids.push_back(id);
    }
    for (NodeId id : ids) lines.push_back(Status(id));
    return absl::StrJoin(lines, "\n");
  }
  if (tc.command == "raft-log") {
    return each_id([&](NodeId id) { return RaftLog(id) + "\n"; });
  }
  return absl::StrCat("error: unknown command '", tc.command, "'");
}

}  // namespace driftwood::testing
