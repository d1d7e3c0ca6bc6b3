// The MPI backend's entry points that the rest of cfx calls, without MPI's headers (they
// exist whether or not cfx was built with MPI: backends/mpi/unavailable.cpp stands in).
// Internal.
#pragma once

namespace cfx::detail {

/// True when cfx was built with MPI (meson feature `mpi`).
bool mpi_built() noexcept;

/// Called by cfx::init in a process that is not a pool worker. Under an MPI launcher
/// (mpiexec, srun) it initialises MPI; on a serving rank (rank >= 1) it then serves tasks
/// until rank 0 releases it, and exits. Elsewhere (rank 0, or no launcher) it returns.
void init_mpi_if_launched(int argc, char** argv);

}  // namespace cfx::detail
