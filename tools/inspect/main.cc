// driftwood_inspect: shows a stopped node's durable state at a glance (its log
// store and its snapshots) and what a restart would do, by planning the
// recovery (raft/storage/FORMAT.md "Recovery") without carrying it out. It
// changes nothing a restart would not: opening the stores replays RocksDB's
// write-ahead log and removes temporary snapshot folders. Stop the node
// first: the log store cannot be opened while it runs.
//
// Exit codes: 0 a restart would succeed, 3 it would refuse with DataLoss
// (the reason is printed), 1 the state could not be read, 2 bad arguments.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "raft/core/describe.h"
#include "raft/server/recovery.h"
#include "raft/storage/rocksdb_log_store.h"
#include "raft/storage/snapshot_store.h"

namespace {

using namespace driftwood::raft;  // NOLINT(google-build-using-namespace)

constexpr char kUsage[] =
    "usage: driftwood_inspect --log DIR --cluster-id N --node-id N\n"
    "                         [--group N] [--snapshots DIR]\n"
    "                         [--applied INDEX:TERM] [--verify-all]\n"
    "\n"
    "Prints a stopped node's log store and snapshots, and what a restart\n"
    "would do (the recovery algorithm of raft/storage/FORMAT.md, planned\n"
    "but not carried out). Stop the node first.\n"
    "\n"
    "  --log DIR             the RocksDB log store's folder\n"
    "  --cluster-id N        the cluster id the store was created with\n"
    "  --node-id N           the node id the store was created with\n"
    "  --group N             the Raft group (default 1)\n"
    "  --snapshots DIR       the snapshot store's folder (default: none)\n"
    "  --applied INDEX:TERM  a persistent state machine's applied point\n"
    "                        (default 0:0, an in-memory state machine)\n"
    "  --verify-all          read and checksum every snapshot, not only\n"
    "                        the one a restart would restore\n"
    "\n"
    "Exit codes: 0 a restart would succeed; 3 it would refuse with\n"
    "DataLoss; 1 the state could not be read; 2 bad arguments.\n";

int BadUsage(const std::string& why) {
  std::fprintf(stderr, "driftwood_inspect: %s\n\n%s", why.c_str(), kUsage);
  return 2;
}

std::string Size(uint64_t bytes) {
  if (bytes < (1 << 10)) return absl::StrCat(bytes, " bytes");
  if (bytes < (1 << 20)) {
    return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  }
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

int main(int argc, char** argv) {
  std::string log_dir, snapshot_dir;
  uint64_t cluster_id = 0, node_id = 0, group = 1;
  AppliedState applied;
  bool verify_all = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (flag == "--verify-all") {
      verify_all = true;
      continue;
    }
    if (i + 1 >= argc) return BadUsage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--log") {
      log_dir = value;
    } else if (flag == "--snapshots") {
      snapshot_dir = value;
    } else if (flag == "--cluster-id") {
      if (!absl::SimpleAtoi(value, &cluster_id) || cluster_id == 0) {
        return BadUsage("--cluster-id must be a positive integer");
      }
    } else if (flag == "--node-id") {
      if (!absl::SimpleAtoi(value, &node_id) || node_id == 0) {
        return BadUsage("--node-id must be a positive integer");
      }
    } else if (flag == "--group") {
      if (!absl::SimpleAtoi(value, &group) || group == 0) {
        return BadUsage("--group must be a positive integer");
      }
    } else if (flag == "--applied") {
      std::vector<std::string> parts = absl::StrSplit(value, ':');
      uint64_t index = 0, term = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &index) ||
          !absl::SimpleAtoi(parts[1], &term)) {
        return BadUsage("--applied must be INDEX:TERM, for example 1200:3");
      }
      applied.index = LogIndex(index);
      applied.term = Term(term);
    } else {
      return BadUsage("unknown flag " + flag);
    }
  }
  if (log_dir.empty()) return BadUsage("--log is required");
  if (cluster_id == 0 || node_id == 0) {
    return BadUsage("--cluster-id and --node-id are required");
  }

  RocksDbLogStoreOptions options;
  options.path = log_dir;
  options.cluster_id = cluster_id;
  options.node_id = NodeId(node_id);
  options.group_id = group;
  absl::StatusOr<std::unique_ptr<RocksDbLogStore>> log =
      RocksDbLogStore::Open(options);
  if (!log.ok()) {
    std::fprintf(stderr, "driftwood_inspect: cannot open the log store: %s\n",
                 log.status().ToString().c_str());
    if (log.status().message().find("lock") != absl::string_view::npos) {
      std::fprintf(stderr, "(is the node still running?)\n");
    }
    return absl::IsDataLoss(log.status()) ? 3 : 1;
  }
  absl::StatusOr<InitialState> initial = (*log)->LoadInitialState();
  if (!initial.ok()) {
    std::fprintf(stderr, "driftwood_inspect: %s\n",
                 initial.status().ToString().c_str());
    return absl::IsDataLoss(initial.status()) ? 3 : 1;
  }
  const LogIndex first = (*log)->FirstIndex();
  const LogIndex last = (*log)->LastIndex();
  std::printf("log store %s (cluster %" PRIu64 ", node %" PRIu64
              ", group %" PRIu64 ")\n",
              log_dir.c_str(), cluster_id, node_id, group);
  absl::StatusOr<Term> compacted_term = (*log)->TermAt(first.prev());
  absl::StatusOr<Term> last_term = (*log)->TermAt(last);
  if (last < first) {
    std::printf("  entries: none (compacted through %" PRIu64 ")\n",
                first.prev().value());
  } else {
    std::printf("  entries: %" PRIu64 "..%" PRIu64 " (%" PRIu64
                " entries), last term %s\n",
                first.value(), last.value(), Distance(first, last) + 1,
                last_term.ok() ? absl::StrCat(last_term->value()).c_str()
                               : last_term.status().ToString().c_str());
  }
  if (first.value() > 1) {
    std::printf(
        "  compacted through %" PRIu64 " (term %s)\n", first.prev().value(),
        compacted_term.ok() ? absl::StrCat(compacted_term->value()).c_str()
                            : compacted_term.status().ToString().c_str());
  }
  std::printf("  hard state: %s\n", Describe(initial->hard_state).c_str());
  std::printf("  configuration: %s\n",
              Describe(initial->configuration).c_str());
  absl::StatusOr<SnapshotMeta> recorded = (*log)->Snapshot();
  std::printf("  recorded snapshot: %s\n",
              recorded.ok() ? Describe(*recorded).c_str() : "none");

  std::vector<SnapshotCandidate> candidates;
  std::unique_ptr<SnapshotStore> snapshots;
  if (!snapshot_dir.empty()) {
    absl::StatusOr<std::unique_ptr<SnapshotStore>> opened =
        SnapshotStore::Open(snapshot_dir);
    if (!opened.ok()) {
      std::fprintf(stderr, "driftwood_inspect: cannot open %s: %s\n",
                   snapshot_dir.c_str(), opened.status().ToString().c_str());
      return 1;
    }
    snapshots = *std::move(opened);
    std::printf("snapshot store %s\n", snapshot_dir.c_str());
    std::vector<SnapshotListing> listed = snapshots->List();
    if (listed.empty()) std::printf("  no snapshots\n");
    for (const SnapshotListing& listing : listed) {
      std::string line =
          absl::StrCat("  snapshot index ", listing.index.value(), " term ",
                       listing.term.value(), ": ");
      if (!listing.manifest.ok()) {
        absl::StrAppend(&line,
                        "UNREADABLE: ", listing.manifest.status().message());
      } else {
        absl::StrAppend(&line, listing.manifest->files.size(), " files, ",
                        Size(listing.manifest->total_bytes), ", ",
                        Describe(listing.manifest->meta.configuration));
        if (verify_all) {
          absl::StatusOr<SnapshotManifest> verified =
              snapshots->Verify(listing.index);
          absl::StrAppend(&line, verified.ok() ? "; verified" : "; CORRUPT: ",
                          verified.ok() ? "" : verified.status().message());
        }
      }
      std::printf("%s\n", line.c_str());
    }
    candidates = SnapshotCandidates(*snapshots);
  }

  std::printf("restart (state machine applied through %" PRIu64
              ", term %" PRIu64 "):\n",
              applied.index.value(), applied.term.value());
  absl::StatusOr<RecoveryPlan> plan = PlanRecovery(**log, applied, candidates);
  if (!plan.ok()) {
    std::printf("  REFUSED: %s\n", plan.status().ToString().c_str());
    return absl::IsDataLoss(plan.status()) ? 3 : 1;
  }
  for (const std::string& note : plan->notes) {
    std::printf("  %s\n", note.c_str());
  }
  std::printf("  applies from %" PRIu64 " with commit %" PRIu64 "%s\n",
              plan->applied.next().value(), plan->commit.value(),
              plan->restore ? " after restoring the snapshot" : "");
  if (plan->record) {
    std::printf("  records snapshot %" PRIu64 " in the log store\n",
                plan->record->index.value());
  }
  if (!plan->discard.empty()) {
    std::string list;
    for (LogIndex index : plan->discard) {
      absl::StrAppend(&list, list.empty() ? "" : ", ", index.value());
    }
    std::printf("  retires snapshots %s\n", list.c_str());
  }
  if (plan->snapshot_needed) {
    std::printf("  must make a new snapshot before it can send one\n");
  }
  return 0;
}
