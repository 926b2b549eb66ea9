// The peer protocol's codec (rpc/codec.h): every message kind round-trips,
// and hostile input (random bytes, mutated valid envelopes, structurally
// wrong messages) gives InvalidArgument, never a crash or a wrong message.
#include "rpc/codec.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "catch2/catch.hpp"

namespace driftwood::rpc {
namespace {

using raft::Configuration;
using raft::Entry;
using raft::EntryType;
using raft::LogIndex;
using raft::Message;
using raft::NodeId;
using raft::Term;

constexpr uint64_t kCluster = 0xc1u;

Message Make(raft::Payload payload, uint64_t term = 7) {
  return Message{NodeId(1), NodeId(2), Term(term), std::move(payload)};
}

raft::SnapshotMeta Meta() {
  return raft::SnapshotMeta{
      LogIndex(40), Term(5),
      Configuration{.voters = {NodeId(1), NodeId(2), NodeId(3)},
                    .voters_outgoing = {NodeId(1), NodeId(2), NodeId(4)},
                    .learners = {NodeId(5)}}};
}

// One message of every kind.
std::vector<Message> EveryKind() {
  raft::AppendEntries append{LogIndex(10), Term(3), {}, LogIndex(9)};
  append.entries.push_back(Entry{Term(3), LogIndex(11), EntryType::kNormal,
                                 raft::EntryData(std::string("put\0x", 5))});
  append.entries.push_back(
      Entry{Term(7), LogIndex(12), EntryType::kNoOp, raft::EntryData()});
  append.entries.push_back(Entry{Term(7), LogIndex(13), EntryType::kNormal,
                                 raft::EntryData(std::string(3000, 'v'))});
  return {
      Make(append),
      Make(raft::AppendEntries{LogIndex(0), Term(0), {}, LogIndex(0)}),
      Make(raft::AppendEntriesResponse{true, LogIndex(13), LogIndex(0),
                                       Term(0)}),
      Make(raft::AppendEntriesResponse{false, LogIndex(10), LogIndex(8),
                                       Term(2)}),
      Make(raft::RequestVote{LogIndex(13), Term(7), true, false}),
      Make(raft::RequestVote{LogIndex(13), Term(7), false, true}),
      Make(raft::RequestVoteResponse{true, true}),
      Make(raft::Heartbeat{LogIndex(12), 99}),
      Make(raft::HeartbeatResponse{99}),
      Make(raft::InstallSnapshot{Meta()}),
      Make(raft::TimeoutNow{}),
      Make(raft::ReadIndexRequest{1234567890123ULL}),
      Make(raft::ReadIndexResponse{1234567890123ULL, LogIndex(12)}),
  };
}

TEST_CASE("codec: every message kind round-trips through an envelope",
          "[rpc]") {
  const std::vector<Message> messages = EveryKind();
  const Envelope envelope =
      EncodeEnvelope(kCluster, NodeId(1), NodeId(2), messages);
  absl::StatusOr<DecodedEnvelope> decoded =
      DecodeEnvelopeBytes(envelope.SerializeAsString());
  REQUIRE(decoded.ok());
  CHECK(decoded->routing.cluster_id == kCluster);
  CHECK(decoded->routing.from == NodeId(1));
  CHECK(decoded->routing.to == NodeId(2));
  REQUIRE(decoded->messages.size() == messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    INFO("message " << i);
    CHECK(decoded->messages[i] == messages[i]);
  }
}

TEST_CASE("codec: forwarded proposals and answers round-trip", "[rpc]") {
  raft::ServerMessage request{
      NodeId(3), NodeId(1),
      raft::ForwardRequest{
          .request_id = 77,
          .commands = {raft::EntryData("a"),
                       raft::EntryData(std::string(5, '\0'))}}};
  uint64_t cluster = 0;
  absl::StatusOr<raft::ServerMessage> decoded =
      DecodeForwardRequest(EncodeForwardRequest(kCluster, request), &cluster);
  REQUIRE(decoded.ok());
  CHECK(cluster == kCluster);
  CHECK(*decoded == request);

  raft::ServerMessage ok{
      NodeId(1), NodeId(3),
      raft::ForwardResponse{.request_id = 77, .last = {Term(4), LogIndex(9)}}};
  decoded = DecodeForwardResponse(EncodeForwardResponse(kCluster, ok), nullptr);
  REQUIRE(decoded.ok());
  CHECK(*decoded == ok);

  raft::ServerMessage refused{
      NodeId(1), NodeId(3),
      raft::ForwardResponse{.request_id = 78,
                            .code = absl::StatusCode::kUnavailable,
                            .error = "node 1 is not the leader"}};
  decoded =
      DecodeForwardResponse(EncodeForwardResponse(kCluster, refused), nullptr);
  REQUIRE(decoded.ok());
  CHECK(*decoded == refused);
}

TEST_CASE(
    "codec: an envelope carries forwarded proposals and answers after its "
    "Raft messages, with the envelope's routing",
    "[rpc]") {
  const std::vector<raft::Message> messages = {
      Make(raft::HeartbeatResponse{.read_round = 3})};
  const std::vector<raft::ServerMessage> server_messages = {
      {NodeId(1), NodeId(2),
       raft::ForwardRequest{.request_id = 5,
                            .commands = {raft::EntryData("put x")}}},
      {NodeId(1), NodeId(2),
       raft::ForwardResponse{.request_id = 6,
                             .code = absl::StatusCode::kUnavailable,
                             .error = "not the leader"}}};
  Envelope envelope =
      EncodeEnvelope(kCluster, NodeId(1), NodeId(2), messages, server_messages);
  absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelope(envelope);
  REQUIRE(decoded.ok());
  CHECK(decoded->messages == messages);
  CHECK(decoded->server_messages == server_messages);

  SECTION("an inner message of another cluster is refused") {
    envelope.mutable_forward_requests(0)->set_cluster_id(kCluster + 1);
    decoded = DecodeEnvelope(envelope);
    REQUIRE(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(decoded.status().message()),
               Catch::Contains("forward request 0") &&
                   Catch::Contains("routing differs"));
  }
  SECTION("an inner message of another sender is refused") {
    envelope.mutable_forward_responses(0)->set_from(3);
    decoded = DecodeEnvelope(envelope);
    REQUIRE(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(decoded.status().message()),
               Catch::Contains("forward response 0"));
  }
  SECTION("a malformed inner message is refused") {
    envelope.mutable_forward_requests(0)->clear_commands();
    decoded = DecodeEnvelope(envelope);
    REQUIRE(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(decoded.status().message()),
               Catch::Contains("no commands"));
  }
}

TEST_CASE(
    "codec: an envelope moved into DecodeEnvelope hands its entries' payloads "
    "and forwarded commands over without copying them",
    "[rpc]") {
  const std::vector<Message> messages = EveryKind();
  const std::vector<raft::ServerMessage> server_messages = {
      {NodeId(1), NodeId(2),
       raft::ForwardRequest{
           .request_id = 5,
           .commands = {raft::EntryData(std::string(2000, 'c'))}}}};
  Envelope envelope =
      EncodeEnvelope(kCluster, NodeId(1), NodeId(2), messages, server_messages);
  // Entry 13 carries 3,000 bytes and the command 2,000: each string owns a
  // heap buffer.
  const std::string& payload =
      envelope.messages(0).append_entries().entries(2).data();
  REQUIRE(payload.size() == 3000);
  const char* const entry_buffer = payload.data();
  const char* const command_buffer =
      envelope.forward_requests(0).commands(0).data();
  absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelope(std::move(envelope));
  REQUIRE(decoded.ok());
  CHECK(decoded->messages == messages);
  CHECK(decoded->server_messages == server_messages);
  const auto& append =
      std::get<raft::AppendEntries>(decoded->messages[0].payload);
  CHECK(append.entries[2].data.str().data() == entry_buffer);
  const auto& forwarded =
      std::get<raft::ForwardRequest>(decoded->server_messages[0].payload);
  CHECK(forwarded.commands[0].str().data() == command_buffer);
}

TEST_CASE("codec: a snapshot header round-trips", "[rpc]") {
  raft::OutgoingSnapshot snapshot{
      Make(raft::InstallSnapshot{Meta()}),
      raft::SnapshotManifest{
          Meta(), {{"a.sst", 100, 0xdeadbeef}, {"b.data", 0, 0}}, 100},
      "/unused"};
  absl::StatusOr<DecodedSnapshotHeader> decoded =
      DecodeSnapshotHeader(EncodeSnapshotHeader(kCluster, snapshot));
  REQUIRE(decoded.ok());
  CHECK(decoded->routing.cluster_id == kCluster);
  CHECK(decoded->install == snapshot.message);
  CHECK(decoded->manifest == snapshot.manifest);
}

// Encodes `messages`, lets `mutate` spoil the envelope, and returns the
// decode error's message ("" when it decoded).
std::string DecodeError(std::vector<Message> messages,
                        const std::function<void(Envelope&)>& mutate) {
  Envelope envelope = EncodeEnvelope(kCluster, NodeId(1), NodeId(2), messages);
  mutate(envelope);
  absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelope(envelope);
  if (decoded.ok()) return "";
  CHECK(absl::IsInvalidArgument(decoded.status()));
  return std::string(decoded.status().message());
}

TEST_CASE(
    "codec: structurally wrong envelopes are InvalidArgument, naming "
    "what is wrong",
    "[rpc]") {
  const std::vector<Message> all = EveryKind();
  const std::vector<Message> append = {all[0]};
  CHECK_THAT(DecodeError(all, [](Envelope& e) { e.set_protocol_version(2); }),
             Catch::Contains("protocol version 2 is not supported"));
  CHECK_THAT(DecodeError(all, [](Envelope& e) { e.set_from(0); }),
             Catch::Contains("bad sender 0"));
  CHECK_THAT(DecodeError(all, [](Envelope& e) { e.set_to(1); }),
             Catch::Contains("receiver 1"));
  CHECK_THAT(DecodeError(append,
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_append_entries()
                               ->mutable_entries(1)
                               ->set_index(20);
                         }),
             Catch::Contains("entry 1 has index 20 where 12 was expected"));
  CHECK_THAT(DecodeError(append,
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_append_entries()
                               ->mutable_entries(2)
                               ->set_term(2);
                         }),
             Catch::Contains("entry 2 has term 2"));
  CHECK_THAT(
      DecodeError(append,
                  [](Envelope& e) { e.mutable_messages(0)->set_term(5); }),
      Catch::Contains("message term 5"));
  CHECK_THAT(DecodeError(append,
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_append_entries()
                               ->mutable_entries(0)
                               ->set_type(9);
                         }),
             Catch::Contains("unknown type 9"));
  CHECK_THAT(DecodeError(append,
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_append_entries()
                               ->mutable_entries(1)
                               ->set_data("x");
                         }),
             Catch::Contains("no-op with data"));
  CHECK_THAT(DecodeError(append,
                         [](Envelope& e) {
                           e.mutable_messages(0)->clear_append_entries();
                         }),
             Catch::Contains("without a payload"));
  CHECK_THAT(DecodeError({all[9]},
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_install_snapshot()
                               ->mutable_snapshot()
                               ->mutable_configuration()
                               ->add_learners(1);
                         }),
             Catch::Contains("configuration"));
  CHECK_THAT(DecodeError({all[9]},
                         [](Envelope& e) {
                           e.mutable_messages(0)
                               ->mutable_install_snapshot()
                               ->mutable_snapshot()
                               ->set_term(9);
                         }),
             Catch::Contains("past the message's"));
  // And a clean envelope decodes.
  CHECK(DecodeError(all, [](Envelope&) {}).empty());
}

TEST_CASE("codec: a snapshot header with unsafe files is refused", "[rpc]") {
  raft::OutgoingSnapshot snapshot{
      Make(raft::InstallSnapshot{Meta()}),
      raft::SnapshotManifest{Meta(), {{"a", 1, 0}, {"b", 2, 0}}, 3}, "/unused"};
  auto error = [&](const std::function<void(SnapshotHeaderProto&)>& mutate) {
    SnapshotHeaderProto header = EncodeSnapshotHeader(kCluster, snapshot);
    mutate(header);
    absl::StatusOr<DecodedSnapshotHeader> decoded =
        DecodeSnapshotHeader(header);
    if (decoded.ok()) return std::string();
    CHECK(absl::IsInvalidArgument(decoded.status()));
    return std::string(decoded.status().message());
  };
  CHECK_THAT(error([](SnapshotHeaderProto& h) {
               h.mutable_manifest()->mutable_files(0)->set_name("../../etc");
             }),
             Catch::Contains("unsafe name"));
  CHECK_THAT(error([](SnapshotHeaderProto& h) {
               h.mutable_manifest()->mutable_files(1)->set_name("a");
             }),
             Catch::Contains("sorted and unique"));
  CHECK_THAT(error([](SnapshotHeaderProto& h) {
               h.mutable_manifest()->set_total_bytes(4);
             }),
             Catch::Contains("add up to 3 bytes"));
  CHECK_THAT(error([](SnapshotHeaderProto& h) {
               h.mutable_manifest()->mutable_meta()->set_index(41);
             }),
             Catch::Contains("another snapshot"));
  CHECK_THAT(error([](SnapshotHeaderProto& h) {
               h.mutable_install()->mutable_timeout_now();
             }),
             Catch::Contains("not an install_snapshot"));
  CHECK(error([](SnapshotHeaderProto&) {}).empty());
}

// What a decoded envelope must satisfy whatever the input: the core's
// assumptions about AppendEntries, and a stable re-encoding.
void CheckWellFormed(const DecodedEnvelope& decoded) {
  for (const Message& message : decoded.messages) {
    REQUIRE(message.from != raft::kNoNode);
    REQUIRE(message.to != raft::kNoNode);
    REQUIRE(message.from != message.to);
    if (const auto* append =
            std::get_if<raft::AppendEntries>(&message.payload)) {
      LogIndex expected = append->prev_log_index.next();
      for (const Entry& entry : append->entries) {
        REQUIRE(entry.index == expected);
        REQUIRE(entry.term <= message.term);
        REQUIRE((entry.type == EntryType::kNormal ||
                 (entry.type == EntryType::kNoOp && entry.data.empty())));
        expected = expected.next();
      }
    }
    if (const auto* install =
            std::get_if<raft::InstallSnapshot>(&message.payload)) {
      REQUIRE(install->snapshot.configuration.Validate().empty());
    }
  }
  const Envelope again =
      EncodeEnvelope(decoded.routing.cluster_id, decoded.routing.from,
                     decoded.routing.to, decoded.messages);
  absl::StatusOr<DecodedEnvelope> twice = DecodeEnvelope(again);
  REQUIRE(twice.ok());
  REQUIRE(twice->messages == decoded.messages);
}

TEST_CASE(
    "codec: random bytes never crash and never decode to a wrong "
    "message",
    "[rpc]") {
  const uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  uint64_t accepted = 0;
  for (int i = 0; i < 100'000; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelopeBytes(bytes);
    if (!decoded.ok()) {
      REQUIRE(absl::IsInvalidArgument(decoded.status()));
      continue;
    }
    ++accepted;
    CheckWellFormed(*decoded);
  }
  // Random bytes almost never make a valid envelope (version 1 and a sender
  // and a receiver are needed).
  CHECK(accepted < 1000);
}

TEST_CASE(
    "codec: mutated valid envelopes never crash and never decode to a "
    "wrong message",
    "[rpc]") {
  const uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string valid =
      EncodeEnvelope(kCluster, NodeId(1), NodeId(2), EveryKind())
          .SerializeAsString();
  uint64_t accepted = 0;
  uint64_t refused = 0;
  for (int i = 0; i < 50'000; ++i) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int edit = 0; edit < edits; ++edit) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0:  // flip a bit
          bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
          break;
        case 1:  // a random byte
          bytes[at] = static_cast<char>(rng());
          break;
        case 2:  // truncate
          bytes.resize(at);
          break;
        default:  // insert a byte
          bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                       static_cast<char>(rng()));
          break;
      }
      if (bytes.empty()) bytes.push_back('\x08');
    }
    absl::StatusOr<DecodedEnvelope> decoded = DecodeEnvelopeBytes(bytes);
    if (!decoded.ok()) {
      REQUIRE(absl::IsInvalidArgument(decoded.status()));
      ++refused;
      continue;
    }
    ++accepted;
    CheckWellFormed(*decoded);
  }
  // Both outcomes happen: many edits land in payload bytes and stay valid.
  CHECK(accepted > 0);
  CHECK(refused > 0);
}

}  // namespace
}  // namespace driftwood::rpc
