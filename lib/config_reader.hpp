// Reading one backend's keys from an executor configuration. Internal, for backends.
//
// The core knows no backend: each backend describes itself with a BackendConfig (its name,
// its keys, a factory) beside its options struct, and the composition file
// (backends/config.cpp) lists the backends. ConfigReader gives every backend the same strict
// checks and the same messages: the key, the value, and what is allowed.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cfx/executor.hpp"
#include "cfx/task.hpp"

namespace cfx::detail {

class ConfigReader {
 public:
  explicit ConfigReader(const nlohmann::json& config) : config_(config) {}

  bool has(const std::string& key) const { return config_.contains(key); }
  /// An integer >= 0.
  std::size_t count(const std::string& key) const;
  std::string string(const std::string& key) const;
  /// Seconds > 0 under "<key>"; null: nullopt.
  std::optional<std::chrono::duration<double>> seconds(const std::string& key) const;
  /// A registered task and its arguments: {"task": "name", "args": [...]}.
  TaskCall task_call(const std::string& key) const;
  /// One of the named choices.
  template <class Enum>
  Enum choice(const std::string& key,
              std::initializer_list<std::pair<const char*, Enum>> choices) const {
    const nlohmann::json& v = config_.at(key);
    std::string allowed;
    for (auto& [name, value] : choices) {
      if (v.is_string() && v.get<std::string>() == name) return value;
      allowed += (allowed.empty() ? "one of \"" : ", \"") + std::string(name) + "\"";
    }
    bad(key, v, allowed);
  }

  /// Throws ConfigError: `key` has `value`, which is not `allowed`.
  [[noreturn]] static void bad(const std::string& key, const nlohmann::json& value,
                               const std::string& allowed);

 private:
  const nlohmann::json& config_;
};

/// What the composition file needs to know of a backend.
struct BackendConfig {
  const char* name;               // the value of "backend"
  std::vector<std::string> keys;  // the keys it reads, besides "backend" and "max_workers"
  std::unique_ptr<Executor> (*make)(const ConfigReader& config);
};

}  // namespace cfx::detail
