// The "linearizable-register" checker: each register key's ops must be
// linearizable (Herlihy and Wing 1990) against a register that starts absent
// (null) and supports read, write v and cas [old, new].
//
// Keys are checked independently, which is sound and complete because
// linearizability is local (P-compositionality: Horn and Kroening 2015). Each
// key is searched with the Wing and Gong (1993) algorithm with Lowe's (2017)
// memoisation of (linearized set, state) configurations.
//
// Jepsen semantics: fail ops are dropped; info reads are dropped; info writes
// and cas return at +infinity with any output, so they may take effect at
// any point after their invocation or never. A key's history is
// linearizable once every op with a finite return is linearized.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_REGISTER_CHECKER_H_
#define DRIFTWOOD_JEPSEN_CHECKER_REGISTER_CHECKER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "jepsen/checker/history.h"

namespace driftwood::jepsen {

// kUnknown: the checker could not decide; it counts as not passed.
enum class Verdict : uint8_t { kValid, kInvalid, kUnknown };

// "valid", "invalid", "unknown".
const char* VerdictName(Verdict verdict);

struct RegisterOptions {
  // A key with more ops to search (fail ops and info reads excluded) is
  // kUnknown without searching.
  size_t max_ops_per_key = 400;
  // A key whose search takes longer is kUnknown.
  double key_budget_seconds = 10;
  // A key whose search memoises more configurations is kUnknown (bounds the
  // memory of a search).
  size_t max_configurations = 5'000'000;
};

struct RegisterKeyResult {
  uint32_t key = 0;
  Verdict verdict = Verdict::kValid;
  // The ops searched.
  size_t ops = 0;
  // Info writes and cas left out because no op observes their value.
  size_t pruned = 0;
  // Distinct configurations memoised by the search.
  size_t configurations = 0;
  double seconds = 0;
  // kUnknown: why; kInvalid: the explanation, naming the culprit.
  std::string reason;
  // kInvalid only. The deepest partial linearization the search reached
  // held `linearized` ops and left the register at `state_present` /
  // `state_value`; from there the op `culprit` (an op id) could be
  // linearized in no order.
  size_t linearized = 0;
  bool state_present = false;
  int64_t state_value = 0;
  size_t culprit = 0;
  // kInvalid only, op ids to show, at most kMaxShownOps: the culprit, the
  // last op invoked before it returned that writes the value it needs (a
  // read's value, a cas's old value), the last ops of the deepest partial
  // linearization (in its order), then the ops concurrent with the culprit
  // by invocation.
  std::vector<size_t> shown_ops;

  static constexpr size_t kMaxShownOps = 10;
};

struct RegisterResult {
  // kInvalid if any key is not linearizable, else kUnknown if any key is
  // undecided, else kValid.
  Verdict verdict = Verdict::kValid;
  size_t keys = 0;
  // Completed ops (ok, fail, info) of the keys with a decided verdict.
  size_t checked_ops = 0;
  double seconds = 0;
  size_t max_configurations = 0;
  size_t max_ops = 0;
  // The keys whose verdict is not kValid, in key order.
  std::vector<RegisterKeyResult> failures;
};

// Checks one register key. REQUIRES: history.key_kinds[key] == kRegister.
RegisterKeyResult CheckRegisterKey(const History& history, uint32_t key,
                                   const RegisterOptions& options);

// Checks every register key of `history`.
RegisterResult CheckRegisters(const History& history,
                              const RegisterOptions& options);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_REGISTER_CHECKER_H_
