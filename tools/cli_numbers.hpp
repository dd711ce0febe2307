// Integer flags parsed strictly: the whole text must be a decimal number inside the flag's range, so
// `-n 99999999999999999999`, `--seed -1` or `--steps 1e3` are errors naming the flag, never wrapped,
// clamped or truncated (CLI11's own conversion accepts some of those).
#pragma once
#include <CLI/CLI.hpp>
#include <charconv>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace bmojo {

template <class T>
T parse_flag_integer(const std::string& text, const std::string& flag, T min, T max) {
  T v{};
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  const auto [stop, ec] = std::from_chars(begin, end, v);
  if constexpr (std::is_unsigned_v<T>)
    if (begin != end && *begin == '-')
      throw CLI::ValidationError(flag, "'" + text + "' is out of range [0, " + std::to_string(max) + "]");
  if (text.empty() || stop != end || ec == std::errc::invalid_argument)
    throw CLI::ValidationError(flag, "'" + text + "' is not an integer");
  if (ec == std::errc::result_out_of_range || v < min || v > max)
    throw CLI::ValidationError(
        flag, "'" + text + "' is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return v;
}

template <class Target>
struct IntegerOf {
  using type = Target;
};
template <class T>
struct IntegerOf<std::optional<T>> {
  using type = T;
};

// An integer option into target, a T or a std::optional<T> (kept as it is when the flag is absent).
template <class Target, class T = typename IntegerOf<Target>::type>
CLI::Option* add_integer(CLI::App* cmd, const std::string& names, Target& target,
                         const std::string& description,
                         std::type_identity_t<T> min = std::numeric_limits<T>::min(),
                         std::type_identity_t<T> max = std::numeric_limits<T>::max()) {
  const std::string flag = names.substr(names.rfind(',') + 1);
  return cmd
      ->add_option_function<std::string>(
          names,
          [&target, flag, min, max](const std::string& text) {
            target = parse_flag_integer<T>(text, flag, min, max);
          },
          description)
      ->type_name("INT");
}

// A repeatable or comma-separated list of integers.
template <class T>
CLI::Option* add_integers(CLI::App* cmd, const std::string& names, std::vector<T>& target,
                          const std::string& description, T min = std::numeric_limits<T>::min(),
                          T max = std::numeric_limits<T>::max()) {
  const std::string flag = names.substr(names.rfind(',') + 1);
  return cmd
      ->add_option_function<std::vector<std::string>>(
          names,
          [&target, flag, min, max](const std::vector<std::string>& texts) {
            target.clear();
            for (const std::string& t : texts) target.push_back(parse_flag_integer<T>(t, flag, min, max));
          },
          description)
      ->type_name("INT")
      ->delimiter(',');
}

}  // namespace bmojo
