// make_executor: strict reading of an executor configuration.
#include "cfx/config.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cfx/errors.hpp"
#include "cfx/process_pool.hpp"
#include "cfx/thread_pool.hpp"

namespace cfx {
namespace {

using nlohmann::json;

const std::set<std::string> kCommonKeys = {"backend", "max_workers"};
const std::set<std::string> kThreadKeys = {"thread_name_prefix"};
const std::set<std::string> kProcessKeys = {"start_method", "max_tasks_per_child", "task_timeout_s",
                                            "on_worker_crash"};

std::string join(const std::set<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

[[noreturn]] void bad(const std::string& key, const json& value, const std::string& allowed) {
  throw ConfigError("config key '" + key + "': " + value.dump() + " is not allowed; expected " +
                    allowed);
}

std::size_t count_of(const json& config, const std::string& key) {
  const json& v = config.at(key);
  if (!v.is_number_integer() || v.get<long long>() < 0) bad(key, v, "an integer >= 0");
  return v.get<std::size_t>();
}

std::string string_of(const json& config, const std::string& key) {
  const json& v = config.at(key);
  if (!v.is_string()) bad(key, v, "a string");
  return v.get<std::string>();
}

template <class Enum>
Enum choice_of(const json& config, const std::string& key,
               std::initializer_list<std::pair<const char*, Enum>> choices) {
  const json& v = config.at(key);
  std::string allowed;
  for (auto& [name, value] : choices) {
    if (v.is_string() && v.get<std::string>() == name) return value;
    allowed += (allowed.empty() ? "one of \"" : ", \"") + std::string(name) + "\"";
  }
  bad(key, v, allowed);
}

/// Applies CFX_BACKEND and CFX_MAX_WORKERS, which override the configuration.
json with_environment(json config) {
  if (const char* backend = std::getenv("CFX_BACKEND")) {
    // Switching backends from the environment (say, to threads for debugging) must not
    // fail on the keys that only the configured backend understands: drop those.
    std::string configured = config.value("backend", std::string("thread"));
    if (configured != backend) {
      for (const auto& key : configured == "process" ? kProcessKeys : kThreadKeys)
        config.erase(key);
    }
    config["backend"] = backend;
  }
  if (const char* workers = std::getenv("CFX_MAX_WORKERS")) {
    errno = 0;
    char* end = nullptr;
    long long n = std::strtoll(workers, &end, 10);
    if (*workers == '\0' || *end != '\0' || errno != 0 || n < 0)
      throw ConfigError("environment variable CFX_MAX_WORKERS: \"" + std::string(workers) +
                        "\" is not allowed; expected an integer >= 0");
    config["max_workers"] = n;
  }
  return config;
}

void check_keys(const json& config, const std::string& backend) {
  const auto& own = backend == "thread" ? kThreadKeys : kProcessKeys;
  const auto& other = backend == "thread" ? kProcessKeys : kThreadKeys;
  for (const auto& [key, value] : config.items()) {
    if (kCommonKeys.count(key) || own.count(key)) continue;
    if (other.count(key))
      throw ConfigError("config key '" + key + "' applies only to backend '" +
                        (backend == "thread" ? "process" : "thread") + "', not '" + backend + "'");
    std::set<std::string> all = kCommonKeys;
    all.insert(own.begin(), own.end());
    throw ConfigError("unknown config key '" + key + "' (value " + value.dump() +
                      "); allowed keys for backend '" + backend + "': " + join(all));
  }
}

std::unique_ptr<Executor> make_thread_pool(const json& config) {
  ThreadPoolOptions o;
  if (config.contains("max_workers")) o.max_workers = count_of(config, "max_workers");
  if (config.contains("thread_name_prefix"))
    o.thread_name_prefix = string_of(config, "thread_name_prefix");
  return std::make_unique<ThreadPoolExecutor>(std::move(o));
}

std::unique_ptr<Executor> make_process_pool(const json& config) {
  ProcessPoolOptions o;
  if (config.contains("max_workers")) o.max_workers = count_of(config, "max_workers");
  if (config.contains("start_method"))
    o.start_method = choice_of<StartMethod>(
        config, "start_method", {{"spawn", StartMethod::spawn}, {"fork", StartMethod::fork}});
  if (config.contains("max_tasks_per_child"))
    o.max_tasks_per_child = count_of(config, "max_tasks_per_child");
  if (config.contains("task_timeout_s")) {
    const json& v = config.at("task_timeout_s");
    if (!v.is_null()) {
      if (!v.is_number() || !(v.get<double>() > 0) ||
          v.get<double>() > std::numeric_limits<double>::max())
        bad("task_timeout_s", v, "a number of seconds > 0, or null for no limit");
      o.task_timeout = std::chrono::duration<double>(v.get<double>());
    }
  }
  if (config.contains("on_worker_crash"))
    o.on_worker_crash = choice_of<OnWorkerCrash>(
        config, "on_worker_crash",
        {{"respawn", OnWorkerCrash::respawn}, {"break", OnWorkerCrash::break_pool}});
  return std::make_unique<ProcessPoolExecutor>(std::move(o));
}

}  // namespace

std::unique_ptr<Executor> make_executor(const nlohmann::json& raw) {
  if (!raw.is_object())
    throw ConfigError("an executor configuration must be a JSON object, not " + raw.dump());
  json config = with_environment(raw);
  std::string backend = "thread";
  if (config.contains("backend")) {
    const json& v = config.at("backend");
    if (!v.is_string() || (v != "thread" && v != "process"))
      bad("backend", v, "one of \"thread\", \"process\"");
    backend = v.get<std::string>();
  }
  check_keys(config, backend);
  return backend == "thread" ? make_thread_pool(config) : make_process_pool(config);
}

std::unique_ptr<Executor> make_executor_from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot open config file '" + path + "': " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  std::string content = text.str();
  json config;
  try {
    config = json::parse(content);
  } catch (const json::parse_error& e) {
    std::size_t upto = std::min<std::size_t>(e.byte ? e.byte - 1 : 0, content.size());
    std::size_t line = 1;
    for (std::size_t i = 0; i < upto; ++i) line += content[i] == '\n';
    throw ConfigError(path + ":" + std::to_string(line) + ": not valid JSON: " + e.what());
  }
  try {
    return make_executor(config);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

}  // namespace cfx
