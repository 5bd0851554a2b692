// Process start-up settings shared by the service binaries.
#ifndef QLLM_COMMON_PROCESS_ENV_H_
#define QLLM_COMMON_PROCESS_ENV_H_

namespace qllm {

// The service runs several pipeline stages (threads or processes) on shared cores. libgomp's
// default wait policy spins on idle cores, which on a loaded machine made a 3-worker answer take
// 80 s instead of 3.5 s (bench/service). libgomp reads OMP_WAIT_POLICY when it loads, before
// main(), so when the operator has not chosen a policy this sets "passive" and re-executes the
// binary once (argv unchanged). Returns only when no re-exec was needed or it failed.
void EnsurePassiveOpenMpWait(char** argv);

// Graceful stop: call BlockTerminationSignals() in main() before any thread starts, so SIGTERM
// and SIGINT reach no thread by default; then WaitForTerminationSignal() (on a thread of its
// own) returns the signal when one arrives, for the caller to drain and stop its server.
void BlockTerminationSignals();
int WaitForTerminationSignal();

}  // namespace qllm

#endif  // QLLM_COMMON_PROCESS_ENV_H_
