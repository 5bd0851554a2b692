// Helpers shared by the engine suites: a pipeline of layer shards over one checkpoint, and the
// error measure the reference suites use.
#ifndef QLLM_TESTS_TESTUTIL_PIPELINE_UTIL_H_
#define QLLM_TESTS_TESTUTIL_PIPELINE_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/local_pipeline.h"
#include "worker/model_shard.h"

namespace qllm::testing {

// Shards of one checkpoint and the pipeline over them. The pipeline points into `shards`.
struct TestPipeline {
  std::vector<std::unique_ptr<worker::ModelShard>> shards;
  std::unique_ptr<coordinator::LocalPipeline> pipeline;
};

// Loads `model_dir` as stages with layer boundaries `bounds` (e.g. {0, 3} for one stage of
// three layers, {0, 1, 3} for two stages): the first holds the embedding, the last the head.
absl::StatusOr<TestPipeline> LoadPipeline(const std::string& model_dir,
                                          const std::vector<int32_t>& bounds);

// max |a - b| / max |b| over n values: the error relative to the reference's logit scale.
double RelativeError(const float* a, const float* b, size_t n);

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_PIPELINE_UTIL_H_
