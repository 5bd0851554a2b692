#include "common/logging.h"

#include <cstdlib>
#include <cstring>
#include <iostream>

namespace qllm {

LogSeverity MinLogSeverity() {
  static const LogSeverity level = [] {
    const char* env = std::getenv("QLLM_LOG_LEVEL");
    if (env == nullptr) return LogSeverity::kInfo;
    if (std::strcmp(env, "warning") == 0) return LogSeverity::kWarning;
    if (std::strcmp(env, "error") == 0) return LogSeverity::kError;
    return LogSeverity::kInfo;
  }();
  return level;
}

namespace logging_internal {

LogMessage::LogMessage(const char* file, int line, LogSeverity severity)
    : file_(file), line_(line), severity_(severity) {}

LogMessage::~LogMessage() {
  static constexpr const char* kNames[] = {"I", "W", "E", "F"};
  const char* base = std::strrchr(file_, '/');
  std::cerr << kNames[static_cast<int>(severity_)] << " " << (base ? base + 1 : file_) << ":"
            << line_ << "] " << stream_.str() << std::endl;
  if (severity_ == LogSeverity::kFatal) std::abort();
}

}  // namespace logging_internal
}  // namespace qllm
