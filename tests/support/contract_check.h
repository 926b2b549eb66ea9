// Driftwood: an independent check of the driver contract (raft/core/ready.h,
// docs/design.md "The driver contract") on one Ready, from what is durable.
// The paper tests' TestNode and the simulation run it on every Ready; each
// function returns the problems it found, empty when the Ready is right.
// Thread-compatible.
#ifndef DRIFTWOOD_TESTS_SUPPORT_CONTRACT_CHECK_H_
#define DRIFTWOOD_TESTS_SUPPORT_CONTRACT_CHECK_H_

#include <string>
#include <vector>

#include "raft/core/log_reader.h"
#include "raft/core/ready.h"
#include "raft/core/types.h"

namespace driftwood::testing {

// Before the write (step 1): only requests leave, only when the Ready changes
// neither term nor vote, and only with a term that is already durable (a
// pre-vote names the next one). `must_sync` is set exactly when term, vote,
// snapshot or entries change (a commit-only change is not synced). Every
// committed entry is durable already, and the write leaves it in place, so
// that it may be handed to the state machine before the write. `store` and
// `durable` are what the store holds before the write.
std::vector<std::string> CheckBeforeWrite(const raft::LogReader& store,
                                          const raft::HardState& durable,
                                          const raft::Ready& ready);

// After the write (steps 3 and 4): every message's term is durable, every
// vote granted and every entry acknowledged is durable, every committed entry
// handed to the state machine is durable, and the stored commit index is
// within the stored log. `durable` is the hard state the store now holds.
std::vector<std::string> CheckAfterWrite(raft::NodeId self,
                                         const raft::LogReader& store,
                                         const raft::HardState& durable,
                                         const raft::Ready& ready);

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_CONTRACT_CHECK_H_
