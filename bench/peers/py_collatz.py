#!/usr/bin/python3
"""Project Euler 14 in pure Python: sequential and ProcessPoolExecutor, for bench/collatz.cpp.

Run by collatz as a subprocess; prints "key value" lines that the C++ side parses. Pure
Python is ~100x slower than C++, so the C++ side passes a smaller --limit and compares time
per start rather than total time.
"""
import argparse
from concurrent.futures import ProcessPoolExecutor

from common import report, timed


def chain_length(n):
    length = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        length += 1
    return length


def longest_in(first, last):
    """(start, length) of the longest chain in [first, last); the smaller start wins a tie."""
    best = (0, 0)
    for n in range(first, last):
        length = chain_length(n)
        if length > best[1]:
            best = (n, length)
    return best


def better(a, b):
    return b if b[1] > a[1] or (b[1] == a[1] and b[0] < a[0]) else a


def on_pool(limit, workers, blocks):
    step = max(1, (limit - 1 + blocks - 1) // blocks)
    los = list(range(1, limit, step))
    his = [min(limit, lo + step) for lo in los]
    best = (0, 0)
    with ProcessPoolExecutor(workers) as ex:
        for b in ex.map(longest_in, los, his):
            best = better(best, b)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=1_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--blocks-per-worker", type=int, default=32)
    p.add_argument("--no-sequential", action="store_true")
    a = p.parse_args()
    # Each figure is from a single run: a repeat costs seconds of pure Python.
    (start, length), secs = timed(
        lambda: on_pool(a.limit, a.workers, a.workers * a.blocks_per_worker))
    report("pool_seconds", secs)
    report("pool_best", start, length)
    if not a.no_sequential:
        (start, length), secs = timed(lambda: longest_in(1, a.limit))
        report("sequential_seconds", secs)
        report("sequential_best", start, length)


if __name__ == "__main__":
    main()
