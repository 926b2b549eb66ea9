// Driftwood: SetThreadName, the name `top -H`, `perf` and debuggers show for
// the calling thread.
#ifndef DRIFTWOOD_RAFT_UTIL_THREAD_NAME_H_
#define DRIFTWOOD_RAFT_UTIL_THREAD_NAME_H_

#include <pthread.h>

#include <string>
#include <string_view>

namespace driftwood::raft {

// Linux keeps the first 15 bytes. Best effort: a failure changes nothing.
inline void SetThreadName(std::string_view name) {
  const std::string truncated(name.substr(0, 15));
  pthread_setname_np(pthread_self(), truncated.c_str());
}

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_UTIL_THREAD_NAME_H_
