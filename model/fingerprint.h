// A model fingerprint: a stable digest of a checkpoint directory that persisted documents are
// bound to (a document's layer states are only meaningful for the weights that computed them).
#ifndef QLLM_MODEL_FINGERPRINT_H_
#define QLLM_MODEL_FINGERPRINT_H_

#include <string>

#include "absl/status/statusor.h"

namespace qllm::model {

// Returns 32 hex digits digesting config.json and every *.safetensors file of `model_dir`: the
// file names and sizes, the safetensors headers (names, dtypes, shapes, offsets) and 64 KiB
// samples at 17 evenly spaced offsets of each file. Reads at most ~1 MiB per file, so it is
// cheap for 16 GB checkpoints; it changes when the architecture, a tensor's layout or (almost
// surely) its values change. Errors: NOT_FOUND without config.json, the I/O errors otherwise.
absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir);

}  // namespace qllm::model

#endif  // QLLM_MODEL_FINGERPRINT_H_
