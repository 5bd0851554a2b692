// A device error that leaves the accelerator unusable for this process (a sticky CUDA error:
// illegal address, launch failure, ECC...). Such errors are UNAVAILABLE with a payload that
// marks them, so a worker can tell "this call failed" from "this device is lost": the former
// fails one request, the latter makes the worker report itself unhealthy and refuse further
// work (worker/worker_core.h) instead of crashing or computing garbage.
#ifndef QLLM_COMMON_DEVICE_ERROR_H_
#define QLLM_COMMON_DEVICE_ERROR_H_

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace qllm {

// (absl::string_view: CUDA sources compile as C++17, where it is not std::string_view.)
inline constexpr absl::string_view kDeviceLostPayload = "type.qllm.dev/DeviceLost";

// UNAVAILABLE `message`, marked as a lost device.
inline absl::Status DeviceLostError(absl::string_view message) {
  absl::Status s = absl::UnavailableError(message);
  s.SetPayload(kDeviceLostPayload, absl::Cord("1"));
  return s;
}

// Whether `status` reports a lost device (the mark survives copies, not the wire).
inline bool IsDeviceLost(const absl::Status& status) {
  return !status.ok() && status.GetPayload(kDeviceLostPayload).has_value();
}

// `status` with "`context`: " before its message, its code and payloads kept, so a lost
// device is still one after a layer or call adds where it happened. OK stays OK. Every helper
// that prefixes an error on its way out of a device call must go through this.
inline absl::Status AnnotateStatus(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&out](absl::string_view type_url, const absl::Cord& payload) {
    out.SetPayload(type_url, payload);
  });
  return out;
}

}  // namespace qllm

#endif  // QLLM_COMMON_DEVICE_ERROR_H_
