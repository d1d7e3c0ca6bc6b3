#include "config_reader.hpp"

#include <limits>

#include "cfx/errors.hpp"

namespace cfx::detail {

using nlohmann::json;

void ConfigReader::bad(const std::string& key, const json& value, const std::string& allowed) {
  throw ConfigError("config key '" + key + "': " + value.dump() + " is not allowed; expected " +
                    allowed);
}

std::size_t ConfigReader::count(const std::string& key) const {
  const json& v = config_.at(key);
  if (!v.is_number_integer() || v.get<long long>() < 0) bad(key, v, "an integer >= 0");
  return v.get<std::size_t>();
}

std::string ConfigReader::string(const std::string& key) const {
  const json& v = config_.at(key);
  if (!v.is_string()) bad(key, v, "a string");
  return v.get<std::string>();
}

std::optional<std::chrono::duration<double>> ConfigReader::seconds(const std::string& key) const {
  const json& v = config_.at(key);
  if (v.is_null()) return std::nullopt;
  if (!v.is_number() || !(v.get<double>() > 0) ||
      v.get<double>() > std::numeric_limits<double>::max())
    bad(key, v, "a number of seconds > 0, or null for no limit");
  return std::chrono::duration<double>(v.get<double>());
}

TaskCall ConfigReader::task_call(const std::string& key) const {
  const json& v = config_.at(key);
  const char* shape = "an object {\"task\": \"<registered task name>\", \"args\": [...]}";
  if (!v.is_object() || !v.contains("task") || !v["task"].is_string()) bad(key, v, shape);
  for (const auto& [k, value] : v.items())
    if (k != "task" && k != "args") bad(key, v, shape);
  std::string name = v["task"].get<std::string>();
  const TaskEntry* task = find_task(name);
  if (!task)
    throw ConfigError("config key '" + key + "': no task is registered as '" + name +
                      "' (register it with CFX_TASK in this program)");
  json args = v.value("args", json::array());
  TaskCall call{task, {}};
  Writer w(call.args);
  try {
    task->encode_json_args(*task, w, &args);
  } catch (const ConfigError& e) {
    throw ConfigError("config key '" + key + "': " + e.what());
  } catch (const SerializationError& e) {
    throw ConfigError("config key '" + key + "': " + e.what());
  }
  return call;
}

}  // namespace cfx::detail
