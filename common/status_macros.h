// Error-propagation macros. absl::Status / absl::StatusOr<T> are the only error currency
// across module boundaries (see docs/architecture.md).
#ifndef QLLM_COMMON_STATUS_MACROS_H_
#define QLLM_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QLLM_STATUS_CONCAT_INNER_(a, b) a##b
#define QLLM_STATUS_CONCAT_(a, b) QLLM_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status qllm_status_ = (expr);        \
    if (!qllm_status_.ok()) return qllm_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, otherwise moves the
// value into `lhs` (which may be a declaration such as `auto x` or `const Foo& y`).
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  QLLM_ASSIGN_OR_RETURN_IMPL_(QLLM_STATUS_CONCAT_(qllm_statusor_, __LINE__), lhs, rexpr)

#define QLLM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)  \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // QLLM_COMMON_STATUS_MACROS_H_
