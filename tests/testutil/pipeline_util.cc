#include "tests/testutil/pipeline_util.h"

#include <algorithm>
#include <cmath>

#include "common/status_macros.h"

namespace qllm::testing {

absl::StatusOr<TestPipeline> LoadPipeline(const std::string& model_dir,
                                          const std::vector<int32_t>& bounds) {
  TestPipeline t;
  std::vector<const worker::ModelShard*> stages;
  for (size_t i = 0; i + 1 < bounds.size(); ++i) {
    model::LoadOptions o;
    o.layer_begin = bounds[i];
    o.layer_end = bounds[i + 1];
    o.load_embedding = i == 0;
    o.load_head = i + 2 == bounds.size();
    ASSIGN_OR_RETURN(auto shard, worker::ModelShard::Load(model_dir, o));
    stages.push_back(shard.get());
    t.shards.push_back(std::move(shard));
  }
  ASSIGN_OR_RETURN(t.pipeline, coordinator::LocalPipeline::Create(stages));
  return t;
}

double RelativeError(const float* a, const float* b, size_t n) {
  double max_err = 0.0, scale = 0.0;
  for (size_t i = 0; i < n; ++i) {
    max_err = std::max(max_err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return max_err / scale;
}

}  // namespace qllm::testing
