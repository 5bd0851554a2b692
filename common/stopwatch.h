// Wall-clock stopwatch on the steady clock.
#ifndef QLLM_COMMON_STOPWATCH_H_
#define QLLM_COMMON_STOPWATCH_H_

#include <chrono>

namespace qllm {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void Reset() { start_ = std::chrono::steady_clock::now(); }
  // Seconds since construction or the last Reset().
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace qllm

#endif  // QLLM_COMMON_STOPWATCH_H_
