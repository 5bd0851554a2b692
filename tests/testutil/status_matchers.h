// GoogleTest matchers for absl::Status / absl::StatusOr (the abseil release on Debian 12 has no
// status_matchers.h). There is deliberately no NotOk(): tests pin the specific error code.
//
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtype")));
//   EXPECT_THAT(result, IsOkAndHolds(42));
//   ASSERT_OK(s);  ASSERT_OK_AND_ASSIGN(auto v, MakeValue());
#ifndef QLLM_TESTS_TESTUTIL_STATUS_MATCHERS_H_
#define QLLM_TESTS_TESTUTIL_STATUS_MATCHERS_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qllm::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code,
          std::string(negation ? "does not have" : "has") + " status code " +
              absl::StatusCodeToString(code)) {
  const absl::Status& s = ::qllm::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = ::qllm::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = ::qllm::testing::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P(IsOkAndHolds, value_matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(value_matcher, *arg, result_listener);
}

}  // namespace qllm::testing

#define QLLM_TESTING_CONCAT_INNER_(a, b) a##b
#define QLLM_TESTING_CONCAT_(a, b) QLLM_TESTING_CONCAT_INNER_(a, b)

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::qllm::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::qllm::testing::IsOk())

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  QLLM_ASSERT_OK_AND_ASSIGN_IMPL_(QLLM_TESTING_CONCAT_(qllm_statusor_, __LINE__), lhs, rexpr)
#define QLLM_ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  ASSERT_TRUE(statusor.ok()) << statusor.status();            \
  lhs = std::move(statusor).value()

#endif  // QLLM_TESTS_TESTUTIL_STATUS_MATCHERS_H_
