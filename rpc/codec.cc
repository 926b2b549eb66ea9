#include "rpc/codec.h"

#include <limits>
#include <string>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "raft/util/overloaded.h"

namespace driftwood::rpc {

namespace {

using raft::LogIndex;
using raft::NodeId;
using raft::Term;

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

void EncodeConfiguration(const raft::Configuration& configuration,
                         ConfigurationProto* out) {
  for (NodeId id : configuration.voters) out->add_voters(id.value());
  for (NodeId id : configuration.voters_outgoing) {
    out->add_voters_outgoing(id.value());
  }
  for (NodeId id : configuration.learners) out->add_learners(id.value());
}

absl::StatusOr<raft::Configuration> DecodeConfiguration(
    const ConfigurationProto& proto, absl::string_view where) {
  raft::Configuration configuration;
  for (uint64_t id : proto.voters()) configuration.voters.emplace_back(id);
  for (uint64_t id : proto.voters_outgoing()) {
    configuration.voters_outgoing.emplace_back(id);
  }
  for (uint64_t id : proto.learners()) configuration.learners.emplace_back(id);
  // The core relies on sorted, duplicate-free, disjoint lists without node 0.
  if (std::string problem = configuration.Validate(); !problem.empty()) {
    return Invalid(where, absl::StrCat("configuration: ", problem));
  }
  return configuration;
}

void EncodeSnapshotMeta(const raft::SnapshotMeta& meta,
                        SnapshotMetaProto* out) {
  out->set_index(meta.index.value());
  out->set_term(meta.term.value());
  EncodeConfiguration(meta.configuration, out->mutable_configuration());
}

absl::StatusOr<raft::SnapshotMeta> DecodeSnapshotMeta(
    const SnapshotMetaProto& proto, absl::string_view where) {
  if (proto.index() == 0 || proto.term() == 0) {
    return Invalid(where, "a snapshot needs a non-zero index and term");
  }
  absl::StatusOr<raft::Configuration> configuration =
      DecodeConfiguration(proto.configuration(), where);
  if (!configuration.ok()) return configuration.status();
  if (configuration->voters.empty()) {
    return Invalid(where, "a snapshot's configuration has no voters");
  }
  return raft::SnapshotMeta{LogIndex(proto.index()), Term(proto.term()),
                            *std::move(configuration)};
}

void EncodeMessage(const raft::Message& message, RaftMessageProto* out) {
  out->set_term(message.term.value());
  std::visit(
      Overloaded{
          [&](const raft::AppendEntries& m) {
            AppendEntriesProto* p = out->mutable_append_entries();
            p->set_prev_log_index(m.prev_log_index.value());
            p->set_prev_log_term(m.prev_log_term.value());
            p->set_leader_commit(m.leader_commit.value());
            for (const raft::Entry& entry : m.entries) {
              EntryProto* e = p->add_entries();
              e->set_term(entry.term.value());
              e->set_index(entry.index.value());
              e->set_type(static_cast<uint32_t>(entry.type));
              e->set_data(entry.data.str());
            }
          },
          [&](const raft::AppendEntriesResponse& m) {
            AppendEntriesResponseProto* p =
                out->mutable_append_entries_response();
            p->set_success(m.success);
            p->set_index(m.index.value());
            p->set_hint_index(m.hint_index.value());
            p->set_hint_term(m.hint_term.value());
          },
          [&](const raft::RequestVote& m) {
            RequestVoteProto* p = out->mutable_request_vote();
            p->set_last_log_index(m.last_log_index.value());
            p->set_last_log_term(m.last_log_term.value());
            p->set_pre_vote(m.pre_vote);
            p->set_transfer(m.transfer);
          },
          [&](const raft::RequestVoteResponse& m) {
            RequestVoteResponseProto* p = out->mutable_request_vote_response();
            p->set_granted(m.granted);
            p->set_pre_vote(m.pre_vote);
          },
          [&](const raft::Heartbeat& m) {
            HeartbeatProto* p = out->mutable_heartbeat();
            p->set_leader_commit(m.leader_commit.value());
            p->set_read_round(m.read_round);
          },
          [&](const raft::HeartbeatResponse& m) {
            out->mutable_heartbeat_response()->set_read_round(m.read_round);
          },
          [&](const raft::InstallSnapshot& m) {
            EncodeSnapshotMeta(
                m.snapshot,
                out->mutable_install_snapshot()->mutable_snapshot());
          },
          [&](const raft::TimeoutNow&) { out->mutable_timeout_now(); },
          [&](const raft::ReadIndexRequest& m) {
            out->mutable_read_index_request()->set_request_id(m.request_id);
          },
          [&](const raft::ReadIndexResponse& m) {
            ReadIndexResponseProto* p = out->mutable_read_index_response();
            p->set_request_id(m.request_id);
            p->set_index(m.index.value());
          },
      },
      message.payload);
}

// Moves the entries' payloads out of `p` (they are not copied).
absl::StatusOr<raft::AppendEntries> DecodeAppendEntries(
    AppendEntriesProto& p, Term term, absl::string_view where) {
  raft::AppendEntries m;
  m.prev_log_index = LogIndex(p.prev_log_index());
  m.prev_log_term = Term(p.prev_log_term());
  m.leader_commit = LogIndex(p.leader_commit());
  if (p.prev_log_index() > 0 && p.prev_log_term() == 0) {
    return Invalid(where,
                   "append_entries: prev_log_term 0 at a non-zero index");
  }
  if (static_cast<uint64_t>(p.entries_size()) >
      std::numeric_limits<uint64_t>::max() - p.prev_log_index()) {
    return Invalid(where, "append_entries: entry indexes overflow");
  }
  m.entries.reserve(static_cast<size_t>(p.entries_size()));
  // Log Matching (paper §5.3) is only meaningful for a contiguous run whose
  // terms never decrease and never pass the leader's.
  LogIndex expected = m.prev_log_index.next();
  Term previous_term = m.prev_log_term;
  for (int i = 0; i < p.entries_size(); ++i) {
    EntryProto& e = *p.mutable_entries(i);
    const std::string at = absl::StrCat("append_entries entry ", i);
    if (e.index() != expected.value()) {
      return Invalid(where,
                     absl::StrCat(at, " has index ", e.index(), " where ",
                                  expected.value(), " was expected"));
    }
    if (e.term() == 0 || e.term() < previous_term.value() ||
        e.term() > term.value()) {
      return Invalid(
          where, absl::StrCat(at, " has term ", e.term(), " (previous term ",
                              previous_term.value(), ", message term ",
                              term.value(), ")"));
    }
    if (e.type() > static_cast<uint32_t>(raft::EntryType::kNoOp)) {
      return Invalid(where, absl::StrCat(at, " has unknown type ", e.type()));
    }
    const auto type = static_cast<raft::EntryType>(e.type());
    if (type == raft::EntryType::kNoOp && !e.data().empty()) {
      return Invalid(where, absl::StrCat(at, " is a no-op with data"));
    }
    m.entries.push_back(
        raft::Entry{Term(e.term()), LogIndex(e.index()), type,
                    raft::EntryData(std::move(*e.mutable_data()))});
    previous_term = Term(e.term());
    expected = expected.next();
  }
  return m;
}

// Moves entry payloads out of `proto`.
absl::StatusOr<raft::Message> DecodeMessage(RaftMessageProto& proto,
                                            NodeId from, NodeId to,
                                            absl::string_view where) {
  raft::Message message;
  message.from = from;
  message.to = to;
  message.term = Term(proto.term());
  switch (proto.payload_case()) {
    case RaftMessageProto::kAppendEntries: {
      absl::StatusOr<raft::AppendEntries> m = DecodeAppendEntries(
          *proto.mutable_append_entries(), message.term, where);
      if (!m.ok()) return m.status();
      message.payload = *std::move(m);
      break;
    }
    case RaftMessageProto::kAppendEntriesResponse: {
      const auto& p = proto.append_entries_response();
      message.payload = raft::AppendEntriesResponse{
          p.success(), LogIndex(p.index()), LogIndex(p.hint_index()),
          Term(p.hint_term())};
      break;
    }
    case RaftMessageProto::kRequestVote: {
      const auto& p = proto.request_vote();
      message.payload = raft::RequestVote{LogIndex(p.last_log_index()),
                                          Term(p.last_log_term()), p.pre_vote(),
                                          p.transfer()};
      break;
    }
    case RaftMessageProto::kRequestVoteResponse: {
      const auto& p = proto.request_vote_response();
      message.payload = raft::RequestVoteResponse{p.granted(), p.pre_vote()};
      break;
    }
    case RaftMessageProto::kHeartbeat: {
      const auto& p = proto.heartbeat();
      message.payload =
          raft::Heartbeat{LogIndex(p.leader_commit()), p.read_round()};
      break;
    }
    case RaftMessageProto::kHeartbeatResponse:
      message.payload =
          raft::HeartbeatResponse{proto.heartbeat_response().read_round()};
      break;
    case RaftMessageProto::kInstallSnapshot: {
      if (!proto.install_snapshot().has_snapshot()) {
        return Invalid(where, "install_snapshot without a snapshot");
      }
      absl::StatusOr<raft::SnapshotMeta> meta =
          DecodeSnapshotMeta(proto.install_snapshot().snapshot(),
                             absl::StrCat(where, ": install_snapshot"));
      if (!meta.ok()) return meta.status();
      if (meta->term > message.term) {
        return Invalid(where, "install_snapshot of a term past the message's");
      }
      message.payload = raft::InstallSnapshot{*std::move(meta)};
      break;
    }
    case RaftMessageProto::kTimeoutNow:
      message.payload = raft::TimeoutNow{};
      break;
    case RaftMessageProto::kReadIndexRequest:
      message.payload =
          raft::ReadIndexRequest{proto.read_index_request().request_id()};
      break;
    case RaftMessageProto::kReadIndexResponse: {
      const auto& p = proto.read_index_response();
      message.payload =
          raft::ReadIndexResponse{p.request_id(), LogIndex(p.index())};
      break;
    }
    case RaftMessageProto::PAYLOAD_NOT_SET:
      return Invalid(where, "a message without a payload (unknown kind?)");
  }
  return message;
}

// Every top-level message carries the same routing fields.
template <typename Proto>
void EncodeRouting(uint64_t cluster_id, NodeId from, NodeId to, Proto& proto) {
  proto.set_protocol_version(kProtocolVersion);
  proto.set_cluster_id(cluster_id);
  proto.set_from(from.value());
  proto.set_to(to.value());
}

absl::StatusOr<Routing> DecodeRouting(uint32_t version, uint64_t cluster_id,
                                      uint64_t from, uint64_t to,
                                      absl::string_view where) {
  if (version != kProtocolVersion) {
    return Invalid(where, absl::StrCat("protocol version ", version,
                                       " is not supported (this node speaks ",
                                       kProtocolVersion, ")"));
  }
  if (from == 0 || to == 0 || from == to) {
    return Invalid(where, absl::StrCat("bad sender ", from, " or receiver ", to,
                                       " (non-zero and different)"));
  }
  return Routing{cluster_id, NodeId(from), NodeId(to)};
}

}  // namespace

Envelope EncodeEnvelope(uint64_t cluster_id, NodeId from, NodeId to,
                        std::span<const raft::Message> messages,
                        std::span<const raft::ServerMessage> server_messages) {
  Envelope envelope;
  EncodeRouting(cluster_id, from, to, envelope);
  for (const raft::Message& message : messages) {
    RAFT_CHECK(message.from == from && message.to == to,
               "EncodeEnvelope: a message of another sender or receiver");
    EncodeMessage(message, envelope.add_messages());
  }
  for (const raft::ServerMessage& message : server_messages) {
    RAFT_CHECK(message.from == from && message.to == to,
               "EncodeEnvelope: a message of another sender or receiver");
    if (std::holds_alternative<raft::ForwardRequest>(message.payload)) {
      *envelope.add_forward_requests() =
          EncodeForwardRequest(cluster_id, message);
    } else {
      *envelope.add_forward_responses() =
          EncodeForwardResponse(cluster_id, message);
    }
  }
  return envelope;
}

absl::StatusOr<DecodedEnvelope> DecodeEnvelope(Envelope envelope) {
  absl::StatusOr<Routing> routing =
      DecodeRouting(envelope.protocol_version(), envelope.cluster_id(),
                    envelope.from(), envelope.to(), "envelope");
  if (!routing.ok()) return routing.status();
  DecodedEnvelope decoded{*routing, {}, {}};
  decoded.messages.reserve(static_cast<size_t>(envelope.messages_size()));
  for (int i = 0; i < envelope.messages_size(); ++i) {
    absl::StatusOr<raft::Message> message =
        DecodeMessage(*envelope.mutable_messages(i), routing->from, routing->to,
                      absl::StrCat("envelope message ", i));
    if (!message.ok()) return message.status();
    decoded.messages.push_back(*std::move(message));
  }
  // Forwarded proposals and answers must travel as the envelope says.
  const auto decode_inner = [&](auto& proto, auto decode,
                                absl::string_view where) -> absl::Status {
    uint64_t cluster_id = 0;
    absl::StatusOr<raft::ServerMessage> message =
        decode(std::move(proto), &cluster_id);
    if (!message.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", message.status().message()));
    }
    if (cluster_id != routing->cluster_id || message->from != routing->from ||
        message->to != routing->to) {
      return Invalid(where, "routing differs from the envelope's");
    }
    decoded.server_messages.push_back(*std::move(message));
    return absl::OkStatus();
  };
  for (int i = 0; i < envelope.forward_requests_size(); ++i) {
    if (absl::Status status = decode_inner(
            *envelope.mutable_forward_requests(i), DecodeForwardRequest,
            absl::StrCat("envelope forward request ", i));
        !status.ok()) {
      return status;
    }
  }
  for (int i = 0; i < envelope.forward_responses_size(); ++i) {
    if (absl::Status status = decode_inner(
            *envelope.mutable_forward_responses(i), DecodeForwardResponse,
            absl::StrCat("envelope forward response ", i));
        !status.ok()) {
      return status;
    }
  }
  return decoded;
}

absl::StatusOr<DecodedEnvelope> DecodeEnvelopeBytes(std::string_view bytes) {
  Envelope envelope;
  if (!envelope.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "envelope: ", bytes.size(), " bytes are not a valid protobuf"));
  }
  return DecodeEnvelope(std::move(envelope));
}

ForwardRequestProto EncodeForwardRequest(uint64_t cluster_id,
                                         const raft::ServerMessage& message) {
  const auto& request = std::get<raft::ForwardRequest>(message.payload);
  ForwardRequestProto proto;
  EncodeRouting(cluster_id, message.from, message.to, proto);
  proto.set_request_id(request.request_id);
  for (const raft::EntryData& command : request.commands) {
    proto.add_commands(command.str());
  }
  return proto;
}

ForwardResponseProto EncodeForwardResponse(uint64_t cluster_id,
                                           const raft::ServerMessage& message) {
  const auto& response = std::get<raft::ForwardResponse>(message.payload);
  ForwardResponseProto proto;
  EncodeRouting(cluster_id, message.from, message.to, proto);
  proto.set_request_id(response.request_id);
  proto.set_code(static_cast<int32_t>(response.code));
  proto.set_error(response.error);
  proto.set_last_term(response.last.term.value());
  proto.set_last_index(response.last.index.value());
  return proto;
}

absl::StatusOr<raft::ServerMessage> DecodeForwardRequest(
    ForwardRequestProto proto, uint64_t* cluster_id) {
  absl::StatusOr<Routing> routing =
      DecodeRouting(proto.protocol_version(), proto.cluster_id(), proto.from(),
                    proto.to(), "forward request");
  if (!routing.ok()) return routing.status();
  if (proto.commands_size() == 0) {
    return Invalid("forward request", "no commands");
  }
  raft::ForwardRequest request{.request_id = proto.request_id()};
  request.commands.reserve(static_cast<size_t>(proto.commands_size()));
  for (std::string& command : *proto.mutable_commands()) {
    request.commands.emplace_back(std::move(command));
  }
  if (cluster_id != nullptr) *cluster_id = routing->cluster_id;
  return raft::ServerMessage{routing->from, routing->to, std::move(request)};
}

absl::StatusOr<raft::ServerMessage> DecodeForwardResponse(
    const ForwardResponseProto& proto, uint64_t* cluster_id) {
  absl::StatusOr<Routing> routing =
      DecodeRouting(proto.protocol_version(), proto.cluster_id(), proto.from(),
                    proto.to(), "forward response");
  if (!routing.ok()) return routing.status();
  // absl::StatusCode values run from 0 (OK) to 16 (Unauthenticated).
  if (proto.code() < 0 || proto.code() > 16) {
    return Invalid("forward response",
                   absl::StrCat("unknown status code ", proto.code()));
  }
  const auto code = static_cast<absl::StatusCode>(proto.code());
  if (code == absl::StatusCode::kOk &&
      (proto.last_index() == 0 || proto.last_term() == 0)) {
    return Invalid("forward response", "OK without the appended entry");
  }
  raft::ForwardResponse response{
      .request_id = proto.request_id(),
      .code = code,
      .error = proto.error(),
      .last =
          raft::EntryId{Term(proto.last_term()), LogIndex(proto.last_index())}};
  if (cluster_id != nullptr) *cluster_id = routing->cluster_id;
  return raft::ServerMessage{routing->from, routing->to, std::move(response)};
}

SnapshotHeaderProto EncodeSnapshotHeader(
    uint64_t cluster_id, const raft::OutgoingSnapshot& snapshot) {
  RAFT_CHECK(
      std::holds_alternative<raft::InstallSnapshot>(snapshot.message.payload),
      "EncodeSnapshotHeader: not an InstallSnapshot");
  SnapshotHeaderProto header;
  EncodeRouting(cluster_id, snapshot.message.from, snapshot.message.to, header);
  EncodeMessage(snapshot.message, header.mutable_install());
  SnapshotManifestProto* manifest = header.mutable_manifest();
  EncodeSnapshotMeta(snapshot.manifest.meta, manifest->mutable_meta());
  for (const raft::SnapshotFile& file : snapshot.manifest.files) {
    SnapshotFileProto* f = manifest->add_files();
    f->set_name(file.name);
    f->set_size(file.size);
    f->set_crc32c(file.crc32c);
  }
  manifest->set_total_bytes(snapshot.manifest.total_bytes);
  return header;
}

absl::StatusOr<DecodedSnapshotHeader> DecodeSnapshotHeader(
    const SnapshotHeaderProto& header) {
  constexpr absl::string_view kWhere = "snapshot header";
  absl::StatusOr<Routing> routing =
      DecodeRouting(header.protocol_version(), header.cluster_id(),
                    header.from(), header.to(), kWhere);
  if (!routing.ok()) return routing.status();
  RaftMessageProto install_proto = header.install();
  absl::StatusOr<raft::Message> install =
      DecodeMessage(install_proto, routing->from, routing->to, kWhere);
  if (!install.ok()) return install.status();
  const auto* payload = std::get_if<raft::InstallSnapshot>(&install->payload);
  if (payload == nullptr) {
    return Invalid(kWhere, "the message is not an install_snapshot");
  }
  if (!header.manifest().has_meta()) {
    return Invalid(kWhere, "the manifest has no snapshot metadata");
  }
  absl::StatusOr<raft::SnapshotMeta> meta =
      DecodeSnapshotMeta(header.manifest().meta(), "snapshot manifest");
  if (!meta.ok()) return meta.status();
  if (*meta != payload->snapshot) {
    return Invalid(kWhere,
                   "the manifest describes another snapshot than the message");
  }
  raft::SnapshotManifest manifest{*std::move(meta), {}, 0};
  uint64_t total = 0;
  for (int i = 0; i < header.manifest().files_size(); ++i) {
    const SnapshotFileProto& f = header.manifest().files(i);
    const std::string& name = f.name();
    if (name.empty() || name == "." || name == ".." ||
        name.find('/') != std::string::npos ||
        name.find('\0') != std::string::npos ||
        name == raft::SnapshotStore::kMetaFileName) {
      return Invalid(kWhere, absl::StrCat("file ", i, " has an unsafe name"));
    }
    if (i > 0 && header.manifest().files(i - 1).name() >= name) {
      return Invalid(kWhere, "file names must be sorted and unique");
    }
    if (f.size() > std::numeric_limits<uint64_t>::max() - total) {
      return Invalid(kWhere, "file sizes overflow");
    }
    total += f.size();
    manifest.files.push_back(raft::SnapshotFile{name, f.size(), f.crc32c()});
  }
  if (total != header.manifest().total_bytes()) {
    return Invalid(kWhere, absl::StrCat("the files add up to ", total,
                                        " bytes, the manifest says ",
                                        header.manifest().total_bytes()));
  }
  manifest.total_bytes = total;
  return DecodedSnapshotHeader{*routing, *std::move(install),
                               std::move(manifest)};
}

}  // namespace driftwood::rpc
