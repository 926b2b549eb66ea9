// Driftwood: an overload set of lambdas, for exhaustive std::visit: a
// variant alternative without a handler does not compile.
#ifndef DRIFTWOOD_RAFT_UTIL_OVERLOADED_H_
#define DRIFTWOOD_RAFT_UTIL_OVERLOADED_H_

namespace driftwood {

template <typename... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

}  // namespace driftwood

#endif  // DRIFTWOOD_RAFT_UTIL_OVERLOADED_H_
