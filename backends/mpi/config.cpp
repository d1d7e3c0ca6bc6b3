// MpiPoolOptions from a configuration: the keys beside the struct they fill.
#include "backends/mpi/config.hpp"

#include "backends/mpi/launch.hpp"
#include "cfx/errors.hpp"
#include "cfx/mpi_pool.hpp"

namespace cfx::detail {
namespace {

std::unique_ptr<Executor> make_mpi_pool(const ConfigReader& config) {
  if (!mpi_built())
    throw ConfigError(
        "backend \"mpi\": cfx was built without MPI (install libopenmpi-dev and openmpi-bin, "
        "then reconfigure cfx with -Dmpi=enabled)");
  MpiPoolOptions o;
  if (config.has("workers_per_rank")) {
    o.workers_per_rank = config.count("workers_per_rank");
    if (o.workers_per_rank < 1) ConfigReader::bad("workers_per_rank", 0, "an integer >= 1");
  }
  if (config.has("task_timeout_s")) o.task_timeout = config.seconds("task_timeout_s");
  if (config.has("max_tasks_per_child"))
    o.max_tasks_per_child = config.count("max_tasks_per_child");
  if (config.has("max_retries")) o.max_retries = config.count("max_retries");
  return std::make_unique<MpiPoolExecutor>(o);
}

}  // namespace

const BackendConfig& mpi_backend_config() {
  static const BackendConfig config{
      "mpi",
      {"workers_per_rank", "task_timeout_s", "max_tasks_per_child", "max_retries"},
      &make_mpi_pool};
  return config;
}

}  // namespace cfx::detail
