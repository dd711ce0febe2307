#include "profile_table.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "core/profile.hpp"

namespace bmojo {

using nlohmann::json;

json print_profile(double step_ms_total, int64_t steps, bool as_json) {
  const std::vector<profile::Entry> entries = profile::totals();
  double covered = 0.0;
  json rows = json::array();
  for (const profile::Entry& e : entries) {
    const double ms = e.seconds * 1000.0 / steps;
    covered += e.seconds * 1000.0;
    const double gflops = e.flops > 0 && e.seconds > 0 ? e.flops / e.seconds / 1e9 : 0.0;
    rows.push_back({{"kernel", e.name},
                    {"ms_per_step", ms},
                    {"share", ms * steps / step_ms_total},
                    {"calls_per_step", static_cast<double>(e.calls) / steps},
                    {"gflops", gflops}});
  }
  const double other = std::max(0.0, step_ms_total - covered) / steps;
  rows.push_back({{"kernel", "other"},
                  {"ms_per_step", other},
                  {"share", other * steps / step_ms_total},
                  {"calls_per_step", 0.0},
                  {"gflops", 0.0}});
  if (!as_json) print_profile_rows(rows);
  return rows;
}

void print_profile_rows(const json& rows) {
  std::printf("profile (exclusive time per timed step):\n");
  for (const json& r : rows) {
    const std::string name = r["kernel"];
    const double ms = r["ms_per_step"], share = r["share"], gflops = r["gflops"];
    if (name == "other") {
      std::printf("  %-32s %8.2f ms %5.1f%%   (the step's code outside every scope)\n", "other", ms,
                  100.0 * share);
      continue;
    }
    std::printf("  %-32s %8.2f ms %5.1f%% %7.1f calls", name.c_str(), ms, 100.0 * share,
                r["calls_per_step"].get<double>());
    if (gflops > 0) std::printf("  %6.1f GFLOP/s", gflops);
    std::printf("\n");
  }
}

}  // namespace bmojo
