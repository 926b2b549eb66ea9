// Driftwood: MvccStore, etcd's multi-version key-value model over an
// OrderedKv (docs/design.md "The etcd-compatible store").
//
// Revisions (as etcd 3.4 keeps them):
//  * The store revision starts at 1. Each write request that changes something
//    adds exactly 1: a Put always counts (even with an unchanged value); a
//    DeleteRange that matches nothing does not. Every operation of one Txn
//    shares one revision.
//  * Put: mod_revision is the new revision; create_revision is kept when the
//    key exists, else the new revision; version is the old version + 1 (1 on
//    create, and again 1 after a delete). The lease is replaced unless
//    ignore_lease.
//  * Reads at revision R see, per key, its newest record at or before R. R <= 0
//    means the current revision; R above it is a future revision; R below the
//    compaction point is compacted (reading at exactly the compaction point
//    works).
//  * Compact(C) drops every change at or before C; reads at C or later need
//    none of them.
//
// Errors carry etcd's exact messages (clients match on the text), with the
// absl code matching etcd's gRPC code (mvcc_errors below).
//
// Layout in the OrderedKv (layout 3):
//   "e" + revision (8 bytes, big endian) + sub (4 bytes) -> the change: the
//        key's length (4 bytes, big endian), the key, then the mvccpb.Event
//        (the put or deletion) without prev_kv and without the key in kv. In
//        revision order: watch catch-up reads them in sequence, and finds
//        the value an event replaced through the key index. A put's record also
//        holds the key's value for as long as the put is the key's newest
//        change at or before some readable revision: compaction keeps it.
//   "m" + name -> the store's own state: revision ("mrevision"), compaction
//        point, alarms, the members' published attributes
//   "L" + lease id (8 bytes, big endian) -> the granted TTL (8 bytes)
//   "A" + lease id (8 bytes) + key -> "": the keys attached to a lease
// Which change holds a key's value at a revision is the KeyIndex's answer
// (key_index.h), kept in memory and rebuilt from the changes when a store is
// loaded: a put appends one record (history is appended, never inserted
// among the keys) and a read fetches one record per key it returns.
// Compact(C) deletes every change at or before C except each key's newest
// one when that is a put.
// Earlier layouts are refused (FailedPrecondition) instead of misread:
// layout 1 (before 2026-12) kept a record per key and revision, layout 2
// (2026-12) a latest record per key ("l" + escaped key).
//
// Thread safety: one writer. A store given a shared KeyIndex (the one a host
// keeps across stores, MvccApplication) may read on any thread beside the
// writer, each reader through its own store over one consistent state of the
// OrderedKv; such a read may fail with QueryAgainError (ordered_kv.h). A
// store with its own index reads from one thread at a time.
#ifndef DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STORE_H_
#define DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "statemachine/mvcc/key_index.h"
#include "statemachine/mvcc/proto/etcdserverpb/rpc.pb.h"
#include "statemachine/mvcc/proto/mvcc_command.pb.h"
#include "statemachine/ordered_kv.h"

namespace driftwood::mvcc {

using statemachine::OrderedKv;

// etcd's error messages (etcdserver/api/v3rpc/rpctypes/error.go).
namespace mvcc_errors {
inline constexpr char kKeyNotProvided[] = "etcdserver: key is not provided";
inline constexpr char kKeyNotFound[] = "etcdserver: key not found";
inline constexpr char kTooManyOps[] =
    "etcdserver: too many operations in txn request";
inline constexpr char kDuplicateKey[] =
    "etcdserver: duplicate key given in txn request";
inline constexpr char kRequestTooLarge[] = "etcdserver: request is too large";
inline constexpr char kCompacted[] =
    "etcdserver: mvcc: required revision has been compacted";
inline constexpr char kFutureRevision[] =
    "etcdserver: mvcc: required revision is a future revision";
inline constexpr char kLeaseNotFound[] =
    "etcdserver: requested lease not found";
inline constexpr char kNoSpace[] = "etcdserver: mvcc: database space exceeded";
inline constexpr char kLeaseExists[] = "etcdserver: lease already exists";
inline constexpr char kLeaseProvided[] = "etcdserver: lease is provided";
inline constexpr char kValueProvided[] = "etcdserver: value is provided";
inline constexpr char kLeaseTTLTooLarge[] = "etcdserver: too large lease TTL";
}  // namespace mvcc_errors

// The most operations in a Txn's compare, success or failure list.
inline constexpr int kMaxTxnOps = 128;
// The largest request etcd accepts (1.5 MiB).
inline constexpr size_t kMaxRequestBytes = 1536 * 1024;

// The checks etcd makes before proposing (v3rpc/key.go): a key is given, a
// Txn has at most kMaxTxnOps operations per list, and no branch (nested Txns
// included) puts one key twice or puts a key inside a range it deletes.
// InvalidArgument with etcd's message.
absl::Status ValidatePut(const etcdserverpb::PutRequest& request);
absl::Status ValidateDeleteRange(
    const etcdserverpb::DeleteRangeRequest& request);
absl::Status ValidateRange(const etcdserverpb::RangeRequest& request);
absl::Status ValidateTxn(const etcdserverpb::TxnRequest& request);

// The largest lease TTL etcd grants, in seconds.
inline constexpr int64_t kMaxLeaseTTL = 9'000'000'000;

// Whether `key` is in etcd's range [start, range_end) (empty range_end: the
// key alone; "\0": every key >= start).
bool KeyInRange(std::string_view key, std::string_view start,
                std::string_view range_end);

// The end of the range of keys starting with `prefix` ("\0" when every byte
// is 0xff): what `etcdctl get --prefix` sends as range_end.
std::string PrefixEnd(std::string_view prefix);

// What MvccStore::Events reads: the changes of revisions [start_revision,
// end_revision] to the keys of [key, range_end), with etcd's range rules
// (empty range_end: the key alone; "\0": every key >= key).
struct EventsRequest {
  std::string key;
  std::string range_end;
  // Required: at least 1.
  int64_t start_revision = 1;
  // <= 0: the current revision.
  int64_t end_revision = 0;
  // Each event also carries the key's value before it (etcd's prev_kv).
  bool prev_kv = false;
  // Stop after the first revision that brings the events to at least this
  // many (0: no limit). Revisions are never split.
  size_t max_events = 0;
  // Stop after the first revision that brings the events' encoded size to
  // at least this many bytes (0: no limit). Revisions are never split.
  size_t max_bytes = 0;
};

struct EventsResult {
  // In revision order, and in the order the revision's request wrote them.
  std::vector<mvccpb::Event> events;
  // The last revision read: end_revision (capped at the current revision),
  // or less when max_events stopped early. A reader continues after it.
  int64_t through_revision = 0;
};

// What applying writes changed, for the watchers and the lessor of a server
// (filled when the store is given one with set_changes).
struct AppliedChanges {
  // Every event in revision order, each with its prev_kv when the key had a
  // value before.
  std::vector<mvccpb::Event> events;
  // Leases granted (ID and TTL) and removed (revoked or expired), in order.
  std::vector<std::pair<int64_t, int64_t>> granted_leases;
  std::vector<int64_t> revoked_leases;
  // The store's revision and compaction point after the last write
  // recorded here.
  int64_t revision = 0;
  int64_t compact_revision = 0;
};

class MvccStore {
 public:
  // `kv` must outlive the store; it may hold a store written before. The
  // store keeps its own KeyIndex, built by Load.
  explicit MvccStore(OrderedKv* kv);
  // A store over `index`, which a host keeps across the stores it makes for
  // one state and builds with BuildIndex (not owned; must outlive the store).
  MvccStore(OrderedKv* kv, KeyIndex* index);
  ~MvccStore();

  // Loads the revision and compaction point from the OrderedKv, and builds
  // the store's own KeyIndex (a shared one is the host's to build).
  // FailedPrecondition for a store an earlier layout wrote.
  absl::Status Load();

  // Rebuilds `index` from the changes `kv` holds, which a store of this
  // layout wrote (FailedPrecondition otherwise, DataLoss for a record that
  // does not parse). Reads every change record.
  static absl::Status BuildIndex(const OrderedKv& kv, KeyIndex* index);

  int64_t revision() const { return revision_; }
  int64_t compact_revision() const { return compact_revision_; }

  // Applies one committed write and returns its result; request errors
  // (etcd's) are in the result's code and message and change nothing. A
  // non-OK status is a storage failure.
  absl::StatusOr<MvccResult> Apply(const MvccCommand& command);
  // The same, free to move the command's bytes (a put's value) into what it
  // writes instead of copying them; `command` is left valid but unspecified.
  absl::StatusOr<MvccResult> Apply(MvccCommand&& command);
  // Answers a read.
  absl::StatusOr<MvccResult> Query(const MvccQuery& query) const;

  // Apply appends what it changed to `changes` (none: nothing is recorded).
  void set_changes(AppliedChanges* changes) { changes_ = changes; }

  // For a host that applies many commands in one atomic write of the
  // OrderedKv (MvccApplication): instead of Load, UseMeta carries the
  // revision and compaction point that the previous command's store left;
  // after DeferMetaWrites, applying no longer writes them to the OrderedKv
  // but sets meta_dirty(), and the host must call WriteMeta (on a store
  // given the final UseMeta) before the write; `compact_changed` false
  // leaves the compaction record as it is (the host knows it holds the
  // same value). Until then the OrderedKv's
  // own records are stale, so only stores given UseMeta may read it. It
  // also defers pruning the shared KeyIndex: once the write is done, the host
  // calls index.Prune(compact_revision()) if the compaction point moved.
  // `no_space_alarm`, when known, is whether the alarm record holds a
  // NOSPACE alarm as the previous command's store left it
  // (known_no_space_alarm()); unknown, the first write that asks reads the
  // record.
  void UseMeta(int64_t revision, int64_t compact_revision,
               std::optional<bool> no_space_alarm = std::nullopt) {
    revision_ = revision;
    compact_revision_ = compact_revision;
    no_space_alarm_ = no_space_alarm;
  }
  void DeferMetaWrites() { defer_meta_writes_ = true; }
  bool meta_dirty() const { return meta_dirty_; }
  // Whether the alarm record holds a NOSPACE alarm, once this store read or
  // wrote the record (or was told by UseMeta); nullopt before.
  std::optional<bool> known_no_space_alarm() const { return no_space_alarm_; }
  absl::Status WriteMeta(bool compact_changed = true);

  // The requests themselves; errors as the file comment says.
  absl::StatusOr<etcdserverpb::RangeResponse> Range(
      const etcdserverpb::RangeRequest& request) const;
  absl::StatusOr<etcdserverpb::HashKVResponse> HashKV(int64_t revision) const;
  absl::StatusOr<etcdserverpb::AlarmResponse> Alarms() const;
  // The members that published their attributes, by id.
  absl::StatusOr<etcdserverpb::MemberListResponse> Members() const;
  // The changes a watch reports (etcd's mvccpb.Event): a PUT carries the
  // key-value as of its revision, a DELETE the key and the deletion's
  // revision as mod_revision. OutOfRange with etcd's compacted message when
  // start_revision <= compact_revision() (those events are gone; etcd still
  // serves the puts of the compaction revision itself), InvalidArgument when
  // start_revision < 1. A start after the end reads nothing.
  absl::StatusOr<EventsResult> Events(const EventsRequest& request) const;
  // Every lease and its granted TTL, by id.
  absl::StatusOr<LeaseTable> Leases() const;
  // A lease's granted TTL and attached keys (TTL -1 and grantedTTL 0 when it
  // does not exist); TTL is the granted TTL.
  absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> LeaseTimeToLive(
      const etcdserverpb::LeaseTimeToLiveRequest& request) const;

 private:
  struct Record;
  class WriteTxn;

  // `donor`, when set, is `command` itself, whose bytes may be moved.
  // ApplyRecording is Apply: ApplyCommand, then the store's revision and
  // compaction point into changes_.
  absl::StatusOr<MvccResult> ApplyRecording(const MvccCommand& command,
                                            MvccCommand* donor);
  absl::StatusOr<MvccResult> ApplyCommand(const MvccCommand& command,
                                          MvccCommand* donor);
  absl::Status CheckReadRevision(int64_t revision) const;
  // The live key-values of [key, range_end) as of `revision` (none skipped).
  absl::Status Collect(std::string_view key, std::string_view range_end,
                       int64_t revision,
                       std::vector<mvccpb::KeyValue>* out) const;
  // The key-value that `change` of `key` put, from its event record.
  absl::StatusOr<mvccpb::KeyValue> ReadPut(
      std::string_view key, const KeyIndex::Change& change) const;
  // Sets the prev_kv of `event`, read from the event record under
  // `event_key`: the key's change before it, when that was a put.
  absl::Status FillPrevKv(std::string_view event_key,
                          mvccpb::Event* event) const;
  // The key-value of a put the index found: its cached copy, else read.
  absl::StatusOr<mvccpb::KeyValue> ReadPut(KeyIndex::Visible visible) const;
  absl::StatusOr<etcdserverpb::RangeResponse> RangeAt(
      const etcdserverpb::RangeRequest& request, int64_t current) const;
  absl::Status Compact(int64_t revision);
  // Reads the alarm record only while known_no_space_alarm() is unknown.
  absl::StatusOr<bool> NoSpaceAlarm();
  // Parses the alarm record into *alarms (left empty without one).
  absl::Status ReadAlarms(etcdserverpb::AlarmResponse* alarms) const;
  absl::Status SaveMeta();
  // The granted TTL of lease `id`, or nullopt when there is no such lease.
  absl::StatusOr<std::optional<int64_t>> LeaseTTL(int64_t id) const;
  absl::StatusOr<MvccResult> GrantLease(
      const etcdserverpb::LeaseGrantRequest& request);
  absl::StatusOr<MvccResult> RevokeLease(int64_t id);

  OrderedKv* const kv_;
  std::unique_ptr<KeyIndex> own_index_;
  KeyIndex* const index_;
  AppliedChanges* changes_ = nullptr;
  int64_t revision_ = 1;
  int64_t compact_revision_ = 0;
  bool defer_meta_writes_ = false;
  bool meta_dirty_ = false;
  // Every write asks whether writes are refused (NoSpaceAlarm); the alarm
  // record changes only through an Alarm command of this class, so once
  // read it is kept here, and hosts carry it from store to store (UseMeta).
  std::optional<bool> no_space_alarm_;
};

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STORE_H_
