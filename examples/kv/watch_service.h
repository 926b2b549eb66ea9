// Driftwood: etcd's Watch service for driftwood-kv (docs/design.md
// "Watches"). Each stream reads from the member's WatchHub (statemachine/
// mvcc/watch_hub.h): a stream has one response in flight at a time and
// builds the next one when the last is sent, so a slow client holds one
// response and a cursor per watcher, never a queue.
//
// etcd's rules kept here (its v3rpc/watch.go and clientv3 rely on them):
//  * Replies to creates come in the order the creates were sent; a create
//    with watch_id 0 gets the stream's next free id, counting from 0; a
//    failed create answers created and canceled with watch_id -1 and a
//    reason. No event of a watcher comes before its created reply, whose
//    header revision is the current one (start_revision 0 starts after it).
//  * Events come in revision order, whole revisions per response, each
//    event once; a start revision that was compacted answers
//    compact_revision and cancels the watcher; a future one waits.
//  * A progress request is answered with watch_id -1 and a revision once
//    every watcher of the stream has been sent everything up to it;
//    progress_notify watchers get the same, with their id, after
//    progress_notify_interval without events.
//  * fragment: a response larger than the request limit is split, every
//    piece but the last marked fragment.
//  * Streams whose client sent "hasleader: true" end with "etcdserver: no
//    leader" when the member has had no leader for three election timeouts
//    (the client then moves to another member and resumes).
#ifndef DRIFTWOOD_EXAMPLES_KV_WATCH_SERVICE_H_
#define DRIFTWOOD_EXAMPLES_KV_WATCH_SERVICE_H_

#include "absl/time/time.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "examples/kv/service_context.h"

namespace driftwood::kv {

class WatchService final {
 public:
  WatchService(const Context& context, absl::Duration progress_notify_interval)
      : context_(context),
        progress_notify_interval_(progress_notify_interval) {}

  rpc::ServerBidiReactor<etcdserverpb::WatchRequest,
                         etcdserverpb::WatchResponse>*
  Watch(grpc::ServerContext* call);

  etcdserverpb::Watch::AsyncService async;
  void Serve(rpc::QueueServer& server);

 private:
  const Context& context_;
  const absl::Duration progress_notify_interval_;
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_WATCH_SERVICE_H_
