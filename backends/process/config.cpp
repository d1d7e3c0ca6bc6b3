// ProcessPoolOptions from a configuration: the keys beside the struct they fill.
#include "backends/process/config.hpp"

#include <utility>

#include "cfx/process_pool.hpp"

namespace cfx::detail {
namespace {

std::unique_ptr<Executor> make_process_pool(const ConfigReader& config) {
  ProcessPoolOptions o;
  if (config.has("max_workers")) o.max_workers = config.count("max_workers");
  if (config.has("start_method"))
    o.start_method =
        config.choice<StartMethod>("start_method", {{"spawn", StartMethod::spawn},
                                                    {"fork", StartMethod::fork},
                                                    {"forkserver", StartMethod::forkserver}});
  if (config.has("max_tasks_per_child"))
    o.max_tasks_per_child = config.count("max_tasks_per_child");
  if (config.has("task_timeout_s")) o.task_timeout = config.seconds("task_timeout_s");
  if (config.has("on_worker_crash"))
    o.on_worker_crash = config.choice<OnWorkerCrash>(
        "on_worker_crash",
        {{"respawn", OnWorkerCrash::respawn}, {"break", OnWorkerCrash::break_pool}});
  if (config.has("initializer")) o.initializer = config.task_call("initializer");
  if (config.has("max_retries")) o.max_retries = config.count("max_retries");
  if (config.has("initializer_timeout_s"))
    o.initializer_timeout = *config.seconds("initializer_timeout_s");
  if (config.has("worker_memory_limit"))
    o.worker_memory_limit = config.count("worker_memory_limit");
  return std::make_unique<ProcessPoolExecutor>(std::move(o));
}

}  // namespace

const BackendConfig& process_backend_config() {
  static const BackendConfig config{
      "process",
      {"start_method", "max_tasks_per_child", "task_timeout_s", "on_worker_crash", "initializer",
       "max_retries", "worker_memory_limit", "initializer_timeout_s"},
      &make_process_pool};
  return config;
}

}  // namespace cfx::detail
