#include "raft/core/describe.h"

#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace driftwood::raft {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kFollower:
      return "follower";
    case Role::kPreCandidate:
      return "pre-candidate";
    case Role::kCandidate:
      return "candidate";
    case Role::kLeader:
      return "leader";
  }
  return "?";
}

bool IsRequest(const Message& message) {
  return std::holds_alternative<AppendEntries>(message.payload) ||
         std::holds_alternative<RequestVote>(message.payload) ||
         std::holds_alternative<Heartbeat>(message.payload) ||
         std::holds_alternative<InstallSnapshot>(message.payload) ||
         std::holds_alternative<TimeoutNow>(message.payload) ||
         std::holds_alternative<ReadIndexRequest>(message.payload);
}

std::string Describe(const Entry& entry) {
  std::string text = absl::StrCat(entry.term.value(), "/", entry.index.value());
  if (entry.type == EntryType::kNoOp) return absl::StrCat(text, " noop");
  return absl::StrCat(text, " '", absl::CHexEscape(entry.data.str()), "'");
}

std::string Describe(const std::vector<Entry>& entries) {
  return absl::StrCat("[",
                      absl::StrJoin(entries, ", ",
                                    [](std::string* out, const Entry& entry) {
                                      out->append(Describe(entry));
                                    }),
                      "]");
}

namespace {

std::string DescribePayload(const AppendEntries& p) {
  std::string text = absl::StrCat(
      "AppendEntries prev=", p.prev_log_term.value(), "/",
      p.prev_log_index.value(), " commit=", p.leader_commit.value());
  if (!p.entries.empty())
    absl::StrAppend(&text, " entries=", Describe(p.entries));
  return text;
}

std::string DescribePayload(const AppendEntriesResponse& p) {
  if (p.success) {
    return absl::StrCat("AppendEntriesResponse index=", p.index.value());
  }
  return absl::StrCat("AppendEntriesResponse reject index=", p.index.value(),
                      " hint=", p.hint_term.value(), "/", p.hint_index.value());
}

std::string DescribePayload(const RequestVote& p) {
  return absl::StrCat(p.pre_vote ? "PreVote" : "RequestVote",
                      " last=", p.last_log_term.value(), "/",
                      p.last_log_index.value(), p.transfer ? " transfer" : "");
}

std::string DescribePayload(const RequestVoteResponse& p) {
  return absl::StrCat(p.pre_vote ? "PreVoteResponse" : "RequestVoteResponse",
                      p.granted ? " granted" : " rejected");
}

std::string DescribePayload(const Heartbeat& p) {
  std::string text = absl::StrCat("Heartbeat commit=", p.leader_commit.value());
  if (p.read_round != 0) absl::StrAppend(&text, " round=", p.read_round);
  return text;
}

std::string DescribePayload(const HeartbeatResponse& p) {
  if (p.read_round == 0) return "HeartbeatResponse";
  return absl::StrCat("HeartbeatResponse round=", p.read_round);
}

std::string DescribePayload(const InstallSnapshot& p) {
  return absl::StrCat("InstallSnapshot ", Describe(p.snapshot));
}

std::string DescribePayload(const TimeoutNow&) { return "TimeoutNow"; }

std::string DescribePayload(const ReadIndexRequest& p) {
  return absl::StrCat("ReadIndexRequest id=", p.request_id);
}

std::string DescribePayload(const ReadIndexResponse& p) {
  return absl::StrCat("ReadIndexResponse id=", p.request_id,
                      " index=", p.index.value());
}

}  // namespace

std::string Describe(const Message& message) {
  return absl::StrCat(
      message.from.value(), "->", message.to.value(),
      " term=", message.term.value(), " ",
      std::visit([](const auto& payload) { return DescribePayload(payload); },
                 message.payload));
}

std::string Describe(const HardState& state) {
  return absl::StrCat("term=", state.term.value(),
                      " vote=", state.voted_for.value(),
                      " commit=", state.commit.value());
}

std::string Describe(const SoftState& state) {
  return absl::StrCat(RoleName(state.role), " term=", state.term.value(),
                      " leader=", state.leader.value());
}

std::string Describe(const SnapshotMeta& snapshot) {
  return absl::StrCat(snapshot.term.value(), "/", snapshot.index.value(), " ",
                      Describe(snapshot.configuration));
}

std::string Describe(const Configuration& configuration) {
  auto ids = [](const std::vector<NodeId>& nodes) {
    return absl::StrJoin(nodes, ",", [](std::string* out, NodeId id) {
      absl::StrAppend(out, id.value());
    });
  };
  std::string text = absl::StrCat("voters=(", ids(configuration.voters), ")");
  if (configuration.joint()) {
    absl::StrAppend(&text, "&&(", ids(configuration.voters_outgoing), ")");
  }
  if (!configuration.learners.empty()) {
    absl::StrAppend(&text, " learners=(", ids(configuration.learners), ")");
  }
  return text;
}

namespace {

std::vector<std::pair<std::string, std::string>> ReadyFields(
    const Ready& ready) {
  std::vector<std::pair<std::string, std::string>> fields;
  if (ready.soft_state)
    fields.emplace_back("soft", Describe(*ready.soft_state));
  if (ready.hard_state)
    fields.emplace_back("hard", Describe(*ready.hard_state));
  if (ready.snapshot)
    fields.emplace_back("snapshot", Describe(*ready.snapshot));
  if (!ready.entries.empty()) {
    fields.emplace_back(ready.must_sync ? "entries (sync)" : "entries",
                        Describe(ready.entries));
  } else if (ready.must_sync) {
    fields.emplace_back("sync", "yes");
  }
  for (const Message& message : ready.messages) {
    fields.emplace_back("send", Describe(message));
  }
  for (const Message& message : ready.messages_after_persist) {
    fields.emplace_back("send after persist", Describe(message));
  }
  if (!ready.committed_entries.empty()) {
    fields.emplace_back("apply", Describe(ready.committed_entries));
  }
  for (const ReadState& read : ready.read_states) {
    fields.emplace_back("read", absl::StrCat("id=", read.request_id,
                                             " index=", read.index.value()));
  }
  if (ready.snapshot_wanted) fields.emplace_back("snapshot wanted", "yes");
  return fields;
}

}  // namespace

std::string Describe(const Ready& ready) {
  std::string text = absl::StrCat("Ready ", ready.number);
  for (const auto& [name, value] : ReadyFields(ready)) {
    absl::StrAppend(&text, " ", name, ": ", value, ";");
  }
  return text;
}

std::string DescribeReadyLines(const Ready& ready, const std::string& indent) {
  std::string text;
  for (const auto& [name, value] : ReadyFields(ready)) {
    absl::StrAppend(&text, indent, name, ": ", value, "\n");
  }
  return text;
}

std::string NodeStatus::DebugString() const {
  return absl::StrFormat(
      "node %d %s term=%d vote=%d leader=%d last=%d/%d commit=%d applied=%d",
      id.value(), RoleName(role), term.value(), voted_for.value(),
      leader.value(), last_term.value(), last_index.value(), commit.value(),
      applied.value());
}

}  // namespace driftwood::raft
