#include "common/process_env.h"

#include <unistd.h>

#include <cstdlib>

namespace qllm {

void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // execv failed: keep running with the default policy.
}

}  // namespace qllm
