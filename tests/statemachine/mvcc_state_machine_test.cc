// MvccStateMachine (statemachine/mvcc/mvcc_state_machine.h): MVCC commands
// through the raft::StateMachine interface on RocksDB, batches whose reads
// see their own earlier writes, reopening, snapshots restored into another
// replica, and malformed entries.
#include "statemachine/mvcc/mvcc_state_machine.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tests/statemachine/kv_test_util.h"
#include "tests/statemachine/live_tables.h"
#include "tests/support/temp_dir.h"

namespace driftwood::mvcc {
namespace {

using etcdserverpb::Compare;
using statemachine::testing::ApplyRaw;
using statemachine::testing::RawEntry;

std::string Put(const std::string& key, const std::string& value) {
  MvccCommand command;
  command.mutable_put()->set_key(key);
  command.mutable_put()->set_value(value);
  return command.SerializeAsString();
}

std::string IncrementTxn(const std::string& key, int64_t version,
                         const std::string& value) {
  // If version(key) == version then put key = value.
  MvccCommand command;
  Compare* compare = command.mutable_txn()->add_compare();
  compare->set_key(key);
  compare->set_target(Compare::VERSION);
  compare->set_version(version);
  auto* put = command.mutable_txn()->add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  return command.SerializeAsString();
}

MvccResult Decode(const std::string& bytes) {
  MvccResult result;
  REQUIRE(result.ParseFromString(bytes));
  return result;
}

MvccResult Query(const raft::StateMachine& machine, const MvccQuery& query) {
  absl::StatusOr<std::string> bytes = machine.Query(query.SerializeAsString());
  REQUIRE(bytes.ok());
  return Decode(*bytes);
}

MvccQuery Prefix(const std::string& prefix) {
  MvccQuery query;
  query.mutable_range()->set_key(prefix);
  query.mutable_range()->set_range_end(PrefixEnd(prefix));
  return query;
}

MvccQuery Hash() {
  MvccQuery query;
  query.mutable_hash_kv();
  return query;
}

// Captures `machine` and writes the snapshot's files to `files`.
raft::SnapshotMeta WriteSnapshot(raft::StateMachine& machine,
                                 const std::filesystem::path& files) {
  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> snapshot =
      machine.Capture();
  REQUIRE(snapshot.ok());
  std::filesystem::create_directories(files);
  REQUIRE((*snapshot)->WriteTo(files).ok());
  return (*snapshot)->meta();
}

statemachine::RocksDbKvStateMachineOptions Options(
    const std::filesystem::path& path) {
  statemachine::RocksDbKvStateMachineOptions options;
  options.path = path;
  return options;
}

TEST_CASE(
    "mvcc state machine: compactions keep the event history apart from the "
    "revision record",
    "[statemachine][mvcc]") {
  // Every batch rewrites the revision record ('m'); event records ('e') are
  // only appended. Files spanning both would make every level-0 compaction
  // rewrite the history (RocksDbKvStateMachineOptions::key_kind_bytes).
  testing::TempDir dir;
  MvccStateMachine machine(Options(std::filesystem::path(dir.path()) / "sm"));
  REQUIRE(machine.Open().ok());
  uint64_t index = 0;
  for (int flush = 0; flush < 3; ++flush) {
    std::vector<raft::Entry> entries;
    for (int i = 0; i < 20; ++i) {
      ++index;
      entries.push_back(RawEntry(index, 1, Put(absl::StrCat("k", i), "v")));
    }
    ApplyRaw(machine, entries);
    REQUIRE(statemachine::testing::SyncThrough(machine, raft::LogIndex(index))
                .ok());
  }
  REQUIRE(machine.CompactStorage().ok());
  int history_tables = 0;
  for (const rocksdb::LiveFileMetaData& table :
       statemachine::testing::LiveTables(machine)) {
    INFO(table.name << " holds " << absl::CHexEscape(table.smallestkey)
                    << " .. " << absl::CHexEscape(table.largestkey));
    CHECK(table.largestkey.substr(0, 2) == table.smallestkey.substr(0, 2));
    if (table.smallestkey.starts_with("de")) ++history_tables;
  }
  CHECK(history_tables == 1);
}

TEST_CASE("PutKeyOf reads a put's key from its wire format, and nothing else",
          "[statemachine][mvcc]") {
  CHECK(PutKeyOf(Put("key-1", "value")) == "key-1");
  const std::string binary("\0k\xff\0", 4);
  CHECK(PutKeyOf(Put(binary, std::string(300, 'v'))) == binary);
  // A put with every other field set too.
  MvccCommand full;
  full.mutable_put()->set_key("full");
  full.mutable_put()->set_value("v");
  full.mutable_put()->set_lease(7);
  full.mutable_put()->set_prev_kv(true);
  full.mutable_put()->set_ignore_lease(true);
  CHECK(PutKeyOf(full.SerializeAsString()) == "full");
  // Fields before the key (protobuf writes them in field order, but a
  // parser accepts any): value (2) and lease (3), then the key (1).
  std::string put;
  put += '\x12';  // field 2, length-delimited
  put += '\x01';
  put += 'v';
  put += '\x18';  // field 3, varint
  put += '\x07';
  put += '\x0a';  // field 1, length-delimited
  put += '\x02';
  put += "ok";
  std::string command;
  command += '\x0a';  // MvccCommand.put
  command += static_cast<char>(put.size());
  command += put;
  MvccCommand parsed;
  REQUIRE(parsed.ParseFromString(command));
  REQUIRE(parsed.put().key() == "ok");
  CHECK(PutKeyOf(command) == "ok");

  // Not a put, or not a command.
  MvccCommand deletion;
  deletion.mutable_delete_range()->set_key("key-1");
  CHECK_FALSE(PutKeyOf(deletion.SerializeAsString()).has_value());
  CHECK_FALSE(PutKeyOf(IncrementTxn("key-1", 0, "v")).has_value());
  CHECK_FALSE(PutKeyOf(Put("", "v")).has_value());
  CHECK_FALSE(PutKeyOf("").has_value());
  CHECK_FALSE(PutKeyOf("garbage").has_value());
  // Cut anywhere inside the key: the length runs past the end.
  const std::string whole = Put("a-longer-key", "v");
  for (size_t size = 0; size + 3 < whole.size(); ++size) {
    INFO("cut at " << size);
    const std::optional<std::string_view> key =
        PutKeyOf(std::string_view(whole).substr(0, size));
    CHECK_FALSE(key.has_value());
  }
}

TEST_CASE(
    "mvcc state machine: a batch sees its own writes, and everything "
    "survives a reopen",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  const std::filesystem::path path = std::filesystem::path(dir.path()) / "sm";
  {
    MvccStateMachine machine(Options(path));
    REQUIRE(machine.Open().ok());
    // Three compare-and-puts in one batch: each sees the previous one.
    std::vector<std::string> responses =
        ApplyRaw(machine, {RawEntry(1, 1, Put("k", "0")),
                           RawEntry(2, 1, IncrementTxn("k", 1, "1")),
                           RawEntry(3, 1, IncrementTxn("k", 2, "2")),
                           RawEntry(4, 1, IncrementTxn("k", 2, "stale"))});
    CHECK(Decode(responses[1]).txn().succeeded());
    CHECK(Decode(responses[2]).txn().succeeded());
    CHECK_FALSE(Decode(responses[3]).txn().succeeded());
    CHECK(Decode(responses[3]).txn().header().revision() == 4);
    ApplyRaw(machine, {RawEntry(5, 1, Put("k/a", "a")),
                       RawEntry(6, 1, Put("k/b", "b"))});
    MvccResult range = Query(machine, Prefix("k"));
    REQUIRE(range.range().kvs_size() == 3);
    CHECK(range.range().kvs(0).value() == "2");
    CHECK(range.range().kvs(0).version() == 3);
    CHECK(range.range().header().revision() == 6);
    REQUIRE(machine.Sync().ok());
  }
  MvccStateMachine reopened(Options(path));
  absl::StatusOr<raft::AppliedState> applied = reopened.Open();
  REQUIRE(applied.ok());
  CHECK(applied->index == raft::LogIndex(6));
  MvccResult range = Query(reopened, Prefix("k/"));
  REQUIRE(range.range().kvs_size() == 2);
  CHECK(range.range().header().revision() == 6);
  std::vector<std::string> responses =
      ApplyRaw(reopened, {RawEntry(7, 1, Put("k/c", "c"))});
  CHECK(Decode(responses[0]).put().header().revision() == 7);
}

TEST_CASE(
    "mvcc state machine: a DeleteRange sees the stored keys overlaid with "
    "the batch's own puts and deletions",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  MvccStateMachine machine(Options(std::filesystem::path(dir.path()) / "sm"));
  REQUIRE(machine.Open().ok());
  ApplyRaw(
      machine,
      {RawEntry(1, 1, Put("r/a", "a")), RawEntry(2, 1, Put("r/b", "b")),
       RawEntry(3, 1, Put("r/c", "c")), RawEntry(4, 1, Put("s", "outside"))});
  const auto delete_range = [](const std::string& key, const std::string& end) {
    MvccCommand command;
    command.mutable_delete_range()->set_key(key);
    command.mutable_delete_range()->set_range_end(end);
    command.mutable_delete_range()->set_prev_kv(true);
    return command.SerializeAsString();
  };
  // One batch: delete a stored key, overwrite another, add one before and
  // one after the stored keys, then delete the whole prefix.
  std::vector<std::string> responses =
      ApplyRaw(machine, {RawEntry(5, 1, delete_range("r/b", "")),
                         RawEntry(6, 1, Put("r/c", "c2")),
                         RawEntry(7, 1, Put("r/0", "first")),
                         RawEntry(8, 1, Put("r/z", "last")),
                         RawEntry(9, 1, delete_range("r/", "r0"))});
  const etcdserverpb::DeleteRangeResponse deleted =
      Decode(responses[4]).delete_range();
  CHECK(deleted.deleted() == 4);
  std::vector<std::pair<std::string, std::string>> victims;
  for (const auto& kv : deleted.prev_kvs()) {
    victims.emplace_back(kv.key(), kv.value());
  }
  CHECK(victims ==
        std::vector<std::pair<std::string, std::string>>{
            {"r/0", "first"}, {"r/a", "a"}, {"r/c", "c2"}, {"r/z", "last"}});
  CHECK(Query(machine, Prefix("r/")).range().kvs_size() == 0);
  CHECK(Query(machine, Prefix("s")).range().kvs_size() == 1);
}

TEST_CASE(
    "mvcc state machine: the revision and compaction point a batch leaves "
    "are what reads and a reopen see",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  const std::filesystem::path path = std::filesystem::path(dir.path()) / "sm";
  MvccCommand compact;
  compact.mutable_compact()->set_revision(3);
  MvccQuery at_two = Prefix("k");
  at_two.mutable_range()->set_revision(2);
  {
    MvccStateMachine machine(Options(path));
    REQUIRE(machine.Open().ok());
    ApplyRaw(machine,
             {RawEntry(1, 1, Put("k", "a")), RawEntry(2, 1, Put("k", "b")),
              RawEntry(3, 1, Put("k", "c"))});
    CHECK(Query(machine, Prefix("k")).range().header().revision() == 4);
    CHECK(Query(machine, at_two).range().kvs(0).value() == "a");
    // A batch whose only change is the compaction point.
    ApplyRaw(machine, {RawEntry(4, 1, compact.SerializeAsString())});
    CHECK(Query(machine, at_two).message() == mvcc_errors::kCompacted);
    REQUIRE(machine.Sync().ok());
  }
  MvccStateMachine reopened(Options(path));
  REQUIRE(reopened.Open().ok());
  CHECK(Query(reopened, at_two).message() == mvcc_errors::kCompacted);
  CHECK(Query(reopened, Prefix("k")).range().header().revision() == 4);
  std::vector<std::string> responses = ApplyRaw(
      reopened, {RawEntry(5, 1, Put("k", "d")), RawEntry(6, 1, Put("j", "e"))});
  CHECK(Decode(responses[1]).put().header().revision() == 6);
}

TEST_CASE(
    "mvcc state machine: a snapshot restored on another replica gives "
    "the same history and HashKV",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  const std::filesystem::path root(dir.path());
  MvccStateMachine leader(Options(root / "leader"));
  REQUIRE(leader.Open().ok());
  std::vector<raft::Entry> entries;
  for (uint64_t i = 1; i <= 200; ++i) {
    entries.push_back(RawEntry(
        i, 2, Put(absl::StrCat("key", i % 17), absl::StrCat("value", i))));
  }
  ApplyRaw(leader, entries);
  const std::filesystem::path files = root / "snapshot";
  const raft::SnapshotMeta meta = WriteSnapshot(leader, files);

  MvccStateMachine follower(Options(root / "follower"));
  REQUIRE(follower.Open().ok());
  REQUIRE(follower.Restore(meta, files).ok());
  CHECK(follower.applied().index == raft::LogIndex(200));
  CHECK(Query(follower, Hash()).hash_kv().hash() ==
        Query(leader, Hash()).hash_kv().hash());
  // A read at a past revision works on the follower too.
  MvccQuery past = Prefix("key1");
  past.mutable_range()->set_revision(50);
  CHECK(Query(follower, past).SerializeAsString() ==
        Query(leader, past).SerializeAsString());
}

TEST_CASE(
    "mvcc state machine: after a restore the next batch continues from the "
    "snapshot's revision, behind or ahead of the replaced state",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  const std::filesystem::path root(dir.path());
  // A state at revision 11 (10 puts), captured.
  MvccStateMachine source(Options(root / "source"));
  REQUIRE(source.Open().ok());
  std::vector<raft::Entry> entries;
  for (uint64_t i = 1; i <= 10; ++i) {
    entries.push_back(RawEntry(i, 1, Put(absl::StrCat("k", i), "v")));
  }
  ApplyRaw(source, entries);
  const std::filesystem::path files = root / "snapshot";
  const raft::SnapshotMeta meta = WriteSnapshot(source, files);

  // Replicas that applied more (revision 21) and less (revision 3) than the
  // snapshot, in batches, before restoring it.
  for (const uint64_t applied : {20u, 2u}) {
    MvccStateMachine replica(Options(root / absl::StrCat("replica-", applied)));
    REQUIRE(replica.Open().ok());
    for (uint64_t i = 1; i <= applied; ++i) {
      ApplyRaw(replica, {RawEntry(i, 1, Put("other", absl::StrCat(i)))});
    }
    REQUIRE(replica.Restore(meta, files).ok());
    std::vector<std::string> responses = ApplyRaw(
        replica,
        {RawEntry(11, 1, Put("k11", "v")), RawEntry(12, 1, Put("k12", "v"))});
    CHECK(Decode(responses[0]).put().header().revision() == 12);
    CHECK(Decode(responses[1]).put().header().revision() == 13);
    CHECK(Query(replica, Prefix("k")).range().kvs_size() == 12);
    CHECK(Query(replica, Prefix("other")).range().kvs_size() == 0);
  }
}

TEST_CASE(
    "mvcc state machine: a malformed entry or query is answered with "
    "InvalidArgument and changes nothing",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  MvccStateMachine machine(Options(std::filesystem::path(dir.path()) / "sm"));
  REQUIRE(machine.Open().ok());
  std::vector<std::string> responses =
      ApplyRaw(machine, {RawEntry(1, 1, std::string("\xff\xff\xff", 3))});
  MvccResult result = Decode(responses[0]);
  CHECK(result.code() ==
        static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  CHECK_THAT(result.message(), Catch::Contains("not an MVCC command"));
  absl::StatusOr<std::string> bytes =
      machine.Query(std::string("\xff\xff\xff", 3));
  REQUIRE(bytes.ok());
  CHECK(Decode(*bytes).code() ==
        static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  CHECK(Query(machine, Hash()).hash_kv().header().revision() == 1);
}

TEST_CASE(
    "mvcc application: a query of a state older than a committed compaction "
    "is asked again, before the commit it is answered",
    "[statemachine][mvcc]") {
  MvccApplication application;
  statemachine::MemoryOrderedKv state;
  REQUIRE(application.Load(state).ok());
  // One entry per batch, as RocksDbKvStateMachine::Apply drives it.
  const auto apply = [&](const std::string& data) {
    absl::StatusOr<std::string> result = application.Apply(data, state);
    REQUIRE(result.ok());
    REQUIRE(application.BeforeWrite(state).ok());
    application.Committed();
    return Decode(*result);
  };
  apply(Put("k", "1"));  // revision 2
  apply(Put("k", "2"));  // revision 3
  statemachine::MemoryOrderedKv at_3 = state;
  apply(Put("k", "3"));  // revision 4
  MvccCommand compact;
  compact.mutable_compact()->set_revision(4);
  const std::string compact_data = compact.SerializeAsString();

  const auto value_in =
      [&](statemachine::MemoryOrderedKv& kv) -> absl::StatusOr<std::string> {
    absl::StatusOr<std::string> bytes =
        application.Query(Prefix("k").SerializeAsString(), kv);
    if (!bytes.ok()) return bytes.status();
    const MvccResult result = Decode(*bytes);
    REQUIRE(result.range().kvs_size() == 1);
    return result.range().kvs(0).value();
  };
  // Applied but not yet written: readers of earlier states still find k@3.
  absl::StatusOr<std::string> applied = application.Apply(compact_data, state);
  REQUIRE(applied.ok());
  REQUIRE(Decode(*applied).code() == 0);
  REQUIRE(application.BeforeWrite(state).ok());
  CHECK(*value_in(at_3) == "2");
  // Written: the index is pruned, and the old state is asked again.
  application.Committed();
  const absl::StatusOr<std::string> stale = value_in(at_3);
  CHECK(statemachine::IsQueryAgain(stale.status()));
  CHECK(*value_in(state) == "3");

  // A reload (Open, Restore) rebuilds the index from the kept records.
  MvccApplication reopened;
  REQUIRE(reopened.Load(state).ok());
  absl::StatusOr<std::string> bytes =
      reopened.Query(Prefix("k").SerializeAsString(), state);
  REQUIRE(bytes.ok());
  CHECK(Decode(*bytes).range().kvs(0).value() == "3");
  CHECK(Decode(*bytes).range().kvs(0).version() == 3);
}

TEST_CASE(
    "mvcc state machine: queries beside the apply thread read consistent "
    "states while puts and compactions are applied",
    "[statemachine][mvcc]") {
  testing::TempDir dir;
  MvccStateMachine machine(Options(std::filesystem::path(dir.path()) / "sm"));
  REQUIRE(machine.Open().ok());
  constexpr int kKeys = 10;
  constexpr int kBatches = 400;
  constexpr int kPutsPerBatch = 8;
  std::atomic<bool> done{false};
  std::mutex errors_mu;
  std::vector<std::string> errors;
  std::atomic<int64_t> reads{0};
  std::atomic<int64_t> compacted_reads{0};
  const auto fail = [&](std::string error) {
    std::lock_guard<std::mutex> lock(errors_mu);
    if (errors.size() < 10) errors.push_back(std::move(error));
  };
  // Each put's value names its own revision, so a reader can tell a value
  // from another revision (a record the index should not have named).
  const auto check_range = [&](const MvccResult& result, int64_t at) {
    const int64_t revision = at > 0 ? at : result.range().header().revision();
    // Revisions 2 to kKeys + 1 put each key once; none is deleted.
    if (revision > kKeys && result.range().kvs_size() != kKeys) {
      fail(absl::StrCat("read at ", revision, ": ", result.range().kvs_size(),
                        " keys"));
    }
    for (const mvccpb::KeyValue& kv : result.range().kvs()) {
      if (kv.value() != absl::StrCat("v", kv.mod_revision()) ||
          kv.mod_revision() > revision) {
        fail(absl::StrCat("read at ", revision, ": ", kv.key(), " = ",
                          kv.value(), " at mod revision ", kv.mod_revision()));
      }
    }
  };
  const auto reader = [&] {
    int64_t seen = 0;
    while (!done.load()) {
      MvccQuery query = Prefix("k");
      // Every other read is at a revision an earlier read saw.
      const int64_t at = reads.load() % 2 == 0 ? 0 : seen;
      query.mutable_range()->set_revision(at);
      absl::StatusOr<std::string> bytes =
          machine.Query(query.SerializeAsString());
      ++reads;
      if (!bytes.ok()) {
        fail(absl::StrCat("query failed: ", bytes.status().ToString()));
        continue;
      }
      MvccResult result;
      if (!result.ParseFromString(*bytes)) {
        fail("a result does not parse");
        continue;
      }
      if (result.code() != 0) {
        if (result.message() == mvcc_errors::kCompacted) {
          ++compacted_reads;
        } else {
          fail(absl::StrCat("read at ", at, ": ", result.message()));
        }
        continue;
      }
      check_range(result, at);
      seen = result.range().header().revision();
    }
  };
  std::thread first(reader);
  std::thread second(reader);

  uint64_t index = 0;
  int64_t revision = 1;
  for (int batch = 0; batch < kBatches; ++batch) {
    std::vector<raft::Entry> entries;
    for (int i = 0; i < kPutsPerBatch; ++i) {
      ++revision;
      entries.push_back(
          RawEntry(++index, 1,
                   Put(absl::StrCat("k", (batch * kPutsPerBatch + i) % kKeys),
                       absl::StrCat("v", revision))));
    }
    if (batch % 5 == 4) {
      MvccCommand compact;
      compact.mutable_compact()->set_revision(revision - 3);
      entries.push_back(RawEntry(++index, 1, compact.SerializeAsString()));
    }
    for (const std::string& response : ApplyRaw(machine, entries)) {
      if (Decode(response).code() != 0) {
        fail(absl::StrCat("apply: ", Decode(response).message()));
      }
    }
  }
  done = true;
  first.join();
  second.join();
  INFO(reads.load() << " reads, " << compacted_reads.load()
                    << " refused as compacted");
  for (const std::string& error : errors) UNSCOPED_INFO(error);
  CHECK(errors.empty());
  CHECK(reads.load() > 0);
  MvccResult last = Query(machine, Prefix("k"));
  CHECK(last.range().kvs_size() == kKeys);
  check_range(last, 0);
  CHECK(errors.empty());
}

std::string Alarm(etcdserverpb::AlarmRequest::AlarmAction action) {
  MvccCommand command;
  command.mutable_alarm()->set_action(action);
  command.mutable_alarm()->set_memberid(9);
  command.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
  return command.SerializeAsString();
}

bool Refused(const std::string& response) {
  return Decode(response).code() ==
         static_cast<int32_t>(absl::StatusCode::kResourceExhausted);
}

// The state machine keeps whether the NOSPACE alarm is on from batch to
// batch (MvccApplication); each case below fails if that knowledge goes
// stale: an alarm set or cleared by an earlier command of the same batch, by
// an earlier batch, by the state before a reopen, or by a restored snapshot.
TEST_CASE(
    "mvcc state machine: the NOSPACE alarm refuses puts from the next "
    "command on, in the batch, after it, after a reopen and on a replica "
    "restored from a snapshot",
    "[statemachine][mvcc]") {
  using etcdserverpb::AlarmRequest;
  testing::TempDir dir;
  const std::filesystem::path root(dir.path());
  {
    MvccStateMachine source(Options(root / "source"));
    REQUIRE(source.Open().ok());
    // A put first, so that "no alarm" is known before the alarm is raised.
    std::vector<std::string> responses =
        ApplyRaw(source, {RawEntry(1, 1, Put("a", "1")),
                          RawEntry(2, 1, Alarm(AlarmRequest::ACTIVATE)),
                          RawEntry(3, 1, Put("b", "1"))});
    CHECK_FALSE(Refused(responses[0]));
    CHECK(Refused(responses[2]));
    CHECK(Refused(ApplyRaw(source, {RawEntry(4, 1, Put("c", "1"))})[0]));

    // A replica that knows "no alarm" restores the source's state.
    MvccStateMachine replica(Options(root / "replica"));
    REQUIRE(replica.Open().ok());
    CHECK_FALSE(Refused(ApplyRaw(replica, {RawEntry(1, 1, Put("r", "1"))})[0]));
    const std::filesystem::path files = root / "snapshot";
    REQUIRE(replica.Restore(WriteSnapshot(source, files), files).ok());
    CHECK(Refused(ApplyRaw(replica, {RawEntry(5, 1, Put("d", "1"))})[0]));

    // Cleared, then raised again, in one batch.
    responses =
        ApplyRaw(source, {RawEntry(5, 1, Alarm(AlarmRequest::DEACTIVATE)),
                          RawEntry(6, 1, Put("e", "1")),
                          RawEntry(7, 1, Alarm(AlarmRequest::ACTIVATE)),
                          RawEntry(8, 1, Put("f", "1"))});
    CHECK_FALSE(Refused(responses[1]));
    CHECK(Refused(responses[3]));
    REQUIRE(source.Sync().ok());
  }
  MvccStateMachine reopened(Options(root / "source"));
  REQUIRE(reopened.Open().ok());
  CHECK(Refused(ApplyRaw(reopened, {RawEntry(9, 1, Put("g", "1"))})[0]));
  ApplyRaw(reopened, {RawEntry(10, 1, Alarm(AlarmRequest::DEACTIVATE))});
  CHECK_FALSE(Refused(ApplyRaw(reopened, {RawEntry(11, 1, Put("h", "1"))})[0]));
  MvccQuery all;
  all.mutable_range()->set_key("a");
  all.mutable_range()->set_range_end("z");
  const MvccResult range = Query(reopened, all);
  std::vector<std::string> keys;
  for (const auto& kv : range.range().kvs()) {
    keys.push_back(kv.key());
  }
  CHECK(keys == std::vector<std::string>{"a", "e", "h"});
}

}  // namespace
}  // namespace driftwood::mvcc
