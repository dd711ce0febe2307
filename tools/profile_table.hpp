// The profile table printed by `bmojo bench --profile` and `bmojo infer-bench --concurrent ... --profile`:
// each kernel's exclusive time per timed step (core/profile.hpp), its share of the step, calls per step and,
// for kernels that count their flops, the rate they ran at; "other" is the step's time outside every scope.
#pragma once
#include <nlohmann/json.hpp>

namespace bmojo {

// The totals recorded since the last profile::reset() over `steps` steps that took `step_ms_total` in all;
// printed unless `as_json`, and returned as JSON rows either way.
nlohmann::json print_profile(double step_ms_total, int64_t steps, bool as_json);
// The same rows printed as a table (rows kept from an earlier print_profile(..., true)).
void print_profile_rows(const nlohmann::json& rows);

}  // namespace bmojo
