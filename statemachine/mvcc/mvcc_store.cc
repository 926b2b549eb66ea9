#include "statemachine/mvcc/mvcc_store.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "raft/util/crc32c.h"

namespace driftwood::mvcc {

namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;
using etcdserverpb::RequestOp;
using mvccpb::KeyValue;

constexpr char kEvents = 'e';
// Layout 2 kept each key's latest record under 'l' + escaped key; its stores
// are refused rather than misread.
constexpr char kLayout2Latest = 'l';
constexpr char kLease = 'L';
constexpr char kLeaseAttachment = 'A';
// Layouts 2 and 3 (see mvcc_store.h) keep the revision under this name.
constexpr char kRevisionKey[] = "mrevision";
// Layout 1 (per-key history records, events naming only the key) kept it
// here; its stores are refused rather than misread.
constexpr char kLayout1RevisionKey[] = "mrev";
constexpr char kCompactKey[] = "mcompact";
constexpr char kAlarmsKey[] = "malarms";
// + member id (8 bytes, big endian) -> etcdserverpb.Member.
constexpr char kMemberPrefix[] = "mmember/";

// `bytes` (at most 8) low bytes of `value`, most significant first, in one
// append: each write builds an event key with two.
void AppendBigEndian(uint64_t value, int bytes, std::string* out) {
  char buffer[8];
  for (int i = bytes - 1; i >= 0; --i) {
    buffer[i] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
  out->append(buffer, static_cast<size_t>(bytes));
}

uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

// The first event key of `revision`.
std::string EventKey(int64_t revision) {
  std::string out(1, kEvents);
  AppendBigEndian(static_cast<uint64_t>(revision), 8, &out);
  return out;
}

// The event key of a change.
std::string EventKey(const KeyIndex::Change& change) {
  std::string out = EventKey(change.revision);
  AppendBigEndian(change.sub, 4, &out);
  return out;
}

// The change an event key (EventKey(change), 13 bytes) names.
KeyIndex::Change ChangeOfEventKey(std::string_view event_key, bool deleted) {
  return KeyIndex::Change{
      .revision = static_cast<int64_t>(ReadBigEndian(event_key.substr(1, 8))),
      .sub = static_cast<uint32_t>(ReadBigEndian(event_key.substr(9, 4))),
      .deleted = deleted};
}

// An event record: the key's length (4 bytes, big endian), the key, then the
// mvccpb.Event without prev_kv and with the key left out of its kv (the key
// index finds the previous change when a reader wants it).
// `event` is left as it was.
std::string EncodeEvent(mvccpb::Event& event) {
  std::unique_ptr<KeyValue> prev_kv(
      event.has_prev_kv() ? event.release_prev_kv() : nullptr);
  std::string key = std::move(*event.mutable_kv()->mutable_key());
  event.mutable_kv()->clear_key();
  std::string out;
  out.reserve(4 + key.size() + event.ByteSizeLong());
  AppendBigEndian(key.size(), 4, &out);
  out.append(key);
  event.AppendToString(&out);
  event.mutable_kv()->set_key(std::move(key));
  if (prev_kv != nullptr) event.set_allocated_prev_kv(prev_kv.release());
  return out;
}

// The key an event record is about (a view into `record`); nullopt when the
// record is too short to hold it.
std::optional<std::string_view> EventRecordKey(std::string_view record) {
  if (record.size() < 4) return std::nullopt;
  const uint64_t size = ReadBigEndian(record.substr(0, 4));
  if (record.size() - 4 < size) return std::nullopt;
  return record.substr(4, size);
}

// The event of an event record stored under `event_key`.
absl::Status DecodeEvent(std::string_view event_key, std::string_view record,
                         mvccpb::Event* event) {
  const std::optional<std::string_view> key = EventRecordKey(record);
  const std::string_view body =
      key.has_value() ? record.substr(4 + key->size()) : std::string_view();
  if (!key.has_value() ||
      !event->ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return absl::DataLossError(absl::StrCat(
        "mvcc: the event record of revision ",
        event_key.size() >= 9 ? ReadBigEndian(event_key.substr(1, 8)) : 0,
        " does not parse"));
  }
  if (event->has_prev_kv()) {
    return absl::DataLossError(absl::StrCat(
        "mvcc: the event record of revision ",
        event_key.size() >= 9 ? ReadBigEndian(event_key.substr(1, 8)) : 0,
        " carries a previous value: layout 2 wrote it, and this version "
        "does not read layout 2; start from an empty data folder"));
  }
  event->mutable_kv()->set_key(std::string(*key));
  return absl::OkStatus();
}

std::string LeaseKey(int64_t id) {
  std::string key(1, kLease);
  AppendBigEndian(static_cast<uint64_t>(id), 8, &key);
  return key;
}

std::string AttachmentKey(int64_t lease, std::string_view key) {
  std::string attachment(1, kLeaseAttachment);
  AppendBigEndian(static_cast<uint64_t>(lease), 8, &attachment);
  attachment.append(key);
  return attachment;
}

MvccResult Failure(absl::StatusCode code, absl::string_view message) {
  MvccResult result;
  result.set_code(static_cast<int32_t>(code));
  result.set_message(std::string(message));
  return result;
}

MvccResult Failure(const absl::Status& status) {
  return Failure(status.code(), status.message());
}

// A request error as an absl::Status, so that it can travel with StatusOr;
// IsRequestError tells it from a storage failure.
absl::Status RequestError(absl::StatusCode code, absl::string_view message) {
  absl::Status status(code, message);
  status.SetPayload("driftwood.mvcc.request", absl::Cord("1"));
  return status;
}

bool IsRequestError(const absl::Status& status) {
  return status.GetPayload("driftwood.mvcc.request").has_value();
}

absl::Status CheckKey(std::string_view key) {
  if (key.empty()) {
    return absl::InvalidArgumentError(mvcc_errors::kKeyNotProvided);
  }
  return absl::OkStatus();
}

struct Interval {
  std::string key;
  std::string range_end;
};

// The puts and deletes of one branch (nested Txns included), checked for
// etcd's duplicate-key rule (v3rpc/key.go checkIntervals).
absl::Status CheckBranch(
    const google::protobuf::RepeatedPtrField<RequestOp>& ops,
    std::vector<Interval>* deletes, std::set<std::string>* puts);

absl::Status CheckOps(
    const google::protobuf::RepeatedPtrField<RequestOp>& ops) {
  if (ops.size() > kMaxTxnOps) {
    return absl::InvalidArgumentError(mvcc_errors::kTooManyOps);
  }
  for (const RequestOp& op : ops) {
    absl::Status status;
    switch (op.request_case()) {
      case RequestOp::kRequestRange:
        status = ValidateRange(op.request_range());
        break;
      case RequestOp::kRequestPut:
        status = ValidatePut(op.request_put());
        break;
      case RequestOp::kRequestDeleteRange:
        status = ValidateDeleteRange(op.request_delete_range());
        break;
      case RequestOp::kRequestTxn:
        status = ValidateTxn(op.request_txn());
        break;
      case RequestOp::REQUEST_NOT_SET:
        break;
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status CheckBranch(
    const google::protobuf::RepeatedPtrField<RequestOp>& ops,
    std::vector<Interval>* deletes, std::set<std::string>* puts) {
  const absl::Status duplicate =
      absl::InvalidArgumentError(mvcc_errors::kDuplicateKey);
  for (const RequestOp& op : ops) {
    if (op.has_request_put()) {
      if (!puts->insert(op.request_put().key()).second) return duplicate;
    } else if (op.has_request_delete_range()) {
      deletes->push_back({op.request_delete_range().key(),
                          op.request_delete_range().range_end()});
    }
  }
  for (const RequestOp& op : ops) {
    if (!op.has_request_txn()) continue;
    // Either nested branch may run: each is checked against this branch, not
    // against the other.
    std::set<std::string> nested_puts;
    for (const auto* branch :
         {&op.request_txn().success(), &op.request_txn().failure()}) {
      std::vector<Interval> branch_deletes;
      std::set<std::string> branch_puts;
      if (absl::Status status =
              CheckBranch(*branch, &branch_deletes, &branch_puts);
          !status.ok()) {
        return status;
      }
      for (const std::string& key : branch_puts) {
        if (puts->contains(key)) return duplicate;
        nested_puts.insert(key);
      }
      deletes->insert(deletes->end(), branch_deletes.begin(),
                      branch_deletes.end());
    }
    puts->insert(nested_puts.begin(), nested_puts.end());
  }
  for (const std::string& key : *puts) {
    for (const Interval& interval : *deletes) {
      if (KeyInRange(key, interval.key, interval.range_end)) return duplicate;
    }
  }
  return absl::OkStatus();
}

template <typename T>
int Sign(const T& a, const T& b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

// etcd's compareKV: `kv` is the key's state, or all zero when absent.
bool CompareHolds(const Compare& compare, const KeyValue& kv) {
  int order = 0;
  switch (compare.target()) {
    case Compare::VALUE:
      order = Sign(kv.value(), compare.value());
      break;
    case Compare::VERSION:
      order = Sign(kv.version(), compare.version());
      break;
    case Compare::CREATE:
      order = Sign(kv.create_revision(), compare.create_revision());
      break;
    case Compare::MOD:
      order = Sign(kv.mod_revision(), compare.mod_revision());
      break;
    case Compare::LEASE:
      order = Sign(kv.lease(), compare.lease());
      break;
    default:
      return false;
  }
  switch (compare.result()) {
    case Compare::EQUAL:
      return order == 0;
    case Compare::GREATER:
      return order > 0;
    case Compare::LESS:
      return order < 0;
    case Compare::NOT_EQUAL:
      return order != 0;
    default:
      return false;
  }
}

bool BranchPuts(const google::protobuf::RepeatedPtrField<RequestOp>& ops) {
  for (const RequestOp& op : ops) {
    if (op.has_request_put()) return true;
    if (op.has_request_txn() && (BranchPuts(op.request_txn().success()) ||
                                 BranchPuts(op.request_txn().failure()))) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool KeyInRange(std::string_view key, std::string_view start,
                std::string_view range_end) {
  if (range_end.empty()) return key == start;
  if (range_end == std::string_view("\0", 1)) return key >= start;
  return key >= start && key < range_end;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(end.back() + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

absl::Status ValidatePut(const etcdserverpb::PutRequest& request) {
  // etcd's checkPutRequest.
  if (request.ignore_value() && !request.value().empty()) {
    return absl::InvalidArgumentError(mvcc_errors::kValueProvided);
  }
  if (request.ignore_lease() && request.lease() != 0) {
    return absl::InvalidArgumentError(mvcc_errors::kLeaseProvided);
  }
  return CheckKey(request.key());
}

absl::Status ValidateDeleteRange(
    const etcdserverpb::DeleteRangeRequest& request) {
  return CheckKey(request.key());
}

absl::Status ValidateRange(const etcdserverpb::RangeRequest& request) {
  return CheckKey(request.key());
}

absl::Status ValidateTxn(const etcdserverpb::TxnRequest& request) {
  if (request.compare_size() > kMaxTxnOps) {
    return absl::InvalidArgumentError(mvcc_errors::kTooManyOps);
  }
  for (const Compare& compare : request.compare()) {
    if (absl::Status status = CheckKey(compare.key()); !status.ok()) {
      return status;
    }
  }
  for (const auto* branch : {&request.success(), &request.failure()}) {
    if (absl::Status status = CheckOps(*branch); !status.ok()) return status;
    std::vector<Interval> deletes;
    std::set<std::string> puts;
    if (absl::Status status = CheckBranch(*branch, &deletes, &puts);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------

// One write request: every change gets revision `revision`, numbered by sub.
class MvccStore::WriteTxn {
 public:
  WriteTxn(MvccStore& store)
      : store_(store), kv_(*store.kv_), revision_(store.revision_ + 1) {}

  bool changed() const { return sub_ > 0; }
  // What reads inside the request see as current.
  int64_t read_revision() const {
    return changed() ? revision_ : store_.revision_;
  }

  // The key as the request leaves it so far (its writes included), written
  // into *kv; false (and *kv untouched) when the key is absent.
  //
  // With `for_write`, the caller records a change of `key` next (a put or a
  // deletion, through WriteRecords), so the index's cached value is moved
  // into *kv instead of copied (KeyIndex::TakeNewest).
  absl::StatusOr<bool> LatestInto(std::string_view key, KeyValue* kv,
                                  bool for_write = false) {
    bool from_cache = false;
    const std::optional<KeyIndex::Change> newest =
        for_write ? store_.index_->TakeNewest(key, kv, &from_cache)
                  : store_.index_->NewestInto(key, kv, &from_cache);
    if (!newest.has_value() || newest->deleted) return false;
    if (from_cache) {
      kv->set_key(key.data(), key.size());
      return true;
    }
    absl::StatusOr<KeyValue> stored = store_.ReadPut(key, *newest);
    if (!stored.ok()) return stored.status();
    *kv = *std::move(stored);
    return true;
  }

  absl::StatusOr<std::optional<KeyValue>> Latest(std::string_view key) {
    KeyValue kv;
    absl::StatusOr<bool> found = LatestInto(key, &kv);
    if (!found.ok()) return found.status();
    if (!*found) return std::optional<KeyValue>();
    return std::optional<KeyValue>(std::move(kv));
  }

  // The hot path of every etcd put: the event is built in place, its
  // prev_kv moved out of the key index's cache, which the put refills.
  // `donated_value`, when set, is request.value() itself, which the put may
  // take instead of copying.
  absl::StatusOr<etcdserverpb::PutResponse> Put(
      const etcdserverpb::PutRequest& request,
      std::string* donated_value = nullptr) {
    mvccpb::Event event;
    event.set_type(mvccpb::Event::PUT);
    absl::StatusOr<bool> existed =
        LatestInto(request.key(), event.mutable_prev_kv(), /*for_write=*/true);
    if (!existed.ok()) return existed.status();
    if (!*existed) event.clear_prev_kv();
    const KeyValue* previous = *existed ? &event.prev_kv() : nullptr;
    KeyValue& kv = *event.mutable_kv();
    kv.set_key(request.key());
    kv.set_mod_revision(revision_);
    if (previous != nullptr) {
      kv.set_create_revision(previous->create_revision());
      kv.set_version(previous->version() + 1);
    } else {
      kv.set_create_revision(revision_);
      kv.set_version(1);
    }
    if (request.ignore_value() && previous != nullptr) {
      kv.set_value(previous->value());
    } else if (donated_value != nullptr) {
      kv.set_value(std::move(*donated_value));
    } else {
      kv.set_value(request.value());
    }
    kv.set_lease(request.ignore_lease() && previous != nullptr
                     ? previous->lease()
                     : request.lease());
    etcdserverpb::PutResponse response;
    if (request.prev_kv() && previous != nullptr) {
      *response.mutable_prev_kv() = *previous;
    }
    if (absl::Status status = WriteEvent(std::move(event)); !status.ok()) {
      return status;
    }
    return response;
  }

  absl::StatusOr<etcdserverpb::DeleteRangeResponse> DeleteRange(
      const etcdserverpb::DeleteRangeRequest& request) {
    std::vector<KeyValue> victims;
    if (absl::Status status =
            store_.Collect(request.key(), request.range_end(),
                           std::numeric_limits<int64_t>::max(), &victims);
        !status.ok()) {
      return status;
    }
    etcdserverpb::DeleteRangeResponse response;
    response.set_deleted(static_cast<int64_t>(victims.size()));
    for (KeyValue& victim : victims) {
      KeyValue tombstone;
      tombstone.set_key(victim.key());
      tombstone.set_mod_revision(revision_);
      if (absl::Status status = Write(tombstone, /*deleted=*/true, &victim);
          !status.ok()) {
        return status;
      }
      if (request.prev_kv()) *response.add_prev_kvs() = std::move(victim);
    }
    return response;
  }

  // etcd's compareToPath: the outcome of every compare of a Txn, nested
  // Txns of the branches that run included (depth first), all evaluated
  // against the state before the Txn writes anything.
  absl::Status ComparePath(const etcdserverpb::TxnRequest& request,
                           std::vector<bool>* path) {
    bool succeeded = true;
    for (const Compare& compare : request.compare()) {
      absl::StatusOr<bool> holds = Holds(compare);
      if (!holds.ok()) return holds.status();
      if (!*holds) {
        succeeded = false;
        break;
      }
    }
    path->push_back(succeeded);
    for (const RequestOp& op :
         succeeded ? request.success() : request.failure()) {
      if (!op.has_request_txn()) continue;
      if (absl::Status status = ComparePath(op.request_txn(), path);
          !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  // etcd's checkRequests: the failures the branches that will run can meet
  // (`path` from ComparePath, consumed from *position), found before any of
  // them runs, so that a failing Txn changes nothing.
  absl::Status Precheck(
      const google::protobuf::RepeatedPtrField<RequestOp>& ops,
      const std::vector<bool>& path, size_t* position) {
    for (const RequestOp& op : ops) {
      if (op.has_request_range()) {
        const int64_t revision = op.request_range().revision();
        if (revision > 0) {
          if (absl::Status status = store_.CheckReadRevision(revision);
              !status.ok()) {
            return status;
          }
        }
      } else if (op.has_request_put()) {
        if (absl::Status status = PrecheckPut(op.request_put()); !status.ok()) {
          return status;
        }
      } else if (op.has_request_txn()) {
        const bool succeeded = path[(*position)++];
        if (absl::Status status =
                Precheck(succeeded ? op.request_txn().success()
                                   : op.request_txn().failure(),
                         path, position);
            !status.ok()) {
          return status;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status PrecheckPut(const etcdserverpb::PutRequest& request) {
    if (request.ignore_value() || request.ignore_lease()) {
      absl::StatusOr<std::optional<KeyValue>> previous = Latest(request.key());
      if (!previous.ok()) return previous.status();
      if (!previous->has_value()) {
        return RequestError(absl::StatusCode::kInvalidArgument,
                            mvcc_errors::kKeyNotFound);
      }
    }
    if (request.lease() != 0 && !request.ignore_lease()) {
      absl::StatusOr<std::optional<int64_t>> ttl =
          store_.LeaseTTL(request.lease());
      if (!ttl.ok()) return ttl.status();
      if (!ttl->has_value()) {
        return RequestError(absl::StatusCode::kNotFound,
                            mvcc_errors::kLeaseNotFound);
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Holds(const Compare& compare) {
    std::vector<KeyValue> kvs;
    if (absl::Status status = store_.Collect(compare.key(), compare.range_end(),
                                             read_revision(), &kvs);
        !status.ok()) {
      return status;
    }
    if (kvs.empty()) {
      if (compare.target() == Compare::VALUE) return false;
      return CompareHolds(compare, KeyValue());
    }
    for (const KeyValue& kv : kvs) {
      if (!CompareHolds(compare, kv)) return false;
    }
    return true;
  }

  // Runs the branches `path` chose (ComparePath), consumed from *position.
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(
      const etcdserverpb::TxnRequest& request, const std::vector<bool>& path,
      size_t* position) {
    const bool succeeded = path[(*position)++];
    etcdserverpb::TxnResponse response;
    response.set_succeeded(succeeded);
    for (const RequestOp& op :
         succeeded ? request.success() : request.failure()) {
      etcdserverpb::ResponseOp* out = response.add_responses();
      // Each response carries the revision as of its operation (etcd: the
      // old revision until the request's first change, then the new one).
      struct StampRevision {
        WriteTxn& txn;
        etcdserverpb::ResponseOp* out;
        ~StampRevision() {
          etcdserverpb::ResponseHeader* header = nullptr;
          switch (out->response_case()) {
            case etcdserverpb::ResponseOp::kResponseRange:
              header = out->mutable_response_range()->mutable_header();
              break;
            case etcdserverpb::ResponseOp::kResponsePut:
              header = out->mutable_response_put()->mutable_header();
              break;
            case etcdserverpb::ResponseOp::kResponseDeleteRange:
              header = out->mutable_response_delete_range()->mutable_header();
              break;
            case etcdserverpb::ResponseOp::kResponseTxn:
              header = out->mutable_response_txn()->mutable_header();
              break;
            case etcdserverpb::ResponseOp::RESPONSE_NOT_SET:
              break;
          }
          if (header != nullptr) header->set_revision(txn.read_revision());
        }
      } stamp{*this, out};
      switch (op.request_case()) {
        case RequestOp::kRequestRange: {
          absl::StatusOr<etcdserverpb::RangeResponse> range =
              store_.RangeAt(op.request_range(), read_revision());
          if (!range.ok()) return range.status();
          *out->mutable_response_range() = *std::move(range);
          break;
        }
        case RequestOp::kRequestPut: {
          absl::StatusOr<etcdserverpb::PutResponse> put = Put(op.request_put());
          if (!put.ok()) return put.status();
          *out->mutable_response_put() = *std::move(put);
          break;
        }
        case RequestOp::kRequestDeleteRange: {
          absl::StatusOr<etcdserverpb::DeleteRangeResponse> deleted =
              DeleteRange(op.request_delete_range());
          if (!deleted.ok()) return deleted.status();
          *out->mutable_response_delete_range() = *std::move(deleted);
          break;
        }
        case RequestOp::kRequestTxn: {
          absl::StatusOr<etcdserverpb::TxnResponse> nested =
              Txn(op.request_txn(), path, position);
          if (!nested.ok()) return nested.status();
          *out->mutable_response_txn() = *std::move(nested);
          break;
        }
        case RequestOp::REQUEST_NOT_SET:
          break;
      }
    }
    return response;
  }

  // Makes the request's changes the store's: the new revision, if any.
  absl::Status Commit() {
    if (!changed()) return absl::OkStatus();
    store_.revision_ = revision_;
    return store_.SaveMeta();
  }

  // Writes `kv` (a put, or the deletion of kv.key()) at this request's
  // revision; `previous` is the key's latest record before it, if any. Keeps
  // the lease attachments and records the event for watchers.
  absl::Status Write(const KeyValue& kv, bool deleted,
                     const KeyValue* previous) {
    mvccpb::Event event;
    event.set_type(deleted ? mvccpb::Event::DELETE : mvccpb::Event::PUT);
    *event.mutable_kv() = kv;
    if (previous != nullptr) *event.mutable_prev_kv() = *previous;
    return WriteEvent(std::move(event));
  }
  // Write with the event built: its kv the put (or the deleted key), its
  // prev_kv, when set, the key's latest record before it.
  absl::Status WriteEvent(mvccpb::Event event) {
    const KeyValue& kv = event.kv();
    const bool deleted = event.type() == mvccpb::Event::DELETE;
    const int64_t old_lease = event.has_prev_kv() ? event.prev_kv().lease() : 0;
    const int64_t new_lease = deleted ? 0 : kv.lease();
    if (old_lease != new_lease) {
      if (old_lease != 0) {
        if (absl::Status status =
                kv_.Delete(AttachmentKey(old_lease, kv.key()));
            !status.ok()) {
          return status;
        }
      }
      if (new_lease != 0) {
        if (absl::Status status =
                kv_.Put(AttachmentKey(new_lease, kv.key()), "");
            !status.ok()) {
          return status;
        }
      }
    }
    if (absl::Status status = WriteRecords(event); !status.ok()) return status;
    if (store_.changes_ != nullptr) {
      store_.changes_->events.push_back(std::move(event));
    }
    return absl::OkStatus();
  }

 private:
  // The change's event record, and its place in the key index.
  absl::Status WriteRecords(mvccpb::Event& event) {
    const KeyIndex::Change change{
        .revision = revision_,
        .sub = sub_++,
        .deleted = event.type() == mvccpb::Event::DELETE};
    // Every earlier command wrote at a lower revision (the store revision
    // only grows, and is saved in the same atomic write as the records), so
    // the event key is new.
    if (absl::Status status = kv_.PutNew(EventKey(change), EncodeEvent(event));
        !status.ok()) {
      return status;
    }
    store_.index_->Record(event.kv().key(), change,
                          change.deleted ? nullptr : &event.kv());
    return absl::OkStatus();
  }

  MvccStore& store_;
  OrderedKv& kv_;
  const int64_t revision_;
  uint32_t sub_ = 0;
};

// ---------------------------------------------------------------------------

MvccStore::MvccStore(OrderedKv* kv)
    : kv_(kv),
      own_index_(std::make_unique<KeyIndex>()),
      index_(own_index_.get()) {}

MvccStore::MvccStore(OrderedKv* kv, KeyIndex* index) : kv_(kv), index_(index) {}

MvccStore::~MvccStore() = default;

absl::Status MvccStore::BuildIndex(const OrderedKv& kv, KeyIndex* index) {
  index->Clear();
  bool layout2 = false;
  absl::Status status = kv.Scan(std::string(1, kLayout2Latest),
                                std::string(1, kLayout2Latest + 1),
                                [&](std::string_view, std::string_view) {
                                  layout2 = true;
                                  return false;
                                });
  if (!status.ok()) return status;
  if (layout2) {
    return absl::FailedPreconditionError(
        "mvcc: this store was written by an earlier Driftwood in layout 2 "
        "(a latest record per key), which this version does not read; start "
        "from an empty data folder");
  }
  absl::Status parse_error;
  status = kv.Scan(std::string(1, kEvents), std::string(1, kEvents + 1),
                   [&](std::string_view event_key, std::string_view record) {
                     mvccpb::Event event;
                     if (event_key.size() != 13) {
                       parse_error = absl::DataLossError(absl::StrCat(
                           "mvcc: an event record's key has ", event_key.size(),
                           " bytes where 13 were expected"));
                       return false;
                     }
                     parse_error = DecodeEvent(event_key, record, &event);
                     if (!parse_error.ok()) return false;
                     // The scan is in (revision, sub) order, so each key's
                     // changes are recorded in order.
                     const KeyIndex::Change change = ChangeOfEventKey(
                         event_key, event.type() == mvccpb::Event::DELETE);
                     index->Record(event.kv().key(), change,
                                   change.deleted ? nullptr : &event.kv());
                     return true;
                   });
  if (!status.ok()) return status;
  if (!parse_error.ok()) return parse_error;
  MvccStore meta(const_cast<OrderedKv*>(&kv), index);
  if (absl::Status loaded = meta.Load(); !loaded.ok()) return loaded;
  // The records at or before the compaction point are the ones compaction
  // kept; reads below it are refused from now on.
  index->Prune(meta.compact_revision());
  return absl::OkStatus();
}

absl::Status MvccStore::Load() {
  no_space_alarm_.reset();
  for (auto [name, field] : {std::pair{kRevisionKey, &revision_},
                             std::pair{kCompactKey, &compact_revision_}}) {
    absl::StatusOr<std::optional<std::string>> bytes = kv_->Get(name);
    if (!bytes.ok()) return bytes.status();
    if (!bytes->has_value()) continue;
    if ((*bytes)->size() != 8) {
      return absl::DataLossError(absl::StrCat("mvcc: the record '", name,
                                              "' has ", (*bytes)->size(),
                                              " bytes where 8 were expected"));
    }
    *field = static_cast<int64_t>(ReadBigEndian(**bytes));
  }
  if (revision_ == 1) {
    absl::StatusOr<std::optional<std::string>> layout1 =
        kv_->Get(kLayout1RevisionKey);
    if (!layout1.ok()) return layout1.status();
    if (layout1->has_value()) {
      return absl::FailedPreconditionError(
          "mvcc: this store was written by an earlier Driftwood in layout 1 "
          "(per-key history records), which this version does not read; "
          "start from an empty data folder");
    }
  }
  if (own_index_ != nullptr) return BuildIndex(*kv_, index_);
  return absl::OkStatus();
}

absl::Status MvccStore::SaveMeta() {
  if (defer_meta_writes_) {
    meta_dirty_ = true;
    return absl::OkStatus();
  }
  return WriteMeta();
}

absl::Status MvccStore::WriteMeta(bool compact_changed) {
  meta_dirty_ = false;
  std::string revision;
  AppendBigEndian(static_cast<uint64_t>(revision_), 8, &revision);
  if (absl::Status status = kv_->Put(kRevisionKey, revision); !status.ok()) {
    return status;
  }
  if (!compact_changed) return absl::OkStatus();
  std::string compact;
  AppendBigEndian(static_cast<uint64_t>(compact_revision_), 8, &compact);
  return kv_->Put(kCompactKey, compact);
}

absl::Status MvccStore::CheckReadRevision(int64_t revision) const {
  if (revision > revision_) {
    return RequestError(absl::StatusCode::kOutOfRange,
                        mvcc_errors::kFutureRevision);
  }
  if (revision < compact_revision_) {
    return RequestError(absl::StatusCode::kOutOfRange, mvcc_errors::kCompacted);
  }
  return absl::OkStatus();
}

absl::StatusOr<KeyValue> MvccStore::ReadPut(KeyIndex::Visible visible) const {
  if (visible.cached.has_value()) {
    visible.cached->set_key(std::move(visible.key));
    return *std::move(visible.cached);
  }
  return ReadPut(visible.key, visible.change);
}

absl::StatusOr<KeyValue> MvccStore::ReadPut(
    std::string_view key, const KeyIndex::Change& change) const {
  const std::string event_key = EventKey(change);
  absl::StatusOr<std::optional<std::string>> record = kv_->Get(event_key);
  if (!record.ok()) return record.status();
  if (!record->has_value()) {
    return absl::DataLossError(
        absl::StrCat("mvcc: the key index names the change of revision ",
                     change.revision, " (sub ", change.sub, ") to a key of ",
                     key.size(), " bytes, which the store does not hold"));
  }
  mvccpb::Event event;
  if (absl::Status status = DecodeEvent(event_key, **record, &event);
      !status.ok()) {
    return status;
  }
  if (event.type() != mvccpb::Event::PUT || event.kv().key() != key ||
      event.kv().mod_revision() != change.revision) {
    return absl::DataLossError(
        absl::StrCat("mvcc: the change of revision ", change.revision, " (sub ",
                     change.sub, ") is not the put of a key of ", key.size(),
                     " bytes that the key index says it is"));
  }
  return std::move(*event.mutable_kv());
}

absl::Status MvccStore::Collect(std::string_view key,
                                std::string_view range_end, int64_t revision,
                                std::vector<KeyValue>* out) const {
  std::vector<KeyIndex::Visible> visible;
  if (absl::Status status =
          index_->VisibleAt(key, range_end, revision, &visible);
      !status.ok()) {
    return status;
  }
  out->reserve(out->size() + visible.size());
  for (KeyIndex::Visible& found : visible) {
    absl::StatusOr<KeyValue> kv = ReadPut(std::move(found));
    if (!kv.ok()) return kv.status();
    out->push_back(*std::move(kv));
  }
  return absl::OkStatus();
}

absl::StatusOr<etcdserverpb::RangeResponse> MvccStore::RangeAt(
    const RangeRequest& request, int64_t current) const {
  int64_t revision = request.revision() <= 0 ? current : request.revision();
  if (revision > current) {
    return RequestError(absl::StatusCode::kOutOfRange,
                        mvcc_errors::kFutureRevision);
  }
  if (revision < compact_revision_) {
    return RequestError(absl::StatusCode::kOutOfRange, mvcc_errors::kCompacted);
  }
  std::vector<KeyValue> kvs;
  if (absl::Status status =
          Collect(request.key(), request.range_end(), revision, &kvs);
      !status.ok()) {
    return status;
  }
  etcdserverpb::RangeResponse response;
  response.mutable_header()->set_revision(current);
  response.set_count(static_cast<int64_t>(kvs.size()));
  const auto within = [](int64_t value, int64_t min, int64_t max) {
    return (min == 0 || value >= min) && (max == 0 || value <= max);
  };
  std::erase_if(kvs, [&](const KeyValue& kv) {
    return !within(kv.mod_revision(), request.min_mod_revision(),
                   request.max_mod_revision()) ||
           !within(kv.create_revision(), request.min_create_revision(),
                   request.max_create_revision());
  });
  // etcd (etcdserver/apply.go) sorts the whole range only with an order or
  // a filter; otherwise it reads the first limit + 1 keys in key order and
  // sorts just those.
  const bool filtered =
      request.min_mod_revision() != 0 || request.max_mod_revision() != 0 ||
      request.min_create_revision() != 0 || request.max_create_revision() != 0;
  if (request.sort_order() == RangeRequest::NONE && !filtered &&
      request.limit() > 0 &&
      static_cast<int64_t>(kvs.size()) > request.limit() + 1) {
    kvs.resize(static_cast<size_t>(request.limit() + 1));
  }
  RangeRequest::SortOrder order = request.sort_order();
  if (order == RangeRequest::NONE &&
      request.sort_target() != RangeRequest::KEY) {
    order = RangeRequest::ASCEND;
  }
  if (order != RangeRequest::NONE) {
    const auto less = [&](const KeyValue& a, const KeyValue& b) {
      switch (request.sort_target()) {
        case RangeRequest::VERSION:
          return a.version() < b.version();
        case RangeRequest::CREATE:
          return a.create_revision() < b.create_revision();
        case RangeRequest::MOD:
          return a.mod_revision() < b.mod_revision();
        case RangeRequest::VALUE:
          return a.value() < b.value();
        default:
          return a.key() < b.key();
      }
    };
    if (order == RangeRequest::DESCEND) {
      std::stable_sort(
          kvs.begin(), kvs.end(),
          [&](const KeyValue& a, const KeyValue& b) { return less(b, a); });
    } else {
      std::stable_sort(kvs.begin(), kvs.end(), less);
    }
  }
  if (request.limit() > 0 &&
      static_cast<int64_t>(kvs.size()) > request.limit()) {
    kvs.resize(static_cast<size_t>(request.limit()));
    response.set_more(true);
  }
  if (!request.count_only()) {
    for (KeyValue& kv : kvs) {
      if (request.keys_only()) kv.clear_value();
      *response.add_kvs() = std::move(kv);
    }
  }
  return response;
}

absl::StatusOr<etcdserverpb::RangeResponse> MvccStore::Range(
    const RangeRequest& request) const {
  if (absl::Status status = ValidateRange(request); !status.ok()) {
    return RequestError(status.code(), status.message());
  }
  return RangeAt(request, revision_);
}

absl::Status MvccStore::Compact(int64_t revision) {
  // Reads at `revision` or later need, of each key, only its changes after
  // `revision` and the put before them (KeyIndex::Prune).
  std::vector<std::string> doomed;
  index_->ForEachCompacted(
      revision, [&](std::string_view, const KeyIndex::Change& change) {
        doomed.push_back(EventKey(change));
      });
  std::sort(doomed.begin(), doomed.end());
  for (const std::string& key : doomed) {
    if (absl::Status deleted = kv_->Delete(key); !deleted.ok()) return deleted;
  }
  compact_revision_ = revision;
  // A host that batches writes prunes its index after the write (UseMeta),
  // so that readers of the state before it still find their changes.
  if (!defer_meta_writes_) index_->Prune(revision);
  return SaveMeta();
}

absl::StatusOr<etcdserverpb::HashKVResponse> MvccStore::HashKV(
    int64_t revision) const {
  if (revision <= 0) revision = revision_;
  if (absl::Status status = CheckReadRevision(revision); !status.ok()) {
    return status;
  }
  // The state at `revision` in key order, then the changes the store keeps
  // up to it: equal on members that applied the same writes and compactions,
  // whatever their current revision.
  std::vector<KeyValue> state;
  if (absl::Status status =
          Collect(std::string(1, '\0'), std::string(1, '\0'), revision, &state);
      !status.ok()) {
    return status;
  }
  uint32_t crc = 0;
  std::string bytes;
  for (const KeyValue& kv : state) {
    bytes.clear();
    kv.AppendToString(&bytes);
    crc = raft::Crc32c(bytes, crc);
  }
  absl::Status status =
      kv_->Scan(EventKey(compact_revision_ + 1), EventKey(revision + 1),
                [&](std::string_view event, std::string_view record) {
                  crc = raft::Crc32c(event, crc);
                  crc = raft::Crc32c(record, crc);
                  return true;
                });
  if (!status.ok()) return status;
  etcdserverpb::HashKVResponse response;
  response.mutable_header()->set_revision(revision_);
  response.set_hash(crc);
  response.set_compact_revision(compact_revision_);
  return response;
}

absl::Status MvccStore::ReadAlarms(etcdserverpb::AlarmResponse* alarms) const {
  absl::StatusOr<std::optional<std::string>> bytes = kv_->Get(kAlarmsKey);
  if (!bytes.ok()) return bytes.status();
  if (bytes->has_value() && !alarms->ParseFromString(**bytes)) {
    return absl::DataLossError("mvcc: the alarm record does not parse");
  }
  return absl::OkStatus();
}

absl::StatusOr<etcdserverpb::AlarmResponse> MvccStore::Alarms() const {
  etcdserverpb::AlarmResponse alarms;
  if (absl::Status status = ReadAlarms(&alarms); !status.ok()) return status;
  alarms.mutable_header()->set_revision(revision_);
  return alarms;
}

namespace {

bool HoldsNoSpace(const etcdserverpb::AlarmResponse& alarms) {
  for (const etcdserverpb::AlarmMember& alarm : alarms.alarms()) {
    if (alarm.alarm() == etcdserverpb::NOSPACE) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<bool> MvccStore::NoSpaceAlarm() {
  if (no_space_alarm_.has_value()) return *no_space_alarm_;
  etcdserverpb::AlarmResponse alarms;
  if (absl::Status status = ReadAlarms(&alarms); !status.ok()) return status;
  no_space_alarm_ = HoldsNoSpace(alarms);
  return *no_space_alarm_;
}

absl::StatusOr<std::optional<int64_t>> MvccStore::LeaseTTL(int64_t id) const {
  absl::StatusOr<std::optional<std::string>> bytes = kv_->Get(LeaseKey(id));
  if (!bytes.ok()) return bytes.status();
  if (!bytes->has_value()) return std::optional<int64_t>();
  if ((*bytes)->size() != 8) {
    return absl::DataLossError(absl::StrCat("mvcc: the record of lease ", id,
                                            " has ", (*bytes)->size(),
                                            " bytes where 8 were expected"));
  }
  return std::optional<int64_t>(static_cast<int64_t>(ReadBigEndian(**bytes)));
}

absl::StatusOr<MvccResult> MvccStore::GrantLease(
    const etcdserverpb::LeaseGrantRequest& request) {
  if (request.id() == 0) {
    return Failure(absl::StatusCode::kNotFound, mvcc_errors::kLeaseNotFound);
  }
  if (request.ttl() > kMaxLeaseTTL) {
    return Failure(absl::StatusCode::kOutOfRange,
                   mvcc_errors::kLeaseTTLTooLarge);
  }
  absl::StatusOr<std::optional<int64_t>> existing = LeaseTTL(request.id());
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    return Failure(absl::StatusCode::kFailedPrecondition,
                   mvcc_errors::kLeaseExists);
  }
  std::string ttl;
  AppendBigEndian(static_cast<uint64_t>(request.ttl()), 8, &ttl);
  if (absl::Status status = kv_->Put(LeaseKey(request.id()), ttl);
      !status.ok()) {
    return status;
  }
  if (changes_ != nullptr) {
    changes_->granted_leases.emplace_back(request.id(), request.ttl());
  }
  MvccResult result;
  etcdserverpb::LeaseGrantResponse* response = result.mutable_lease_grant();
  response->mutable_header()->set_revision(revision_);
  response->set_id(request.id());
  response->set_ttl(request.ttl());
  return result;
}

absl::StatusOr<MvccResult> MvccStore::RevokeLease(int64_t id) {
  absl::StatusOr<std::optional<int64_t>> ttl = LeaseTTL(id);
  if (!ttl.ok()) return ttl.status();
  if (!ttl->has_value()) {
    return Failure(absl::StatusCode::kNotFound, mvcc_errors::kLeaseNotFound);
  }
  const std::string first = AttachmentKey(id, "");
  std::string end(1, kLeaseAttachment);
  AppendBigEndian(static_cast<uint64_t>(id) + 1, 8, &end);
  if (static_cast<uint64_t>(id) == ~uint64_t{0}) {
    end = std::string(1, kLeaseAttachment + 1);
  }
  std::vector<std::string> keys;
  absl::Status status =
      kv_->Scan(first, end, [&](std::string_view attachment, std::string_view) {
        keys.emplace_back(attachment.substr(first.size()));
        return true;
      });
  if (!status.ok()) return status;
  // Every attached key is deleted at one revision (etcd's lessor revokes in
  // one transaction), on every member alike.
  WriteTxn txn(*this);
  for (const std::string& key : keys) {
    absl::StatusOr<std::optional<KeyValue>> latest = txn.Latest(key);
    if (!latest.ok()) return latest.status();
    if (!latest->has_value() || (*latest)->lease() != id) {
      return absl::DataLossError(
          absl::StrCat("mvcc: lease ", id, " lists a key of ", key.size(),
                       " bytes that is not attached to it"));
    }
    KeyValue tombstone;
    tombstone.set_key(key);
    tombstone.set_mod_revision(revision_ + 1);
    if (absl::Status written =
            txn.Write(tombstone, /*deleted=*/true, &**latest);
        !written.ok()) {
      return written;
    }
  }
  if (absl::Status deleted = kv_->Delete(LeaseKey(id)); !deleted.ok()) {
    return deleted;
  }
  if (absl::Status committed = txn.Commit(); !committed.ok()) {
    return committed;
  }
  if (changes_ != nullptr) changes_->revoked_leases.push_back(id);
  MvccResult result;
  result.mutable_lease_revoke()->mutable_header()->set_revision(revision_);
  return result;
}

absl::StatusOr<LeaseTable> MvccStore::Leases() const {
  LeaseTable table;
  bool well_formed = true;
  absl::Status status = kv_->Scan(
      std::string(1, kLease), std::string(1, kLease + 1),
      [&](std::string_view key, std::string_view value) {
        if (key.size() != 9 || value.size() != 8) {
          well_formed = false;
          return false;
        }
        etcdserverpb::LeaseGrantRequest* lease = table.add_leases();
        lease->set_id(static_cast<int64_t>(ReadBigEndian(key.substr(1))));
        lease->set_ttl(static_cast<int64_t>(ReadBigEndian(value)));
        return true;
      });
  if (!status.ok()) return status;
  if (!well_formed) {
    return absl::DataLossError("mvcc: a lease record is malformed");
  }
  table.set_revision(revision_);
  return table;
}

absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse>
MvccStore::LeaseTimeToLive(
    const etcdserverpb::LeaseTimeToLiveRequest& request) const {
  etcdserverpb::LeaseTimeToLiveResponse response;
  response.mutable_header()->set_revision(revision_);
  response.set_id(request.id());
  absl::StatusOr<std::optional<int64_t>> ttl = LeaseTTL(request.id());
  if (!ttl.ok()) return ttl.status();
  if (!ttl->has_value()) {
    response.set_ttl(-1);
    return response;
  }
  response.set_ttl(**ttl);
  response.set_grantedttl(**ttl);
  if (request.keys()) {
    const std::string first = AttachmentKey(request.id(), "");
    std::string end(1, kLeaseAttachment);
    AppendBigEndian(static_cast<uint64_t>(request.id()) + 1, 8, &end);
    if (static_cast<uint64_t>(request.id()) == ~uint64_t{0}) {
      end = std::string(1, kLeaseAttachment + 1);
    }
    absl::Status status = kv_->Scan(
        first, end, [&](std::string_view attachment, std::string_view) {
          response.add_keys(std::string(attachment.substr(first.size())));
          return true;
        });
    if (!status.ok()) return status;
  }
  return response;
}

absl::StatusOr<MvccResult> MvccStore::Apply(const MvccCommand& command) {
  return ApplyRecording(command, nullptr);
}

absl::StatusOr<MvccResult> MvccStore::Apply(MvccCommand&& command) {
  return ApplyRecording(command, &command);
}

absl::StatusOr<MvccResult> MvccStore::ApplyRecording(const MvccCommand& command,
                                                     MvccCommand* donor) {
  absl::StatusOr<MvccResult> result = ApplyCommand(command, donor);
  if (result.ok() && changes_ != nullptr) {
    changes_->revision = revision_;
    changes_->compact_revision = compact_revision_;
  }
  return result;
}

absl::StatusOr<MvccResult> MvccStore::ApplyCommand(const MvccCommand& command,
                                                   MvccCommand* donor) {
  // A request error leaves the OrderedKv as it was: every check that can fail
  // runs before the first write.
  MvccResult result;
  absl::Status validation;
  bool writes_keys = false;
  switch (command.command_case()) {
    case MvccCommand::kPut:
      validation = ValidatePut(command.put());
      writes_keys = true;
      break;
    case MvccCommand::kDeleteRange:
      validation = ValidateDeleteRange(command.delete_range());
      break;
    case MvccCommand::kTxn:
      validation = ValidateTxn(command.txn());
      writes_keys = BranchPuts(command.txn().success()) ||
                    BranchPuts(command.txn().failure());
      break;
    case MvccCommand::kCompact:
    case MvccCommand::kAlarm:
    case MvccCommand::kPublish:
      break;
    case MvccCommand::kLeaseGrant:
      // etcd's capped applier refuses grants under the NOSPACE alarm too.
      writes_keys = true;
      break;
    case MvccCommand::kLeaseRevoke:
      return RevokeLease(command.lease_revoke().id());
    case MvccCommand::COMMAND_NOT_SET:
      return Failure(absl::StatusCode::kInvalidArgument,
                     "mvcc: a command with no request");
  }
  if (!validation.ok()) return Failure(validation);
  if (writes_keys) {
    absl::StatusOr<bool> no_space = NoSpaceAlarm();
    if (!no_space.ok()) return no_space.status();
    if (*no_space) {
      return Failure(absl::StatusCode::kResourceExhausted,
                     mvcc_errors::kNoSpace);
    }
  }

  if (command.has_lease_grant()) return GrantLease(command.lease_grant());

  WriteTxn txn(*this);
  const auto finish = [&](auto response,
                          auto* out) -> absl::StatusOr<MvccResult> {
    if (!response.ok()) {
      if (IsRequestError(response.status())) return Failure(response.status());
      return response.status();
    }
    if (absl::Status status = txn.Commit(); !status.ok()) return status;
    *out = *std::move(response);
    out->mutable_header()->set_revision(revision_);
    return std::move(result);
  };
  switch (command.command_case()) {
    case MvccCommand::kPut: {
      if (absl::Status status = txn.PrecheckPut(command.put()); !status.ok()) {
        if (IsRequestError(status)) return Failure(status);
        return status;
      }
      return finish(
          txn.Put(command.put(), donor != nullptr
                                     ? donor->mutable_put()->mutable_value()
                                     : nullptr),
          result.mutable_put());
    }
    case MvccCommand::kDeleteRange:
      return finish(txn.DeleteRange(command.delete_range()),
                    result.mutable_delete_range());
    case MvccCommand::kTxn: {
      // etcd evaluates every compare first (nested ones included), then
      // checks the requests of the branches that will run, then runs them.
      std::vector<bool> path;
      if (absl::Status status = txn.ComparePath(command.txn(), &path);
          !status.ok()) {
        return status;
      }
      size_t checked = 1;
      if (absl::Status status = txn.Precheck(
              path[0] ? command.txn().success() : command.txn().failure(), path,
              &checked);
          !status.ok()) {
        if (IsRequestError(status)) return Failure(status);
        return status;
      }
      size_t position = 0;
      absl::StatusOr<etcdserverpb::TxnResponse> response =
          txn.Txn(command.txn(), path, &position);
      return finish(std::move(response), result.mutable_txn());
    }
    case MvccCommand::kCompact: {
      const int64_t revision = command.compact().revision();
      if (revision <= compact_revision_) {
        return Failure(absl::StatusCode::kOutOfRange, mvcc_errors::kCompacted);
      }
      if (revision > revision_) {
        return Failure(absl::StatusCode::kOutOfRange,
                       mvcc_errors::kFutureRevision);
      }
      if (absl::Status status = Compact(revision); !status.ok()) return status;
      result.mutable_compact()->mutable_header()->set_revision(revision_);
      return result;
    }
    case MvccCommand::kAlarm: {
      absl::StatusOr<etcdserverpb::AlarmResponse> alarms = Alarms();
      if (!alarms.ok()) return alarms.status();
      const etcdserverpb::AlarmRequest& request = command.alarm();
      auto* list = alarms->mutable_alarms();
      auto it = std::find_if(list->begin(), list->end(), [&](const auto& a) {
        return a.memberid() == request.memberid() &&
               a.alarm() == request.alarm();
      });
      etcdserverpb::AlarmResponse* response = result.mutable_alarm();
      response->mutable_header()->set_revision(revision_);
      if (request.action() == etcdserverpb::AlarmRequest::ACTIVATE &&
          request.alarm() != etcdserverpb::NONE) {
        etcdserverpb::AlarmMember member;
        member.set_memberid(request.memberid());
        member.set_alarm(request.alarm());
        if (it == list->end()) *list->Add() = member;
        *response->add_alarms() = member;
      } else if (request.action() == etcdserverpb::AlarmRequest::DEACTIVATE) {
        if (it == list->end()) return result;
        *response->add_alarms() = *it;
        list->erase(it);
      } else {
        *response = *alarms;
        return result;
      }
      alarms->clear_header();
      if (absl::Status status =
              kv_->Put(kAlarmsKey, alarms->SerializeAsString());
          !status.ok()) {
        return status;
      }
      no_space_alarm_ = HoldsNoSpace(*alarms);
      return result;
    }
    case MvccCommand::kPublish: {
      if (command.publish().id() == 0) {
        return Failure(absl::StatusCode::kInvalidArgument,
                       "mvcc: a member with id 0");
      }
      std::string key(kMemberPrefix);
      AppendBigEndian(command.publish().id(), 8, &key);
      if (absl::Status status =
              kv_->Put(key, command.publish().SerializeAsString());
          !status.ok()) {
        return status;
      }
      return result;
    }
    case MvccCommand::kLeaseGrant:
    case MvccCommand::kLeaseRevoke:
    case MvccCommand::COMMAND_NOT_SET:
      break;
  }
  return result;
}

absl::StatusOr<EventsResult> MvccStore::Events(
    const EventsRequest& request) const {
  if (request.start_revision < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("mvcc: events from revision ", request.start_revision,
                     ": revisions start at 1"));
  }
  if (request.start_revision <= compact_revision_) {
    return RequestError(absl::StatusCode::kOutOfRange, mvcc_errors::kCompacted);
  }
  const int64_t end = request.end_revision <= 0
                          ? revision_
                          : std::min(request.end_revision, revision_);
  EventsResult result;
  result.through_revision = end;
  if (request.start_revision > end) return result;

  // Revisions are never split: max_events ends the read after the revision
  // that reaches it, max_bytes before the first revision that starts at or
  // above it.
  int64_t stopped_after = 0;
  size_t bytes = 0;
  absl::Status parse_error;
  absl::Status status = kv_->Scan(
      EventKey(request.start_revision), EventKey(end + 1),
      [&](std::string_view event_key, std::string_view record) {
        const auto revision =
            static_cast<int64_t>(ReadBigEndian(event_key.substr(1, 8)));
        if (stopped_after != 0 && revision > stopped_after) return false;
        const std::optional<std::string_view> key = EventRecordKey(record);
        if (key.has_value() &&
            !KeyInRange(*key, request.key, request.range_end)) {
          return true;
        }
        if (request.max_bytes != 0 && bytes >= request.max_bytes &&
            revision != result.events.back().kv().mod_revision()) {
          stopped_after = result.events.back().kv().mod_revision();
          return false;
        }
        mvccpb::Event& event = result.events.emplace_back();
        parse_error = DecodeEvent(event_key, record, &event);
        if (!parse_error.ok()) return false;
        if (request.prev_kv) {
          parse_error = FillPrevKv(event_key, &event);
          if (!parse_error.ok()) return false;
        }
        bytes += event.ByteSizeLong();
        if (request.max_events != 0 && stopped_after == 0 &&
            result.events.size() >= request.max_events) {
          stopped_after = revision;
        }
        return true;
      });
  if (!status.ok()) return status;
  if (!parse_error.ok()) return parse_error;
  if (stopped_after != 0) result.through_revision = stopped_after;
  return result;
}

absl::Status MvccStore::FillPrevKv(std::string_view event_key,
                                   mvccpb::Event* event) const {
  const KeyIndex::Change change =
      ChangeOfEventKey(event_key, event->type() == mvccpb::Event::DELETE);
  absl::StatusOr<std::optional<KeyIndex::Change>> before =
      index_->Before(event->kv().key(), change);
  if (!before.ok()) return before.status();
  if (!before->has_value() || (*before)->deleted) return absl::OkStatus();
  absl::StatusOr<KeyValue> previous = ReadPut(event->kv().key(), **before);
  if (!previous.ok()) return previous.status();
  *event->mutable_prev_kv() = *std::move(previous);
  return absl::OkStatus();
}

absl::StatusOr<etcdserverpb::MemberListResponse> MvccStore::Members() const {
  etcdserverpb::MemberListResponse members;
  const std::string start(kMemberPrefix);
  std::string end = start;
  end.back() = static_cast<char>(end.back() + 1);
  bool parsed = true;
  absl::Status status =
      kv_->Scan(start, end, [&](std::string_view, std::string_view value) {
        parsed = members.add_members()->ParseFromArray(
            value.data(), static_cast<int>(value.size()));
        return parsed;
      });
  if (!status.ok()) return status;
  if (!parsed)
    return absl::DataLossError("mvcc: a member record does not parse");
  members.mutable_header()->set_revision(revision_);
  return members;
}

absl::StatusOr<MvccResult> MvccStore::Query(const MvccQuery& query) const {
  MvccResult result;
  const auto answer = [&](auto response,
                          auto* out) -> absl::StatusOr<MvccResult> {
    if (!response.ok()) {
      if (IsRequestError(response.status())) return Failure(response.status());
      return response.status();
    }
    *out = *std::move(response);
    return result;
  };
  switch (query.query_case()) {
    case MvccQuery::kRange:
      return answer(Range(query.range()), result.mutable_range());
    case MvccQuery::kHashKv:
      return answer(HashKV(query.hash_kv().revision()),
                    result.mutable_hash_kv());
    case MvccQuery::kAlarms:
      return answer(Alarms(), result.mutable_alarm());
    case MvccQuery::kMembers:
      return answer(Members(), result.mutable_member_list());
    case MvccQuery::kEvents: {
      const EventsQuery& events = query.events();
      EventsResponse* response = result.mutable_events();
      response->set_revision(revision_);
      response->set_compact_revision(compact_revision_);
      if (events.start_revision() >= 1 &&
          events.start_revision() <= compact_revision_) {
        response->set_compacted(true);
        return result;
      }
      absl::StatusOr<EventsResult> read = Events(
          EventsRequest{.key = events.key(),
                        .range_end = events.range_end(),
                        .start_revision = events.start_revision(),
                        .end_revision = events.end_revision(),
                        .prev_kv = events.prev_kv(),
                        .max_events = static_cast<size_t>(events.max_events()),
                        .max_bytes = static_cast<size_t>(events.max_bytes())});
      if (!read.ok()) {
        if (IsRequestError(read.status())) return Failure(read.status());
        return read.status();
      }
      response->set_through_revision(read->through_revision);
      for (mvccpb::Event& event : read->events) {
        *response->add_events() = std::move(event);
      }
      return result;
    }
    case MvccQuery::kLeaseTimeToLive:
      return answer(LeaseTimeToLive(query.lease_time_to_live()),
                    result.mutable_lease_time_to_live());
    case MvccQuery::kLeases:
      return answer(Leases(), result.mutable_leases());
    case MvccQuery::QUERY_NOT_SET:
      break;
  }
  return Failure(absl::StatusCode::kInvalidArgument,
                 "mvcc: a query with no request");
}

}  // namespace driftwood::mvcc
