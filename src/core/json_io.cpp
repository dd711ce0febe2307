#include "core/json_io.hpp"

#include "core/error.hpp"

namespace bmojo {

namespace {

struct TooDeep {};

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& what, int max_depth) {
  using nlohmann::json;
  // The callback sees every event with its depth before the value is built, so a hostile text is refused at
  // its 65th opening bracket, whatever its length.
  const json::parser_callback_t limit = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw TooDeep{};
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), limit);
  } catch (const TooDeep&) {
    fail(what + ": JSON nested deeper than " + std::to_string(max_depth) + " levels");
  } catch (const json::exception& e) {
    fail(what + ": not valid JSON (" + e.what() + ")");
  }
}

std::string json_brief(const nlohmann::json& value, size_t max_chars) {
  std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace bmojo
