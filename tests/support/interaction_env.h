// Driftwood: a cluster of cores driven by hand, for scripted interaction tests
// and paper tests. Each node has a MemoryLogStore that stands for its disk; the
// network is one FIFO inbox per node. Every Ready is performed by the
// ReadyProcessor (raft/server/ready_processor.h), and the committed entries
// handed out are checked to be contiguous. Not thread-safe.
#ifndef DRIFTWOOD_TESTS_SUPPORT_INTERACTION_ENV_H_
#define DRIFTWOOD_TESTS_SUPPORT_INTERACTION_ENV_H_

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "raft/core/config.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/datadriven.h"

namespace driftwood::testing {

class InteractionEnv {
 public:
  // Runs one script command and returns its output (see interaction_test.cc
  // and tests/raft/core/testdata/README.md for the command list).
  std::string Handle(const TestCase& test_case);

  // Creates nodes with the given ids, all starting from an empty log whose
  // configuration is `configuration`; `base` supplies the remaining options.
  void AddNodes(const std::vector<raft::NodeId>& ids,
                const raft::Configuration& configuration,
                const raft::Config& base);

  raft::Node& node(raft::NodeId id);
  raft::MemoryLogStore& store(raft::NodeId id);
  // Entries applied by the node's state machine since it (re)started.
  const std::vector<raft::Entry>& applied(raft::NodeId id);

  // Performs one Ready of `id` if it has one; returns its rendering.
  // With crash_before_persist, sends `messages` and then crashes the node.
  std::string ProcessReady(raft::NodeId id, bool crash_before_persist = false);
  // Steps every message queued for `id`; returns them rendered.
  std::string DeliverMessages(raft::NodeId id);
  // Alternates ProcessReady and DeliverMessages over the given nodes until
  // nothing is left for them to do (messages to other nodes stay queued).
  std::string Stabilize(const std::vector<raft::NodeId>& ids);
  // Discards the queued messages for `id`.
  std::string DropMessages(raft::NodeId id);

  void Crash(raft::NodeId id);
  void Restart(raft::NodeId id);
  void Cut(raft::NodeId a, raft::NodeId b);
  void Isolate(raft::NodeId id);
  void Heal();

  std::string Status(raft::NodeId id);
  std::string RaftLog(raft::NodeId id);

 private:
  struct EnvNode {
    raft::Config config;
    std::unique_ptr<raft::MemoryLogStore> store;
    std::unique_ptr<raft::Node> node;  // null while crashed
    std::unique_ptr<raft::ReadyProcessor> processor;
    std::vector<raft::Entry> applied;
  };

  // Creates the node's Node and ReadyProcessor over its store.
  void Start(raft::NodeId id, EnvNode& env_node);

  EnvNode& Get(raft::NodeId id);
  void Enqueue(const raft::Message& message);
  std::vector<raft::NodeId> LiveIds() const;

  std::map<raft::NodeId, EnvNode> nodes_;
  std::map<raft::NodeId, std::deque<raft::Message>> inbox_;
  std::set<std::pair<raft::NodeId, raft::NodeId>> cut_;
};

// Parses a list of node ids like ["1", "2"].
std::vector<raft::NodeId> ParseIds(const std::vector<std::string>& values);

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_INTERACTION_ENV_H_
