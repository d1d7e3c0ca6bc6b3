// make_executor: the one place that knows every backend. Each backend reads its own keys
// (backends/<name>/config.cpp); this file picks the backend, applies the environment
// overrides, and rejects keys that no backend, or another backend only, understands.
#include "cfx/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backends/mpi/config.hpp"
#include "backends/process/config.hpp"
#include "backends/thread/config.hpp"
#include "cfx/errors.hpp"

namespace cfx {
namespace {

using detail::BackendConfig;
using nlohmann::json;

const std::vector<const BackendConfig*>& backends() {
  static const std::vector<const BackendConfig*> all = {&detail::thread_backend_config(),
                                                        &detail::process_backend_config(),
                                                        &detail::mpi_backend_config()};
  return all;
}

bool is_common_key(const std::string& key) {
  return key == "backend" || key == "max_workers";
}

bool reads(const BackendConfig& backend, const std::string& key) {
  return is_common_key(key) ||
         std::find(backend.keys.begin(), backend.keys.end(), key) != backend.keys.end();
}

const BackendConfig* find_backend(const std::string& name) {
  for (const auto* b : backends())
    if (name == b->name) return b;
  return nullptr;
}

/// The backends other than `backend` that read `key`, as "'a', 'b'".
std::string others_reading(const BackendConfig& backend, const std::string& key) {
  std::string out;
  for (const auto* b : backends())
    if (b != &backend && reads(*b, key))
      out += (out.empty() ? "'" : ", '") + std::string(b->name) + "'";
  return out;
}

const BackendConfig& backend_of(const json& config) {
  std::string names;
  for (const auto* b : backends())
    names += (names.empty() ? "one of \"" : ", \"") + std::string(b->name) + "\"";
  if (!config.contains("backend")) return *backends().front();
  const json& v = config.at("backend");
  const BackendConfig* b = v.is_string() ? find_backend(v.get<std::string>()) : nullptr;
  if (!b) detail::ConfigReader::bad("backend", v, names);
  return *b;
}

/// CFX_BACKEND replaces "backend". It is a switch for debugging (say, a process pool's
/// program run on threads): keys that only other backends read are dropped, with a note on
/// stderr, rather than failing; keys that no backend reads still fail.
void apply_backend_override(json& config, const char* name) {
  const BackendConfig& configured = backend_of(config);
  config["backend"] = name;
  const BackendConfig& chosen = backend_of(config);
  if (&chosen == &configured) return;
  std::string dropped;
  for (const auto& key : configured.keys) {
    if (!config.contains(key) || reads(chosen, key)) continue;
    config.erase(key);
    dropped += (dropped.empty() ? "" : ", ") + key;
  }
  if (!dropped.empty())
    std::fprintf(stderr, "cfx: CFX_BACKEND=%s: ignoring the %s-only config keys %s\n", name,
                 configured.name, dropped.c_str());
}

/// Applies CFX_BACKEND and CFX_MAX_WORKERS, which override the configuration.
json with_environment(json config) {
  if (const char* backend = std::getenv("CFX_BACKEND")) apply_backend_override(config, backend);
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

void check_keys(const json& config, const BackendConfig& backend) {
  for (const auto& [key, value] : config.items()) {
    if (reads(backend, key)) continue;
    std::string others = others_reading(backend, key);
    if (!others.empty())
      throw ConfigError("config key '" + key + "' applies only to backend " + others + ", not '" +
                        backend.name + "'");
    std::string allowed = "backend, max_workers";
    for (const auto& k : backend.keys) allowed += ", " + k;
    throw ConfigError("unknown config key '" + key + "' (value " + value.dump() +
                      "); allowed keys for backend '" + backend.name + "': " + allowed);
  }
}

}  // namespace

std::unique_ptr<Executor> make_executor(const nlohmann::json& raw) {
  if (!raw.is_object())
    throw ConfigError("an executor configuration must be a JSON object, not " + raw.dump());
  json config = with_environment(raw);
  const BackendConfig& backend = backend_of(config);
  check_keys(config, backend);
  return backend.make(detail::ConfigReader(config));
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
