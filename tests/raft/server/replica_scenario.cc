#include "tests/raft/server/replica_scenario.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "statemachine/kv_command.h"
#include "statemachine/memory_kv_state_machine.h"
#include "statemachine/rocksdb_kv_state_machine.h"
#include "tests/support/hash_state_machine.h"

namespace driftwood::raft::scenario {

namespace fs = std::filesystem;

Configuration Voters() { return {{NodeId(1), NodeId(2), NodeId(3)}, {}, {}}; }

Entry Truth(uint64_t index) {
  statemachine::KvCommand command;
  if (index % 2 == 1) {
    command = statemachine::IncrementCommand{"counter", 1};
  } else {
    command = statemachine::PutCommand{absl::StrCat("key-", index % 13),
                                       absl::StrCat("value-", index)};
  }
  return {Term(index <= 60 ? 1 : 2), LogIndex(index), EntryType::kNormal,
          EntryData(statemachine::EncodeCommand(command))};
}

std::vector<Entry> TruthRange(uint64_t first, uint64_t last) {
  std::vector<Entry> entries;
  for (uint64_t i = first; i <= last; ++i) entries.push_back(Truth(i));
  return entries;
}

uint64_t TruthHash(uint64_t through) {
  uint64_t hash = 0;
  for (uint64_t i = 1; i <= through; ++i) {
    hash = testing::ChainHash(hash, Truth(i));
  }
  return hash;
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kHashMemory:
      return "hash in-memory";
    case Kind::kHashPersistent:
      return "hash persistent";
    case Kind::kKvMemory:
      return "kv in-memory";
    case Kind::kKvRocksDb:
      return "kv rocksdb";
  }
  return "?";
}

bool IsPersistent(Kind kind) {
  return kind == Kind::kHashPersistent || kind == Kind::kKvRocksDb;
}

std::unique_ptr<StateMachine> MakeStateMachine(Kind kind, const fs::path& dir,
                                               CrashPoint crash_point) {
  switch (kind) {
    case Kind::kHashMemory:
      return std::make_unique<testing::HashStateMachine>();
    case Kind::kHashPersistent:
      return std::make_unique<testing::HashStateMachine>(dir);
    case Kind::kKvMemory:
      return std::make_unique<statemachine::MemoryKvStateMachine>();
    case Kind::kKvRocksDb: {
      statemachine::RocksDbKvStateMachineOptions options;
      options.path = dir;
      options.crash_point = std::move(crash_point);
      return std::make_unique<statemachine::RocksDbKvStateMachine>(options);
    }
  }
  return nullptr;
}

namespace {

std::string Get(const StateMachine& state_machine, const std::string& key) {
  absl::StatusOr<std::string> result = state_machine.Query(
      statemachine::EncodeQuery(statemachine::GetQuery{key}));
  if (!result.ok())
    return absl::StrCat("<query failed: ", result.status().ToString(), ">");
  absl::StatusOr<std::optional<std::string>> value =
      statemachine::DecodeGetResult(*result);
  if (!value.ok()) return "<undecodable>";
  return value->value_or("<absent>");
}

}  // namespace

std::string DiffFromTruth(Kind kind, const StateMachine& state_machine,
                          uint64_t index) {
  std::string diff;
  if (kind == Kind::kHashMemory || kind == Kind::kHashPersistent) {
    absl::StatusOr<std::string> hash = state_machine.Query("");
    if (!hash.ok() || *hash != absl::StrCat(TruthHash(index))) {
      diff = absl::StrCat("hash chain differs at ", index);
    }
    return diff;
  }
  const std::string counter =
      index == 0 ? "<absent>" : absl::StrCat((index + 1) / 2);
  if (std::string got = Get(state_machine, "counter"); got != counter) {
    absl::StrAppend(&diff, "counter is ", got, ", expected ", counter, "; ");
  }
  for (uint64_t key = 0; key < 13; ++key) {
    std::string expected = "<absent>";
    for (uint64_t i = index; i >= 2; --i) {
      if (i % 2 == 0 && i % 13 == key) {
        expected = absl::StrCat("value-", i);
        break;
      }
    }
    const std::string name = absl::StrCat("key-", key);
    if (std::string got = Get(state_machine, name); got != expected) {
      absl::StrAppend(&diff, name, " is ", got, ", expected ", expected, "; ");
    }
  }
  return diff;
}

absl::StatusOr<std::unique_ptr<RocksDbLogStore>> Node::OpenLog(
    bool create) const {
  RocksDbLogStoreOptions options;
  options.path = (root / "log").string();
  options.cluster_id = 7;
  options.node_id = NodeId(1);
  options.create_if_missing = create;
  options.initial_configuration = Voters();
  return RocksDbLogStore::Open(options);
}

std::unique_ptr<StateMachine> Node::MakeStateMachine(
    CrashPoint crash_point) const {
  return scenario::MakeStateMachine(kind, root / "sm", std::move(crash_point));
}

ReplicaStateOptions Node::Options(CrashPoint crash_point) const {
  return {root / "snapshots", policy, std::move(crash_point)};
}

CrashPoint CrashAt(std::string target, int occurrence) {
  auto seen = std::make_shared<int>(0);
  return [target, occurrence, seen](std::string_view point) {
    if (point == target && ++*seen == occurrence) {
      std::fflush(nullptr);
      _exit(kCrashedExit);
    }
  };
}

absl::Status WriteAndApply(LogStore& log, ReplicaState& replica, uint64_t first,
                           uint64_t last) {
  for (uint64_t from = first; from <= last; from += 10) {
    const uint64_t to = std::min(last, from + 9);
    PersistRequest request;
    request.entries = TruthRange(from, to);
    request.hard_state = HardState{Term(2), NodeId(1), LogIndex(to)};
    request.sync = true;
    if (absl::Status status = log.Persist(request); !status.ok()) {
      return status;
    }
    if (auto applied = replica.Apply(request.entries, Voters());
        !applied.ok()) {
      return applied.status();
    }
    if (replica.SnapshotDue()) {
      if (auto made = replica.CreateSnapshot(log); !made.ok()) {
        return made.status();
      }
    }
    if (replica.CompactionDue()) {
      if (absl::Status status = replica.CompactLog(log); !status.ok()) {
        return status;
      }
    }
    if (replica.state_machine().persistent() && to % 30 == 0) {
      if (auto made = replica.CreateSnapshot(log); !made.ok()) {
        return made.status();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CreationScenario(const Node& node, CrashPoint crash_point) {
  auto log = node.OpenLog(true);
  if (!log.ok()) return log.status();
  auto state_machine = node.MakeStateMachine(crash_point);
  auto replica = ReplicaState::Recover(*state_machine, **log,
                                       node.Options(std::move(crash_point)));
  if (!replica.ok()) return replica.status();
  return WriteAndApply(**log, **replica, 1, 120);
}

SnapshotMeta LeaderSnapshotMeta() {
  return {LogIndex(150), Truth(150).term, Voters()};
}

absl::StatusOr<SnapshotManifest> ManifestOf(const fs::path& dir,
                                            const SnapshotMeta& meta) {
  SnapshotManifest manifest;
  manifest.meta = meta;
  for (const auto& entry : fs::directory_iterator(dir)) {
    absl::StatusOr<SnapshotFile> file = ChecksumFile(entry.path());
    if (!file.ok()) return file.status();
    manifest.total_bytes += file->size;
    manifest.files.push_back(*file);
  }
  std::sort(manifest.files.begin(), manifest.files.end(),
            [](const SnapshotFile& a, const SnapshotFile& b) {
              return a.name < b.name;
            });
  return manifest;
}

absl::StatusOr<SnapshotManifest> LeaderSnapshot(Kind kind, const fs::path& work,
                                                const fs::path& out) {
  auto leader = MakeStateMachine(kind, work / "leader-sm", nullptr);
  if (auto opened = leader->Open(); !opened.ok()) return opened.status();
  const std::vector<Entry> history = TruthRange(1, 150);
  if (auto applied = leader->Apply({history, Voters()}); !applied.ok()) {
    return applied.status();
  }
  auto captured = leader->Capture();
  if (!captured.ok()) return captured.status();
  fs::create_directories(out);
  if (absl::Status status = (*captured)->WriteTo(out); !status.ok()) {
    return status;
  }
  if ((*captured)->meta() != LeaderSnapshotMeta()) {
    return absl::InternalError("the leader's snapshot has unexpected metadata");
  }
  return ManifestOf(out, LeaderSnapshotMeta());
}

absl::Status InstallScenario(const Node& node, const fs::path& sent_dir,
                             CrashPoint crash_point) {
  absl::StatusOr<SnapshotManifest> sent =
      ManifestOf(sent_dir, LeaderSnapshotMeta());
  if (!sent.ok()) return sent.status();
  auto log = node.OpenLog(true);
  if (!log.ok()) return log.status();
  auto state_machine = node.MakeStateMachine(crash_point);
  auto replica =
      ReplicaState::Recover(*state_machine, **log, node.Options(crash_point));
  if (!replica.ok()) return replica.status();
  if (absl::Status status = WriteAndApply(**log, **replica, 1, 30);
      !status.ok()) {
    return status;
  }
  // 1. Receive into a temporary folder; 2. verify, fsync, rename, fsync.
  absl::StatusOr<PendingSnapshot> pending =
      (*replica)->BeginReceive(sent->meta);
  if (!pending.ok()) return pending.status();
  for (const SnapshotFile& file : sent->files) {
    fs::copy_file(sent_dir / file.name, pending->dir() / file.name);
  }
  if (absl::Status status =
          (*replica)->FinishReceive(*std::move(pending), *sent);
      !status.ok()) {
    return status;
  }
  // 3. Only now is the core stepped; its Ready persists the metadata,
  // dropping the covered log.
  PersistRequest request;
  request.snapshot = sent->meta;
  request.hard_state = HardState{Term(2), NodeId(2), sent->meta.index};
  request.sync = true;
  if (absl::Status status = (*log)->Persist(request); !status.ok()) {
    return status;
  }
  // 4. Restore the state machine atomically; applied becomes the index.
  if (absl::Status status = (*replica)->Install(sent->meta); !status.ok()) {
    return status;
  }
  return WriteAndApply(**log, **replica, 151, 170);
}

}  // namespace driftwood::raft::scenario
