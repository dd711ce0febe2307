// Every JSON text bmojo reads from outside (config files, --set values, checkpoint headers and their
// metadata, server requests) goes through parse_json: nesting is limited before anything recursive (dump,
// copies, error messages) can touch the value, and errors name the source.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace bmojo {

inline constexpr int kMaxJsonDepth = 64;

// Throws bmojo::Error "<what>: not valid JSON ..." or "<what>: JSON nested deeper than 64 levels".
nlohmann::json parse_json(std::string_view text, const std::string& what, int max_depth = kMaxJsonDepth);

// A value shown in an error message: its JSON text, cut to about max_chars.
std::string json_brief(const nlohmann::json& value, size_t max_chars = 80);

}  // namespace bmojo
