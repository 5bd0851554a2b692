#include "tests/testutil/test_paths.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <random>

namespace qllm::testing {

namespace {
std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string(fallback);
}
}  // namespace

// The environment overrides the directories the test binaries were configured with.
std::string SourceDir() { return EnvOr("QLLM_SOURCE_DIR", QLLM_DEFAULT_SOURCE_DIR); }
std::string BinaryDir() { return EnvOr("QLLM_BINARY_DIR", QLLM_DEFAULT_BINARY_DIR); }

std::string MakeScratchDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "qllm";
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  std::random_device rd;
  const auto dir =
      std::filesystem::temp_directory_path() / ("qllm-" + name + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

int RunCommand(const std::string& command) {
  const int rc = std::system(command.c_str());
  if (rc == -1) return -1;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

}  // namespace qllm::testing
