"""What the Python peers share: timing, and the "key value..." lines that the C++ side reads
(bench/common.hpp, parse_figures)."""
import time


def best_of(repeat, job):
    """Shortest wall time of `repeat` runs of job(); the machine is noisy."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        best = min(best, time.perf_counter() - start)
    return best


def timed(job):
    """(job(), its wall time)."""
    start = time.perf_counter()
    result = job()
    return result, time.perf_counter() - start


def check_sum(total, n):
    """A map over range(n) of the identity must give back 0 + 1 + ... + (n - 1)."""
    assert total == n * (n - 1) // 2, total


def report(key, *values):
    """One figure for the C++ side. Flushed at once: a figure printed before a later job
    hangs or fails still arrives."""
    text = [f"{v:.6f}" if isinstance(v, float) else str(v) for v in values]
    print(key, *text, flush=True)
