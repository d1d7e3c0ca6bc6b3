#!/usr/bin/python3
"""Python's process pools on bench/process_overhead.cpp's jobs.

Run by process_overhead as a subprocess; prints one "key value" line per figure, keys
prefixed by the library (ppe, pool, loky, pebble, ppe_spawn), which the C++ side parses.
Throughput figures are the best of --repeat runs; latencies are the median and p99 of
--round-trips samples; start/shutdown are the best of --repeat fresh pools. Each library runs
with its own default start method on Linux (fork for concurrent.futures, multiprocessing and
pebble; loky's own fork+exec), plus ProcessPoolExecutor with the spawn context for the start
row, since cfx's default re-runs the program too.

Counts are smaller than the C++ ones: the same counts would take minutes in CPython.
"""
import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from common import best_of, check_sum, report

try:
    import loky  # a standalone loky, if installed
except ImportError:
    try:
        from joblib.externals import loky
    except ImportError:
        loky = None
try:
    import pebble
except ImportError:
    pebble = None


def noop():
    pass


def noop_int(x):
    return x


def nap(seconds):
    time.sleep(seconds)


# ---- one adapter per library: start(), submit(fn, *args) -> handle, get(handle),
# ---- map(fn, n, chunksize) -> iterable, stop()

class Ppe:
    def __init__(self, workers, context=None):
        ctx = multiprocessing.get_context(context) if context else None
        self.ex = ProcessPoolExecutor(workers, mp_context=ctx)

    def submit(self, fn, *args):
        return self.ex.submit(fn, *args)

    @staticmethod
    def get(h):
        return h.result()

    def map(self, fn, n, chunksize):
        return self.ex.map(fn, range(n), chunksize=chunksize)

    def stop(self):
        self.ex.shutdown(wait=True)


class MpPool:
    def __init__(self, workers):
        self.pool = multiprocessing.Pool(workers)

    def submit(self, fn, *args):
        return self.pool.apply_async(fn, args)

    @staticmethod
    def get(h):
        return h.get()

    def map(self, fn, n, chunksize):
        return self.pool.map(fn, range(n), chunksize=chunksize)

    def stop(self):
        self.pool.close()
        self.pool.join()


class Loky(Ppe):
    """loky's executor has concurrent.futures' interface: only the construction differs."""

    def __init__(self, workers):
        # reuse=False: a fresh executor each time, so that start and shutdown are measured.
        self.ex = loky.get_reusable_executor(max_workers=workers, reuse=False)


class Pebble:
    def __init__(self, workers):
        self.pool = pebble.ProcessPool(max_workers=workers)

    def submit(self, fn, *args):
        return self.pool.schedule(fn, args=args)

    @staticmethod
    def get(h):
        return h.result()

    def map(self, fn, n, chunksize):
        return self.pool.map(fn, range(n), chunksize=chunksize).result()

    def stop(self):
        self.pool.close()
        self.pool.join()


def warm_up(p, workers):
    # Tasks that overlap in time make every pool start all its workers before timing.
    for h in [p.submit(nap, 0.05) for _ in range(workers * 2)]:
        p.get(h)


def submit_all(p, n):
    handles = [p.submit(noop) for _ in range(n)]
    for h in handles:
        p.get(h)


def round_trips(p, n):
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        p.get(p.submit(noop))
        samples.append(clock() - t0)
    samples.sort()
    return statistics.median(samples) / 1e3, samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e3


def map_chunked(p, n, chunksize):
    check_sum(sum(p.map(noop_int, n, chunksize)), n)


def start_and_stop(make, workers, repeat):
    """Best (construct + submit + first result) and best shutdown, in ms, of fresh pools."""
    best_start = best_stop = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = make(workers)
        p.get(p.submit(noop))
        t1 = time.perf_counter()
        p.stop()
        t2 = time.perf_counter()
        best_start = min(best_start, (t1 - t0) * 1e3)
        best_stop = min(best_stop, (t2 - t1) * 1e3)
    return best_start, best_stop


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--round-trips", type=int, default=2_000)
    p.add_argument("--map-items", type=int, default=1_000_000)
    p.add_argument("--chunksize", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated subset of ppe,pool,loky,pebble")
    a = p.parse_args()

    libs = {"ppe": Ppe, "pool": MpPool}
    if loky is not None:
        libs["loky"] = Loky
    if pebble is not None:
        libs["pebble"] = Pebble
    if a.only:
        libs = {k: v for k, v in libs.items() if k in a.only.split(",")}

    for key, make in libs.items():
        pool = make(a.workers)
        try:
            warm_up(pool, a.workers)
            report(f"{key}_submit_all_per_s", a.tasks / best_of(a.repeat, lambda: submit_all(pool, a.tasks)))
            median, p99 = round_trips(pool, a.round_trips)
            report(f"{key}_rt_median_us", median)
            report(f"{key}_rt_p99_us", p99)
            report(f"{key}_map_items_per_s",
                a.map_items / best_of(a.repeat, lambda: map_chunked(pool, a.map_items, a.chunksize)))
        finally:
            pool.stop()
        start_ms, stop_ms = start_and_stop(make, a.workers, a.repeat)
        report(f"{key}_start_ms", start_ms)
        report(f"{key}_shutdown_ms", stop_ms)
    if not a.only or "ppe" in a.only.split(","):
        start_ms, stop_ms = start_and_stop(lambda w: Ppe(w, "spawn"), a.workers, a.repeat)
        report("ppe_spawn_start_ms", start_ms)
        report("ppe_spawn_shutdown_ms", stop_ms)


if __name__ == "__main__":
    main()
