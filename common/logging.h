// Minimal logging and invariant checks. The abseil release on Debian 12 (20220623) has no
// absl/log, so the project carries these few macros.
//
//   QLLM_LOG(INFO) << "loaded " << n << " tensors";
//   QLLM_CHECK(ptr != nullptr) << "context";      // aborts: programmer errors only
//
// Recoverable conditions (bad input, I/O, peers) return absl::Status instead.
#ifndef QLLM_COMMON_LOGGING_H_
#define QLLM_COMMON_LOGGING_H_

#include <sstream>
#include <string_view>

namespace qllm {

enum class LogSeverity { kInfo, kWarning, kError, kFatal };

// Minimum severity that is printed. Default: kInfo; QLLM_LOG_LEVEL=warning|error raises it.
LogSeverity MinLogSeverity();

namespace logging_internal {

// Collects one message and writes it to stderr on destruction; aborts for kFatal.
class LogMessage {
 public:
  LogMessage(const char* file, int line, LogSeverity severity);
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  const char* file_;
  int line_;
  LogSeverity severity_;
  std::ostringstream stream_;
};

// Swallows a stream expression when the log statement is disabled.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace logging_internal
}  // namespace qllm

#define QLLM_LOG_SEVERITY_INFO ::qllm::LogSeverity::kInfo
#define QLLM_LOG_SEVERITY_WARNING ::qllm::LogSeverity::kWarning
#define QLLM_LOG_SEVERITY_ERROR ::qllm::LogSeverity::kError
#define QLLM_LOG_SEVERITY_FATAL ::qllm::LogSeverity::kFatal

#define QLLM_LOG(severity)                                                                         \
  (QLLM_LOG_SEVERITY_##severity < ::qllm::MinLogSeverity())                                        \
      ? (void)0                                                                                    \
      : ::qllm::logging_internal::Voidify() &                                                      \
            ::qllm::logging_internal::LogMessage(__FILE__, __LINE__, QLLM_LOG_SEVERITY_##severity) \
                .stream()

// Aborts with a message when `cond` is false. For broken invariants, never for input errors.
#define QLLM_CHECK(cond)                                                                          \
  (cond)                                                                                          \
      ? (void)0                                                                                   \
      : ::qllm::logging_internal::Voidify() &                                                     \
            ::qllm::logging_internal::LogMessage(__FILE__, __LINE__, ::qllm::LogSeverity::kFatal) \
                    .stream()                                                                     \
                << "Check failed: " #cond " "

#ifdef NDEBUG
#define QLLM_DCHECK(cond) \
  while (false) QLLM_CHECK(cond)
#else
#define QLLM_DCHECK(cond) QLLM_CHECK(cond)
#endif

#endif  // QLLM_COMMON_LOGGING_H_
