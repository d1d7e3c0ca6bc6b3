#!/usr/bin/env bash
# Runs an MPI test program as `mpiexec -n 3` (rank 0 tests, ranks 1 and 2 serve), bounded in
# time (an MPI failure tends to hang), then checks that mpiexec exited 0 and that no process
# of the program is left (serving ranks, their local workers).
#   run.sh [--expect-abort | --recovery] MPIEXEC PROGRAM [ARGS...]
# --expect-abort: the job must end non-zero (a rank died), within 60 s, leaving no process.
# --recovery: mpiexec --enable-recovery (a rank's death does not end the job), and the
#   program gets --recovery; it must exit 0 as usual.
set -u
expect_abort=0
mpiexec_args=()
if [ "$1" = --expect-abort ]; then
  expect_abort=1
  shift
elif [ "$1" = --recovery ]; then
  mpiexec_args=(--enable-recovery)
  shift
fi
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
limit=$((expect_abort ? 60 : 300))
SECONDS=0
if [ ${#mpiexec_args[@]} -gt 0 ]; then set -- --recovery "$@"; fi
timeout -k 10 $limit "$mpiexec" --oversubscribe --bind-to none "${mpiexec_args[@]}" -n 3 \
  "$program" "$@"
status=$?
if [ $expect_abort = 1 ]; then
  # (mpiexec's own status mirrors the rank's signal, 137 for SIGKILL: tell it from timeout's
  # by the time taken.)
  if [ $status -eq 0 ]; then
    echo "run.sh: the job was expected to abort, and mpiexec exited 0"
    exit 1
  elif [ $SECONDS -ge $limit ]; then
    echo "run.sh: the job hung (killed after $limit s)"
    exit 1
  fi
  echo "run.sh: the job aborted as expected (mpiexec exited $status)"
elif [ $status -ne 0 ]; then
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
