// Locations the tests use: the source tree, the build tree, and a fresh scratch directory.
#ifndef QLLM_TESTS_TESTUTIL_TEST_PATHS_H_
#define QLLM_TESTS_TESTUTIL_TEST_PATHS_H_

#include <string>

namespace qllm::testing {

// The repository root: $QLLM_SOURCE_DIR, else the one the tests were configured from.
std::string SourceDir();
// The CMake build directory: $QLLM_BINARY_DIR, else the one the tests were built in.
std::string BinaryDir();
// Creates and returns a new empty directory under the system temp dir, named after the
// running test. The directory is removed by the caller or left for inspection on failure.
std::string MakeScratchDir();
// Runs a shell command and returns its exit status (-1 when it could not be started).
int RunCommand(const std::string& command);

}  // namespace qllm::testing

#endif  // QLLM_TESTS_TESTUTIL_TEST_PATHS_H_
