#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: the Collatz (Project Euler 14)
# comparison, sequential vs the thread backend vs the process backend (vs the MPI backend,
# when it is built).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/deps.sh
ensure_packages $CFX_BUILD_PACKAGES
configure_build build -Dbenchmarks=disabled
ninja -C build >/dev/null
# With the MPI backend built (Open MPI found), the same table gains an "mpi" row: the program
# runs under mpiexec, rank 0 prints the table and ranks 1 and 2 serve (docs/mpi.md).
mpi_built() {
  command -v mpiexec >/dev/null &&
    grep -qE '"name": "(mpi|ompi[^"]*|mpich[^"]*)"' build/meson-info/intro-dependencies.json
}
if mpi_built && [[ " $* " != *" --backend"* && " $* " != *" --config"* ]]; then
  # As root Open MPI asks for consent; 3 ranks on fewer cores need --oversubscribe, and
  # unbound ranks let each rank's workers use any core.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  exec mpiexec --oversubscribe --bind-to none -n 3 ./build/examples/cfx-collatz --backend all "$@"
fi
exec ./build/examples/cfx-collatz "$@"
