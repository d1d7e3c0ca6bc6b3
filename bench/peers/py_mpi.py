#!/usr/bin/python3
"""mpi4py.futures on bench/mpi.cpp's jobs, in static mode on the same 3 ranks as cfx:

    mpiexec -n 3 /usr/bin/python3 -m mpi4py.futures py_mpi.py --round-trips N --tasks N

Rank 0 runs this script and prints "key value" lines (mpi4py_rtt: median and p99 in µs of a
no-op submit+result with one call in flight; mpi4py_tasks_per_s: N no-op submits, then every
result); ranks 1 and 2 are mpi4py's workers. The task is the builtin abs, pickled by
reference, so that nothing of this script has to be imported on the workers.
"""
import argparse
import statistics
import time

from mpi4py.futures import MPIPoolExecutor

from common import report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=20000)
    args = parser.parse_args()
    with MPIPoolExecutor() as ex:
        for _ in range(50):  # warm-up
            ex.submit(abs, 0).result()
        samples = []
        for _ in range(args.round_trips):
            t0 = time.perf_counter()
            ex.submit(abs, 0).result()
            samples.append((time.perf_counter() - t0) * 1e6)
        samples.sort()
        report("mpi4py_rtt", statistics.median(samples), samples[int(len(samples) * 0.99)])
        t0 = time.perf_counter()
        futures = [ex.submit(abs, 0) for _ in range(args.tasks)]
        for f in futures:
            f.result()
        report("mpi4py_tasks_per_s", args.tasks / (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
