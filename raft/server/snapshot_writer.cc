#include "raft/server/snapshot_writer.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/util/overloaded.h"
#include "spdlog/spdlog.h"

namespace driftwood::raft {

SnapshotWriter::SnapshotWriter(NodeId self, ReplicaState& replica,
                               Transport& transport,
                               std::function<void(ControlEvent)> raft,
                               AtomicCounters& counters,
                               std::atomic<bool>& snapshot_in_progress)
    : self_(self),
      replica_(replica),
      transport_(transport),
      raft_(std::move(raft)),
      counters_(counters),
      snapshot_in_progress_(snapshot_in_progress) {}

void SnapshotWriter::Handle(SnapshotJob job) {
  std::visit(
      Overloaded{
          [&](WriteSnapshotJob& write) { Write(write); },
          [&](SendSnapshotJob& send) { Send(send); },
          [&](RetireSnapshotsJob& retire) {
            if (absl::Status status = replica_.RetireUnneeded(retire.compacted);
                !status.ok()) {
              spdlog::warn("node {} could not retire snapshots: {}",
                           self_.value(), status.ToString());
            }
          },
      },
      job);
}

void SnapshotWriter::Write(WriteSnapshotJob& job) {
  absl::StatusOr<SnapshotManifest> manifest =
      replica_.WriteSnapshot(*job.capture);
  job.capture.reset();
  snapshot_in_progress_.store(false);
  if (!manifest.ok()) {
    spdlog::error("node {} could not write a snapshot: {}", self_.value(),
                  manifest.status().ToString());
    return;
  }
  counters_.snapshots_created.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("node {} published a snapshot at index {} ({} bytes)",
               self_.value(), manifest->meta.index.value(),
               manifest->total_bytes);
  raft_(SnapshotPublishedEvent{manifest->meta});
}

void SnapshotWriter::Send(SendSnapshotJob& job) {
  const NodeId to = job.message.to;
  const auto& install = std::get<InstallSnapshot>(job.message.payload);
  const LogIndex index = install.snapshot.index;
  absl::StatusOr<ReplicaState::PinnedSnapshot> pinned = replica_.Pin(index);
  if (pinned.ok() && pinned->manifest.meta != install.snapshot) {
    (void)replica_.Unpin(index);
    pinned = absl::FailedPreconditionError(
        "the published snapshot differs from the recorded one");
  }
  if (!pinned.ok()) {
    spdlog::warn("node {} cannot send snapshot {} to node {}: {}",
                 self_.value(), index.value(), to.value(),
                 pinned.status().ToString());
    counters_.snapshots_send_failures.fetch_add(1, std::memory_order_relaxed);
    raft_(SnapshotReportEvent{to, false});
    return;
  }
  spdlog::info("node {} sends snapshot {} ({} bytes) to node {}", self_.value(),
               index.value(), pinned->manifest.total_bytes, to.value());
  OutgoingSnapshot outgoing{std::move(job.message), pinned->manifest,
                            pinned->dir};
  transport_.SendSnapshot(std::move(outgoing), [this, to,
                                                index](absl::Status status) {
    if (absl::Status unpinned = replica_.Unpin(index); !unpinned.ok()) {
      spdlog::warn("node {} could not retire snapshots: {}", self_.value(),
                   unpinned.ToString());
    }
    if (status.ok()) {
      counters_.snapshots_sent.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.snapshots_send_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("node {} failed to send snapshot {} to node {}: {}",
                   self_.value(), index.value(), to.value(), status.ToString());
    }
    raft_(SnapshotReportEvent{to, status.ok()});
  });
}

absl::StatusOr<std::unique_ptr<SnapshotReceiver>> SnapshotReceiver::Begin(
    ReplicaState& replica, const Message& message,
    const SnapshotManifest& manifest, std::function<void(Message)> deliver,
    AtomicCounters& counters) {
  const auto* install = std::get_if<InstallSnapshot>(&message.payload);
  if (install == nullptr || install->snapshot != manifest.meta) {
    return absl::FailedPreconditionError(
        "the manifest does not describe the InstallSnapshot's snapshot");
  }
  for (const SnapshotFile& file : manifest.files) {
    // The names become paths in our snapshot store.
    if (file.name.empty() || file.name.find('/') != std::string::npos ||
        file.name == "." || file.name == ".." ||
        file.name == SnapshotStore::kMetaFileName) {
      return absl::FailedPreconditionError(
          absl::StrCat("unsafe snapshot file name '", file.name, "'"));
    }
  }
  absl::StatusOr<PendingSnapshot> pending = replica.BeginReceive(manifest.meta);
  std::optional<PendingSnapshot> held;
  if (pending.ok()) {
    held = *std::move(pending);
  } else if (!absl::IsAlreadyExists(pending.status())) {
    return pending.status();
  }
  return std::unique_ptr<SnapshotReceiver>(
      new SnapshotReceiver(replica, message, manifest, std::move(held),
                           std::move(deliver), counters));
}

SnapshotReceiver::SnapshotReceiver(ReplicaState& replica, Message message,
                                   SnapshotManifest manifest,
                                   std::optional<PendingSnapshot> pending,
                                   std::function<void(Message)> deliver,
                                   AtomicCounters& counters)
    : replica_(replica),
      message_(std::move(message)),
      manifest_(std::move(manifest)),
      pending_(std::move(pending)),
      deliver_(std::move(deliver)),
      counters_(counters) {}

SnapshotReceiver::~SnapshotReceiver() {
  if (out_ != nullptr) std::fclose(out_);
  if (pending_ && !finished_) replica_.AbandonReceive(*std::move(pending_));
}

absl::Status SnapshotReceiver::CloseFile() {
  if (out_ == nullptr) return absl::OkStatus();
  const int closed = std::fclose(out_);
  out_ = nullptr;
  if (closed != 0) {
    return absl::InternalError(
        absl::StrCat("closing received snapshot file: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status SnapshotReceiver::Write(std::string_view file_name,
                                     std::string_view bytes) {
  if (!pending_) return absl::OkStatus();  // already published here
  // Files arrive in manifest order; a new name means the previous file is
  // complete (empty files may be skipped).
  while (file_ < manifest_.files.size() &&
         manifest_.files[file_].name != file_name) {
    if (written_ != manifest_.files[file_].size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot file '", manifest_.files[file_].name, "' ended after ",
          written_, " of its ", manifest_.files[file_].size, " bytes"));
    }
    if (absl::Status status = CloseFile(); !status.ok()) return status;
    ++file_;
    written_ = 0;
  }
  if (file_ >= manifest_.files.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot file '", std::string(file_name),
                     "' is not in the manifest, or arrived out of order"));
  }
  const SnapshotFile& file = manifest_.files[file_];
  if (written_ + bytes.size() > file.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot file '", file.name, "' is longer than the ",
                     file.size, " bytes its manifest says"));
  }
  if (out_ == nullptr) {
    const std::string path = (pending_->dir() / file.name).string();
    out_ = std::fopen(path.c_str(), "wb");
    if (out_ == nullptr) {
      return absl::InternalError(
          absl::StrCat("creating ", path, ": ", std::strerror(errno)));
    }
  }
  if (!bytes.empty() &&
      std::fwrite(bytes.data(), 1, bytes.size(), out_) != bytes.size()) {
    return absl::InternalError(absl::StrCat(
        "writing snapshot file '", file.name, "': ", std::strerror(errno)));
  }
  written_ += bytes.size();
  return absl::OkStatus();
}

absl::Status SnapshotReceiver::Finish() {
  if (absl::Status status = CloseFile(); !status.ok()) return status;
  if (pending_) {
    // Files the sender had no bytes for (empty ones) still exist.
    for (const SnapshotFile& file : manifest_.files) {
      const std::filesystem::path path = pending_->dir() / file.name;
      if (file.size == 0 && !std::filesystem::exists(path)) {
        std::FILE* empty = std::fopen(path.string().c_str(), "wb");
        if (empty != nullptr) std::fclose(empty);
      }
    }
    finished_ = true;
    // FinishReceive checks every file against the sender's manifest before
    // the core sees the InstallSnapshot (docs/design.md "The runtime").
    if (absl::Status status =
            replica_.FinishReceive(*std::move(pending_), manifest_);
        !status.ok()) {
      return status;
    }
    pending_.reset();
    counters_.snapshots_received.fetch_add(1, std::memory_order_relaxed);
  }
  deliver_(std::move(message_));
  return absl::OkStatus();
}

}  // namespace driftwood::raft
