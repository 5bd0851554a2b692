#include "model/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/testutil/checkpoint_writer.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_paths.h"

namespace qllm::model {
namespace {

using ::qllm::testing::FloatTensor;
using ::qllm::testing::RawTensor;
using ::qllm::testing::SerializeSafetensors;
using ::qllm::testing::StatusIs;
using ::qllm::testing::WriteFile;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = qllm::testing::MakeScratchDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& bytes) {
    const std::string path = dir_ + "/t.safetensors";
    WriteFile(path, bytes);
    return path;
  }
  // A header-only file: 8-byte length then `json`.
  std::string WithHeader(std::string json, const std::string& data = "") {
    while (json.size() % 8) json += ' ';
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
    return out + json + data;
  }
  std::string dir_;
};

TEST_F(SafetensorsTest, ReadsEveryFloatDtype) {
  const std::vector<float> values = {1.0f, -2.5f, 0.333333f, 65504.0f, 1e-6f, 0.0f};
  std::map<std::string, RawTensor> t;
  t["a"] = FloatTensor(values, {2, 3}, "F32");
  t["b"] = FloatTensor(values, {6}, "F16");
  t["c"] = FloatTensor(values, {3, 2}, "BF16");
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(Write(SerializeSafetensors(t))));
  ASSERT_EQ(file->tensors().size(), 3u);
  const TensorView* a = file->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_THAT(a->shape, ::testing::ElementsAre(2, 3));
  std::vector<float> out(6);
  ASSERT_OK(ConvertToFloat(*a, out.data()));
  EXPECT_EQ(out, values);
  ASSERT_OK(ConvertToFloat(*file->Find("b"), out.data()));
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(out[i], values[i], 1e-3 * std::abs(values[i]) + 1e-7);
  ASSERT_OK(ConvertToFloat(*file->Find("c"), out.data()));
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(out[i], values[i], 8e-3 * std::abs(values[i]));
  EXPECT_EQ(file->Find("missing"), nullptr);
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsFile::Open(dir_ + "/nope.safetensors"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SafetensorsTest, ShorterThanLengthPrefixIsDataLoss) {
  EXPECT_THAT(SafetensorsFile::Open(Write("abc")), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(SafetensorsTest, TruncatedHeaderIsDataLoss) {
  std::string bytes = WithHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})");
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes.substr(0, 20))),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(SafetensorsTest, TruncatedDataIsDataLoss) {
  std::map<std::string, RawTensor> t;
  t["w"] = FloatTensor(std::vector<float>(100, 1.0f), {10, 10});
  const std::string bytes = SerializeSafetensors(t);
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes.substr(0, bytes.size() - 4))),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(SafetensorsTest, ImplausibleHeaderLengthIsInvalid) {
  std::string bytes(16, '\xff');
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a safetensors")));
}

TEST_F(SafetensorsTest, HeaderNotJsonIsInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(Write(WithHeader("this is not json"))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON")));
}

TEST_F(SafetensorsTest, MissingFieldsAreInvalid) {
  EXPECT_THAT(SafetensorsFile::Open(Write(WithHeader(R"({"a":{"dtype":"F32","shape":[1]}})"))),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("data_offsets")));
}

TEST_F(SafetensorsTest, OffsetsDisagreeingWithShapeAreInvalid) {
  const std::string bytes =
      WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(8, 0));
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shape and dtype need 8")));
}

TEST_F(SafetensorsTest, OverlappingTensorsAreInvalid) {
  const std::string bytes = WithHeader(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
          "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, 0));
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overlap")));
}

TEST_F(SafetensorsTest, UnsupportedDtypeIsUnimplemented) {
  const std::string bytes = WithHeader(
      R"({"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", std::string(4, 0));
  EXPECT_THAT(SafetensorsFile::Open(Write(bytes)),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("F8_E4M3")));
}

TEST_F(SafetensorsTest, IntegerTensorIsNotConvertedToFloat) {
  RawTensor ids{"I32", {2}, std::string(8, 0)};
  std::map<std::string, RawTensor> t;
  t["ids"] = ids;
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(Write(SerializeSafetensors(t))));
  float out[2];
  EXPECT_THAT(ConvertToFloat(*file->Find("ids"), out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace qllm::model
