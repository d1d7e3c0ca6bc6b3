// MpiPoolOptions from a configuration: the keys beside the struct they fill; and the hook
// table through which libcfx reaches the opt-in MPI backend (launch.hpp). Part of libcfx,
// built with or without MPI; CFX_MPI_BUILT says which.
#include "backends/mpi/config.hpp"

#include <cstdlib>

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
  if (!mpi_hooks().make_executor)
    throw ConfigError(
        "backend \"mpi\": this program was not linked with cfx's MPI backend (link it with the "
        "meson dependency 'cfx-mpi', pkg-config cfx-mpi, or -lcfx-mpi)");
  MpiPoolOptions o;
  if (config.has("workers_per_rank")) {
    o.workers_per_rank = config.count("workers_per_rank");
    if (o.workers_per_rank < 1) ConfigReader::bad("workers_per_rank", 0, "an integer >= 1");
  }
  if (config.has("task_timeout_s")) o.task_timeout = config.seconds("task_timeout_s");
  if (config.has("max_tasks_per_child"))
    o.max_tasks_per_child = config.count("max_tasks_per_child");
  if (config.has("max_retries")) o.max_retries = config.count("max_retries");
  return mpi_hooks().make_executor(o);
}

}  // namespace

MpiHooks& mpi_hooks() noexcept {
  static constinit MpiHooks hooks;  // constant-initialised: the registrar may run first
  return hooks;
}

bool mpi_built() noexcept {
  return CFX_MPI_BUILT;
}

/// Launchers say so in the environment: Open MPI's mpiexec (OMPI_...), MPICH's Hydra (PMI_...),
/// PMIx launchers such as srun --mpi=pmix (PMIX_RANK). A singleton MPI_Init starts a daemon,
/// about half a second, so a plain run never calls it.
bool started_by_launcher() noexcept {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var)) return true;
  return false;
}

const BackendConfig& mpi_backend_config() {
  static const BackendConfig config{
      "mpi",
      {"workers_per_rank", "task_timeout_s", "max_tasks_per_child", "max_retries"},
      &make_mpi_pool};
  return config;
}

}  // namespace cfx::detail
