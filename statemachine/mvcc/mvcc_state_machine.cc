#include "statemachine/mvcc/mvcc_state_machine.h"

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace driftwood::mvcc {

namespace {

std::string Malformed(const char* what, size_t bytes) {
  MvccResult result;
  result.set_code(static_cast<int32_t>(absl::StatusCode::kInvalidArgument));
  result.set_message(absl::StrCat("mvcc: ", bytes, " bytes are not ", what));
  return result.SerializeAsString();
}

// A length-delimited field's tag (protobuf wire type 2).
constexpr uint32_t LengthDelimitedTag(uint32_t field) {
  return (field << 3) | 2;
}

// The payload of a length-delimited field whose tag was just read, as a view
// into the bytes `in` reads (which start at `base`).
std::optional<std::string_view> LengthDelimited(
    google::protobuf::io::CodedInputStream& in, const char* base, size_t size) {
  uint32_t length = 0;
  if (!in.ReadVarint32(&length)) return std::nullopt;
  const auto at = static_cast<size_t>(in.CurrentPosition());
  if (length > size - at) return std::nullopt;
  return std::string_view(base + at, length);
}

}  // namespace

std::optional<std::string_view> PutKeyOf(std::string_view command) {
  namespace io = google::protobuf::io;
  if (command.size() > static_cast<size_t>(INT32_MAX)) return std::nullopt;
  // MvccCommand is a oneof: a put is field 1 alone.
  io::CodedInputStream outer(reinterpret_cast<const uint8_t*>(command.data()),
                             static_cast<int>(command.size()));
  if (outer.ReadTag() != LengthDelimitedTag(MvccCommand::kPutFieldNumber)) {
    return std::nullopt;
  }
  const std::optional<std::string_view> put =
      LengthDelimited(outer, command.data(), command.size());
  if (!put.has_value()) return std::nullopt;
  io::CodedInputStream inner(reinterpret_cast<const uint8_t*>(put->data()),
                             static_cast<int>(put->size()));
  for (uint32_t tag = inner.ReadTag(); tag != 0; tag = inner.ReadTag()) {
    if (tag == LengthDelimitedTag(etcdserverpb::PutRequest::kKeyFieldNumber)) {
      return LengthDelimited(inner, put->data(), put->size());
    }
    if (!google::protobuf::internal::WireFormatLite::SkipField(&inner, tag)) {
      return std::nullopt;
    }
  }
  return std::nullopt;  // a put of the empty key; nothing to warm
}

void MvccApplication::Prefetch(const std::vector<std::string_view>& entries) {
  std::vector<std::string_view> keys;
  keys.reserve(entries.size());
  for (std::string_view entry : entries) {
    if (std::optional<std::string_view> key = PutKeyOf(entry)) {
      keys.push_back(*key);
    }
  }
  if (!keys.empty()) index_.Prefetch(keys);
}

absl::StatusOr<std::string> MvccApplication::Apply(std::string_view data,
                                                   OrderedKv& store) {
  MvccCommand command;
  if (!command.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    return Malformed("an MVCC command", data.size());
  }
  MvccStore mvcc(&store, &index_);
  if (batch_meta_.has_value()) {
    mvcc.UseMeta(batch_meta_->revision, batch_meta_->compact_revision,
                 batch_meta_->no_space_alarm);
  } else if (stored_meta_.has_value()) {
    mvcc.UseMeta(stored_meta_->revision, stored_meta_->compact_revision,
                 stored_meta_->no_space_alarm);
  } else if (absl::Status status = mvcc.Load(); !status.ok()) {
    return status;
  } else {
    stored_meta_ = StoredMeta{mvcc.revision(), mvcc.compact_revision()};
  }
  mvcc.DeferMetaWrites();
  if (observer_ != nullptr) mvcc.set_changes(&pending_);
  absl::StatusOr<MvccResult> result = mvcc.Apply(std::move(command));
  if (!result.ok()) {
    batch_meta_.reset();
    return result.status();
  }
  batch_meta_ = BatchMeta{
      mvcc.revision(), mvcc.compact_revision(),
      mvcc.meta_dirty() || (batch_meta_.has_value() && batch_meta_->dirty),
      mvcc.known_no_space_alarm()};
  pending_applied_ = true;
  return result->SerializeAsString();
}

absl::Status MvccApplication::BeforeWrite(OrderedKv& store) {
  const std::optional<BatchMeta> meta = std::exchange(batch_meta_, {});
  writing_meta_.reset();
  // No command of the batch went through Apply: the records stay.
  if (!meta.has_value()) return absl::OkStatus();
  writing_meta_ =
      StoredMeta{meta->revision, meta->compact_revision, meta->no_space_alarm};
  if (!meta->dirty) return absl::OkStatus();
  if (meta->compact_revision > index_.pruned_through()) {
    prune_after_write_ = meta->compact_revision;
  }
  MvccStore mvcc(&store, &index_);
  mvcc.UseMeta(meta->revision, meta->compact_revision);
  // The batch's first Apply set stored_meta_ (what the store holds).
  return mvcc.WriteMeta(meta->compact_revision !=
                        stored_meta_->compact_revision);
}

void MvccApplication::Committed() {
  if (writing_meta_.has_value()) {
    stored_meta_ = *std::exchange(writing_meta_, std::nullopt);
  }
  // Readers of states before this write may still need what the compaction
  // removed from the index; they are asked again (KeyIndex::VisibleAt).
  if (prune_after_write_.has_value()) {
    index_.Prune(*prune_after_write_);
    prune_after_write_.reset();
  }
  if (observer_ == nullptr || !pending_applied_) return;
  pending_applied_ = false;
  observer_->OnApplied(std::exchange(pending_, AppliedChanges()));
}

absl::Status MvccApplication::Load(const OrderedKv& state) {
  batch_meta_.reset();
  stored_meta_.reset();
  writing_meta_.reset();
  prune_after_write_.reset();
  return MvccStore::BuildIndex(state, &index_);
}

void MvccApplication::Restored() {
  batch_meta_.reset();
  stored_meta_.reset();
  writing_meta_.reset();
  pending_ = AppliedChanges();
  pending_applied_ = false;
  if (observer_ != nullptr) observer_->OnRestored();
}

absl::StatusOr<std::string> MvccApplication::Query(std::string_view query,
                                                   OrderedKv& state) const {
  MvccQuery request;
  if (!request.ParseFromArray(query.data(), static_cast<int>(query.size()))) {
    return Malformed("an MVCC query", query.size());
  }
  MvccStore mvcc(&state, &index_);
  if (absl::Status status = mvcc.Load(); !status.ok()) return status;
  absl::StatusOr<MvccResult> result = mvcc.Query(request);
  if (!result.ok()) return result.status();
  return result->SerializeAsString();
}

MvccStateMachine::MvccStateMachine(
    statemachine::RocksDbKvStateMachineOptions options, ApplyObserver* observer,
    size_t value_cache_bytes)
    : RocksDbKvStateMachine(WithApplication(std::move(options), &application_)),
      application_(observer, value_cache_bytes) {}

}  // namespace driftwood::mvcc
