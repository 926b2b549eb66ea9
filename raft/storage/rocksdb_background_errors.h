// Driftwood: how the RocksDB databases (the Raft log store and the state
// machine) treat a failed background flush or compaction (docs/design.md
// "Storage"): it is final. RocksDB retries none of them, and the first such
// error is kept for the owner to answer with, which stops the node; the
// restart re-applies from the Raft log what no flush wrote.
//
// RocksDB's retries are off because in RocksDB 7.8 a close that interrupts
// a retry in progress can wait for it forever (facebook/rocksdb#11440, fixed
// in 8.7): the retry of a retryable IO error (off through
// Options::max_bgerror_resume_count = 0) and the wait for free space after
// a full disk (off through OnErrorRecoveryBegin below).
#ifndef DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_ERRORS_H_
#define DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_ERRORS_H_

#include <atomic>
#include <memory>
#include <mutex>

#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/status.h"

namespace driftwood::raft {

// Keeps the first background error after which RocksDB runs no more
// flushes (or stops writes), and turns RocksDB's own recovery off. A
// compaction that failed with a retryable error is not kept: RocksDB runs
// that compaction again by itself.
class RocksDbBackgroundErrors : public rocksdb::EventListener {
 public:
  // Registers a new instance with `options` and turns off RocksDB's retry
  // of retryable errors; returns it.
  static std::shared_ptr<RocksDbBackgroundErrors> Install(
      rocksdb::Options& options) {
    auto errors = std::make_shared<RocksDbBackgroundErrors>();
    options.max_bgerror_resume_count = 0;
    options.listeners.push_back(errors);
    return errors;
  }

  // The instance Install registered with `options`; nullptr if none.
  static std::shared_ptr<RocksDbBackgroundErrors> Find(
      const rocksdb::Options& options) {
    for (const auto& listener : options.listeners) {
      if (auto errors =
              std::dynamic_pointer_cast<RocksDbBackgroundErrors>(listener)) {
        return errors;
      }
    }
    return nullptr;
  }

  const char* Name() const override { return "RocksDbBackgroundErrors"; }

  // RocksDB calls this before it records the error, with its mutex
  // released, possibly from several threads at once; a retryable error
  // comes without a severity.
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason,
                         rocksdb::Status* error) override {
    if (reason == rocksdb::BackgroundErrorReason::kCompaction &&
        error->severity() == rocksdb::Status::Severity::kNoError) {
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!failed_.load(std::memory_order_relaxed)) {
      first_ = *error;
      failed_.store(true, std::memory_order_release);
    }
  }

  // Called for errors RocksDB would recover from by itself (a full disk:
  // it waits for free space, then flushes again).
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/,
                            rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }

  // OK until the first kept error; that error from then on. Any thread.
  rocksdb::Status error() const {
    if (!failed_.load(std::memory_order_acquire)) return rocksdb::Status::OK();
    std::lock_guard<std::mutex> lock(mu_);
    return first_;
  }

 private:
  mutable std::mutex mu_;
  std::atomic<bool> failed_{false};
  rocksdb::Status first_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_ERRORS_H_
