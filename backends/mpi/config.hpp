// The MPI backend's configuration keys. Internal: listed by backends/config.cpp. Built with
// or without MPI (without it, making the executor throws ConfigError saying so).
#pragma once

#include "lib/config_reader.hpp"

namespace cfx::detail {

/// "backend": "mpi": workers_per_rank, task_timeout_s, max_tasks_per_child, max_retries.
/// max_workers (common to every backend) is accepted and ignored: the launch decides.
const BackendConfig& mpi_backend_config();

}  // namespace cfx::detail
