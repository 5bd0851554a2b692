#include "bench/needle/needle_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qllm::needle {
namespace {

// 1024 -> "1K", 1048576 -> "1M", others as numbers.
std::string LengthName(int64_t n) {
  if (n >= (int64_t{1} << 20) && n % (int64_t{1} << 20) == 0) return absl::StrCat(n >> 20, "M");
  if (n >= 1024 && n % 1024 == 0) return absl::StrCat(n >> 10, "K");
  return absl::StrCat(n);
}

std::string DepthName(double d) { return absl::StrFormat("%.0f%%", 100.0 * d); }

// Key of a table: (mode, task).
using TableKey = std::pair<int, int>;

TableKey KeyOf(const NeedleCell& c) { return {static_cast<int>(c.mode), static_cast<int>(c.task)}; }

}  // namespace

std::string FormatNeedleMarkdown(const NeedleReportInfo& info,
                                 const std::vector<NeedleCellResult>& cells) {
  std::string out;
  // The directory's name only: the report is pasted into model cards and documents.
  std::filesystem::path model = std::filesystem::path(info.model_dir).lexically_normal();
  if (model.filename().empty()) model = model.parent_path();
  absl::StrAppend(&out, "Model `", model.filename().string(), "`; memory: ", info.memory, "; ",
                  info.cases, " documents per cell (seed ", info.seed, "); full attention up to ",
                  LengthName(info.full_max_tokens), " tokens; blocks in RocksDB from ",
                  LengthName(info.store_min_tokens), " tokens; threads: ", info.threads, ".\n");
  std::map<TableKey, std::vector<const NeedleCellResult*>> tables;
  for (const NeedleCellResult& r : cells) tables[KeyOf(r.cell)].push_back(&r);
  for (const auto& [key, rs] : tables) {
    std::set<double> depths;
    std::set<int64_t> lengths;
    std::map<std::pair<int64_t, double>, const NeedleCellResult*> at;
    for (const NeedleCellResult* r : rs) {
      depths.insert(r->cell.depth);
      lengths.insert(r->cell.length);
      at[{r->cell.length, r->cell.depth}] = r;
    }
    const NeedleCell& c0 = rs.front()->cell;
    absl::StrAppend(&out, "\n**", worker::AttentionModeName(c0.mode), ", ", NeedleTaskName(c0.task),
                    "**: correct answers by document length (rows) and "
                    "needle depth (columns)\n\n| length |");
    for (double d : depths) absl::StrAppend(&out, " ", DepthName(d), " |");
    absl::StrAppend(&out, " all |\n|---|");
    for (size_t i = 0; i <= depths.size(); ++i) out += "---|";
    out += "\n";
    for (int64_t n : lengths) {
      absl::StrAppend(&out, "| ", LengthName(n), " |");
      int correct = 0, total = 0;
      for (double d : depths) {
        auto it = at.find({n, d});
        if (it == at.end()) {
          out += " |";
          continue;
        }
        const NeedleCellResult& r = *it->second;
        if (r.skipped) {
          out += " skip |";
        } else if (!r.error.empty()) {
          out += " err |";
        } else {
          absl::StrAppend(&out, " ", r.correct(), "/", r.cases.size(), " |");
          correct += r.correct();
          total += static_cast<int>(r.cases.size());
        }
      }
      if (total > 0) {
        absl::StrAppend(&out, absl::StrFormat(" %.0f%% |\n", 100.0 * correct / total));
      } else {
        out += " - |\n";
      }
    }
  }

  out +=
      "\n| mode | task | length | accuracy | prefill tok/s | s per case | peak RSS MB | blocks "
      "in |\n|---|---|---|---|---|---|---|---|\n";
  std::map<std::tuple<int, int, int64_t>, std::vector<const NeedleCellResult*>> rows;
  for (const NeedleCellResult& r : cells) {
    rows[{static_cast<int>(r.cell.mode), static_cast<int>(r.cell.task), r.cell.length}].push_back(
        &r);
  }
  for (const auto& [key, rs] : rows) {
    const NeedleCell& c0 = rs.front()->cell;
    int correct = 0, total = 0;
    int64_t tokens = 0;
    double prefill = 0.0, seconds = 0.0, rss = 0.0;
    std::string blocks_in = "-", notes;
    for (const NeedleCellResult* r : rs) {
      if (r->skipped) {
        notes = r->note;
        continue;
      }
      if (!r->error.empty()) notes = r->error;
      correct += r->correct();
      rss = std::max(rss, r->peak_rss_mb);
      if (!r->blocks_in.empty()) blocks_in = r->blocks_in;
      for (const NeedleCaseResult& c : r->cases) {
        ++total;
        tokens += c.prompt_tokens;
        prefill += c.prefill_seconds;
        seconds += c.prefill_seconds + c.decode_seconds;
      }
    }
    absl::StrAppend(&out, "| ", worker::AttentionModeName(c0.mode), " | ", NeedleTaskName(c0.task),
                    " | ", LengthName(c0.length), " | ");
    if (total == 0) {
      absl::StrAppend(&out, notes.empty() ? "-" : notes, " | | | | |\n");
      continue;
    }
    absl::StrAppend(&out,
                    absl::StrFormat("%d/%d (%.0f%%) | %.0f | %.2f | %.0f | %s |\n", correct, total,
                                    100.0 * correct / total, tokens / std::max(prefill, 1e-9),
                                    seconds / total, rss, blocks_in));
  }
  return out;
}

std::string FormatNeedleJson(const NeedleReportInfo& info,
                             const std::vector<NeedleCellResult>& cells) {
  nlohmann::json j = {{"model_dir", info.model_dir},
                      {"memory", info.memory},
                      {"seed", info.seed},
                      {"cases", info.cases},
                      {"full_max_tokens", info.full_max_tokens},
                      {"store_min_tokens", info.store_min_tokens},
                      {"threads", info.threads}};
  nlohmann::json arr = nlohmann::json::array();
  for (const NeedleCellResult& r : cells)
    arr.push_back(nlohmann::json::parse(NeedleCellResultToJson(r)));
  j["cells"] = std::move(arr);
  return j.dump(1) + "\n";
}

}  // namespace qllm::needle
