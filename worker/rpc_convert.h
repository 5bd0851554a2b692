// Conversions between the wire messages of proto/qllm/v1 and the engine's structs, shared by the
// worker service and the coordinator's gRPC transport.
#ifndef QLLM_WORKER_RPC_CONVERT_H_
#define QLLM_WORKER_RPC_CONVERT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "qllm/v1/worker.pb.h"
#include "worker/worker_core.h"

namespace qllm::worker {

// `base` with every set field of `params` applied, validated (MemoryConfig::Validate).
// INVALID_ARGUMENT names the offending field.
absl::StatusOr<MemoryConfig> MemoryConfigFromProto(const v1::MemoryParams& params,
                                                   const MemoryConfig& base);
// Every field set.
v1::MemoryParams MemoryConfigToProto(const MemoryConfig& config);

v1::OpenSessionRequest SessionSpecToProto(const SessionSpec& spec);
absl::StatusOr<SessionSpec> SessionSpecFromProto(const v1::OpenSessionRequest& request,
                                                 const MemoryConfig& base);

void SelectionToProto(const ChunkSelection& s, v1::BlockSelection* out);
ChunkSelection SelectionFromProto(const v1::BlockSelection& s);

v1::LoadShardRequest ShardSpecToProto(const ShardSpec& spec);
v1::ModelInfo ModelInfoToProto(const model::ModelConfig& config, const std::string& fingerprint);
ShardSpec ShardSpecFromProto(const v1::LoadShardRequest& request);

// absl <-> gRPC status: the code and message carry over unchanged.
grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace qllm::worker

#endif  // QLLM_WORKER_RPC_CONVERT_H_
