// The engine against the independent PyTorch reference (tools/reference/llama_ref.py, float64)
// on random checkpoints in the real on-disk formats: every logit of a 300-token prefill done in
// uneven chunks and of 20 greedy decode steps, and the greedy tokens themselves.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "coordinator/local_pipeline.h"
#include "model/safetensors.h"
#include "model/sampler.h"
#include "tests/testutil/pipeline_util.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"
#include "worker/model_shard.h"

namespace qllm {
namespace {

// Max abs error allowed, relative to the largest |logit| of the reference.
constexpr double kRelativeTolerance = 1e-4;

std::string FixtureDir(const std::string& preset) {
  return testing::BinaryDir() + "/testdata/reference/" + preset;
}

struct Expected {
  std::vector<int32_t> prompt;
  std::vector<float> prompt_logits;
  std::vector<int32_t> generated;
  std::vector<float> decode_logits;
};

absl::StatusOr<Expected> LoadExpected(const std::string& dir) {
  auto file = model::SafetensorsFile::Open(dir + "/expected.safetensors");
  if (!file.ok()) return file.status();
  Expected e;
  auto ints = [&](const char* name, std::vector<int32_t>* out) -> absl::Status {
    const model::TensorView* v = (*file)->Find(name);
    if (v == nullptr || v->dtype != model::DType::kI32) {
      return absl::NotFoundError(std::string("expected I32 tensor ") + name);
    }
    out->resize(v->NumElements());
    std::memcpy(out->data(), v->data, v->nbytes);
    return absl::OkStatus();
  };
  auto floats = [&](const char* name, std::vector<float>* out) -> absl::Status {
    const model::TensorView* v = (*file)->Find(name);
    if (v == nullptr) return absl::NotFoundError(std::string("expected tensor ") + name);
    out->resize(v->NumElements());
    return model::ConvertToFloat(*v, out->data());
  };
  if (auto s = ints("prompt_tokens", &e.prompt); !s.ok()) return s;
  if (auto s = ints("generated", &e.generated); !s.ok()) return s;
  if (auto s = floats("prompt_logits", &e.prompt_logits); !s.ok()) return s;
  if (auto s = floats("decode_logits", &e.decode_logits); !s.ok()) return s;
  return e;
}

double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return testing::RelativeError(a.data(), b.data(), std::min(a.size(), b.size()));
}

struct Case {
  std::string preset;
  // Layer boundaries of the pipeline stages, e.g. {0, 3} for one stage holding three layers.
  std::vector<int32_t> stages;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.preset << " in " << c.stages.size() - 1 << " stage(s)";
}

class ReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceTest, LogitsAndGreedyTokensMatchPyTorch) {
  const std::string dir = FixtureDir(GetParam().preset);
  ASSERT_TRUE(std::filesystem::exists(dir + "/expected.safetensors"))
      << dir << " is missing: the reference_fixtures CTest fixture generates it";
  ASSERT_OK_AND_ASSIGN(Expected e, LoadExpected(dir));
  ASSERT_OK_AND_ASSIGN(testing::TestPipeline loaded, testing::LoadPipeline(dir, GetParam().stages));
  const coordinator::LocalPipeline* pipeline = loaded.pipeline.get();
  const int32_t vocab = pipeline->config().vocab_size;
  ASSERT_EQ(e.prompt.size(), 300u);
  ASSERT_EQ(e.prompt_logits.size(), 300u * vocab);

  // Prefill in uneven chunks (several calls, including a single-token one).
  auto session = pipeline->NewSession();
  std::vector<float> logits, chunk_logits;
  size_t pos = 0;
  for (size_t len : {37, 64, 1, 128, 70}) {
    std::span<const int32_t> chunk(e.prompt.data() + pos, len);
    ASSERT_OK(pipeline->RunChunk(session.get(), chunk, /*all_logits=*/true, &chunk_logits));
    logits.insert(logits.end(), chunk_logits.begin(), chunk_logits.end());
    pos += len;
  }
  ASSERT_EQ(pos, e.prompt.size());
  const double prefill_err = RelativeError(logits, e.prompt_logits);
  EXPECT_LE(prefill_err, kRelativeTolerance) << "prefill logits";

  // 20 decode steps fed with the reference's greedy tokens; our own argmax must agree.
  std::vector<float> decode_logits;
  std::vector<int32_t> greedy = {
      model::Argmax(logits.data() + (e.prompt.size() - 1) * vocab, vocab)};
  for (int j = 0; j < 20; ++j) {
    const int32_t input[1] = {e.generated[j]};
    ASSERT_OK(pipeline->RunChunk(session.get(), input, /*all_logits=*/false, &chunk_logits));
    decode_logits.insert(decode_logits.end(), chunk_logits.begin(), chunk_logits.end());
    greedy.push_back(model::Argmax(chunk_logits.data(), vocab));
  }
  const double decode_err = RelativeError(decode_logits, e.decode_logits);
  EXPECT_LE(decode_err, kRelativeTolerance) << "decode logits";
  EXPECT_EQ(greedy, e.generated) << "greedy continuation";
  RecordProperty("prefill_relative_error", std::to_string(prefill_err));
  RecordProperty("decode_relative_error", std::to_string(decode_err));
  std::printf("%s: prefill rel err %.3g, decode rel err %.3g\n", GetParam().preset.c_str(),
              prefill_err, decode_err);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ReferenceTest,
    ::testing::Values(Case{"mha_untied", {0, 2}}, Case{"gqa2_tied", {0, 2}},
                      Case{"gqa4_llama3", {0, 3}}, Case{"mistral_bf16", {0, 2}},
                      Case{"llama_f16_sharded", {0, 3}},
                      Case{"gqa4_llama3", {0, 1, 2, 3}},  // Three pipeline stages.
                      Case{"gqa2_tied", {0, 1, 2}}),      // Tied head on a stage without it.
    [](const auto& info) {
      return info.param.preset + "_" + std::to_string(info.param.stages.size() - 1) + "stage";
    });

}  // namespace
}  // namespace qllm
