// The MPI backend as the rest of cfx sees it, without MPI's headers: a table of hooks that
// the opt-in library cfx-mpi fills in (backends/mpi/registrar.cpp) when a program links it.
// libcfx itself never links MPI, so that programs that do not use it, and every process-pool
// worker they spawn, do not pay for loading Open MPI's libraries at start (docs/mpi.md).
// Internal.
#pragma once

#include <memory>

#include "cfx/executor.hpp"
#include "cfx/mpi_pool.hpp"

namespace cfx::detail {

/// The MPI backend's entry points; null until cfx-mpi's registrar sets them (static
/// initialisation, before main).
struct MpiHooks {
  /// Makes an MpiPoolExecutor ("backend": "mpi").
  std::unique_ptr<Executor> (*make_executor)(const MpiPoolOptions& options) = nullptr;
  /// Called by cfx::init in a process that is not a pool worker. Under an MPI launcher it
  /// initialises MPI; on a serving rank (rank >= 1) it then serves tasks until rank 0
  /// releases it, and exits. Elsewhere (rank 0, or no launcher) it returns.
  void (*init_if_launched)(int argc, char** argv) = nullptr;
};

/// The one table (backends/mpi/config.cpp, part of libcfx).
MpiHooks& mpi_hooks() noexcept;

/// True when cfx was built with MPI (meson feature `mpi`), whether or not this program links
/// cfx-mpi.
bool mpi_built() noexcept;

/// True when an MPI launcher (mpiexec, srun) started this process, as its environment says.
/// Checked before MPI_Init, which a plain run must not pay for.
bool started_by_launcher() noexcept;

}  // namespace cfx::detail
