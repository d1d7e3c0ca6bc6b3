#!/usr/bin/python3
"""Python's concurrent.futures.ThreadPoolExecutor on bench/thread_overhead.cpp's jobs.

Run by thread_overhead as a subprocess; prints one "key value" line per figure (best of
--repeat runs), which the C++ side parses. Counts are smaller than the C++ ones: the same
counts would take minutes in CPython.
"""
import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from common import best_of, check_sum, report


def noop():
    pass


def identity(x):
    return x


def submit_all(ex, n):
    futures = [ex.submit(noop) for _ in range(n)]
    for f in futures:
        f.result()


def one_at_a_time(ex, n):
    for _ in range(n):
        ex.submit(noop).result()


def map_chunked(ex, n, chunksize):
    # ThreadPoolExecutor ignores chunksize (only ProcessPoolExecutor uses it): one task per item.
    check_sum(sum(ex.map(identity, range(n), chunksize=chunksize)), n)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--one-at-a-time", type=int, default=5_000)
    p.add_argument("--map-items", type=int, default=100_000)
    p.add_argument("--chunksize", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    with ThreadPoolExecutor(a.workers) as ex:
        # Start both threads before timing, as the C++ side does.
        for f in [ex.submit(time.sleep, 0.01) for _ in range(a.workers)]:
            f.result()
        s = best_of(a.repeat, lambda: submit_all(ex, a.tasks))
        report("submit_all_per_s", a.tasks / s)
        s = best_of(a.repeat, lambda: one_at_a_time(ex, a.one_at_a_time))
        report("one_at_a_time_per_s", a.one_at_a_time / s)
        s = best_of(a.repeat, lambda: map_chunked(ex, a.map_items, a.chunksize))
        report("map_items_per_s", a.map_items / s)


if __name__ == "__main__":
    main()
