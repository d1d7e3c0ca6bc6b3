#!/usr/bin/env bash
# Runs an MPI test program as `mpiexec -n 3` (rank 0 tests, ranks 1 and 2 serve), bounded in
# time (an MPI failure tends to hang), then checks that mpiexec exited 0 and that no process
# of the program is left (serving ranks, their local workers).
#   run.sh MPIEXEC PROGRAM [ARGS...]
set -u
mpiexec=$1
program=$(readlink -f "$2")
shift 2
# As root Open MPI refuses to run without these; 3 ranks on 2 cores need oversubscription.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Under ASan, leak checking is off for MPI jobs: Open MPI 4.1 leaves about 120 kB in 3,400
# allocations at MPI_Finalize, mostly from components it has already unloaded (dlclose), so
# the stacks have no module names to suppress by (4.1 has no way to keep them loaded). None of
# the stacks that have names passes through cfx. Every other ASan and UBSan check stays on.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
timeout -k 10 300 "$mpiexec" --oversubscribe --bind-to none -n 3 "$program" "$@"
status=$?
if [ $status -ne 0 ]; then
  echo "run.sh: mpiexec exited $status"
  exit $status
fi
# The job is over: nothing may still run the program (give a reaped process a moment).
for _ in 1 2 3 4 5 6 7 8 9 10; do
  left=$(for exe in /proc/[0-9]*/exe; do
    [ "$(readlink "$exe" 2>/dev/null)" = "$program" ] && echo "${exe//[^0-9]/}"
  done)
  [ -z "$left" ] && exit 0
  sleep 0.5
done
echo "run.sh: processes of $program still running after mpiexec exited: $left"
exit 1
