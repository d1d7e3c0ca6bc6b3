#!/usr/bin/env bash
# Installs what is missing, builds bench/ in its own release build (build-bench/, so that it
# never disturbs build/), and runs every benchmark. Exits non-zero if a build fails or a
# benchmark finds a wrong answer; missed performance goals are printed as MISS, not failures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_packages $CFX_BUILD_PACKAGES $CFX_BENCH_PACKAGES
# Tests and examples are left out: only the benchmarks (and the library) are needed here.
configure_build build-bench -Dbuildtype=release -Dbenchmarks=enabled -Dtests=false \
  -Dexamples=false
if ! ninja -C build-bench >build-bench/bench-build.log 2>&1; then
  tail -n 40 build-bench/bench-build.log
  exit 1
fi

status=0
for bench in thread_overhead process_overhead codec collatz mpi; do
  [ -x "./build-bench/bench/$bench" ] || continue  # mpi: only with the MPI backend built
  echo "==== bench/$bench ===="
  ./build-bench/bench/$bench || status=1
  echo
done
exit $status
