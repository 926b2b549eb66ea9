// Driftwood: the codec between the core's structs and the peer protocol
// (rpc/proto/peer.proto; docs/design.md "Transport").
//
// This is the one place where raft:: structs meet protobuf. Encoding cannot
// fail. Decoding treats its input as hostile: whatever the bytes, it either
// returns messages the core can take as they are, or InvalidArgument naming
// what is wrong and where ("envelope message 3: append_entries entry 2 has
// index 9 where 8 was expected"); it never crashes and never hands the core a
// message that breaks the core's assumptions (contiguous entries, valid
// entry types, valid configurations, sender and receiver set).
//
// Cluster ids are decoded, not judged: the transport compares them with its
// own and refuses strangers.
#ifndef DRIFTWOOD_RPC_CODEC_H_
#define DRIFTWOOD_RPC_CODEC_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/core/message.h"
#include "raft/core/types.h"
#include "raft/storage/snapshot_store.h"
#include "raft/transport.h"
#include "rpc/proto/peer.pb.h"

namespace driftwood::rpc {

// The protocol version this code speaks and accepts.
inline constexpr uint32_t kProtocolVersion = 1;

// Who sent a decoded message to whom, in which cluster.
struct Routing {
  uint64_t cluster_id = 0;
  raft::NodeId from;
  raft::NodeId to;
};

struct DecodedEnvelope {
  Routing routing;
  // Each with from and to set from the envelope.
  std::vector<raft::Message> messages;
  // Forwarded proposals and answers, after the Raft messages.
  std::vector<raft::ServerMessage> server_messages;
};

// REQUIRES: every message is from `from` to `to`.
Envelope EncodeEnvelope(
    uint64_t cluster_id, raft::NodeId from, raft::NodeId to,
    std::span<const raft::Message> messages,
    std::span<const raft::ServerMessage> server_messages = {});
// Takes the envelope by value: a caller that moves it in hands the entries'
// payloads to the decoded messages without a copy.
absl::StatusOr<DecodedEnvelope> DecodeEnvelope(Envelope envelope);
// Parses and decodes serialized bytes.
absl::StatusOr<DecodedEnvelope> DecodeEnvelopeBytes(std::string_view bytes);

// Forwarded proposals. REQUIRES: the payload is of the matching kind.
ForwardRequestProto EncodeForwardRequest(uint64_t cluster_id,
                                         const raft::ServerMessage& message);
ForwardResponseProto EncodeForwardResponse(uint64_t cluster_id,
                                           const raft::ServerMessage& message);
// Takes the proto by value: a caller that moves it in hands the commands
// over without a copy.
absl::StatusOr<raft::ServerMessage> DecodeForwardRequest(
    ForwardRequestProto proto, uint64_t* cluster_id);
absl::StatusOr<raft::ServerMessage> DecodeForwardResponse(
    const ForwardResponseProto& proto, uint64_t* cluster_id);

// The first chunk of a snapshot stream.
struct DecodedSnapshotHeader {
  Routing routing;
  // An InstallSnapshot whose snapshot is manifest.meta.
  raft::Message install;
  raft::SnapshotManifest manifest;
};

// REQUIRES: snapshot.message is an InstallSnapshot.
SnapshotHeaderProto EncodeSnapshotHeader(
    uint64_t cluster_id, const raft::OutgoingSnapshot& snapshot);
// Besides the message checks: the manifest describes the InstallSnapshot's
// snapshot, names each file once with a plain name (no separators, not
// "." or ".."), sorted, and its sizes add up to total_bytes.
absl::StatusOr<DecodedSnapshotHeader> DecodeSnapshotHeader(
    const SnapshotHeaderProto& header);

}  // namespace driftwood::rpc

#endif  // DRIFTWOOD_RPC_CODEC_H_
