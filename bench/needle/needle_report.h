// Reports of the needle benchmark: a Markdown summary (accuracy per length x depth for each
// mode and task, then time and memory per mode and length) and a JSON file with every case.
#ifndef QLLM_BENCH_NEEDLE_NEEDLE_REPORT_H_
#define QLLM_BENCH_NEEDLE_NEEDLE_REPORT_H_

#include <string>
#include <vector>

#include "bench/needle/needle_runner.h"

namespace qllm::needle {

// What the report says about the run besides the cells.
struct NeedleReportInfo {
  std::string model_dir;
  // One line describing the memory parameters, e.g. "n_init 16, n_local 128, ...".
  std::string memory;
  uint64_t seed = 0;
  int32_t cases = 0;
  int64_t full_max_tokens = 0;
  int64_t store_min_tokens = 0;
  // OMP_NUM_THREADS or "default".
  std::string threads;
};

// Markdown: one accuracy table per (mode, task) with lengths as rows and depths as columns
// ("k/n" per cell, "skip" for skipped cells, "err" for failed ones), then a cost table per
// (mode, task, length): accuracy over all depths, mean prefill tokens/s, mean seconds per
// case, the largest peak RSS of its cells, and where the blocks were kept.
std::string FormatNeedleMarkdown(const NeedleReportInfo& info,
                                 const std::vector<NeedleCellResult>& cells);

// JSON: {"model_dir", "memory", "seed", "cases", "full_max_tokens", "store_min_tokens",
// "threads", "cells": [NeedleCellResultToJson...]}.
std::string FormatNeedleJson(const NeedleReportInfo& info,
                             const std::vector<NeedleCellResult>& cells);

}  // namespace qllm::needle

#endif  // QLLM_BENCH_NEEDLE_NEEDLE_REPORT_H_
