// Choosing a backend by configuration (docs/config.md):
//
//   auto ex = cfx::make_executor({{"backend", "process"}, {"max_workers", 4}});
//   auto ex = cfx::make_executor_from_file("pool.json");
//
// The keys are the option fields of ThreadPoolOptions / ProcessPoolOptions plus "backend";
// enums are strings, durations are seconds with the suffix _s. The environment variables
// CFX_BACKEND and CFX_MAX_WORKERS override the configuration. Anything unknown, of the wrong
// type or out of range throws ConfigError naming the key, the value and what is allowed.
// docs/config.md lists every key.
//
// Thread safety: make_executor and make_executor_from_file may be called from any thread;
// each call reads the environment when it is made.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "cfx/executor.hpp"

namespace cfx {

/// An executor as `config` (a JSON object) describes it, after environment overrides.
std::unique_ptr<Executor> make_executor(const nlohmann::json& config);

/// make_executor on the JSON object in the file at `path`. A missing or unparsable file
/// throws ConfigError naming the file (and the line of a syntax error).
std::unique_ptr<Executor> make_executor_from_file(const std::string& path);

}  // namespace cfx
