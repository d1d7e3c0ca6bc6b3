#!/usr/bin/python3
"""Python's multiprocessing (fork context) on bench/toolkit_sync.cpp's jobs: Queue put->get
of ints between two processes, Manager().dict() sets, Value + Lock increments from two
processes.

Run by toolkit_sync as a subprocess; prints one "key value" line per figure (best of
--repeat runs, in events per second). Counts are smaller than the C++ ones: the same counts
would take minutes in CPython.
"""
import argparse
import multiprocessing as mp

from common import best_of, report

ctx = mp.get_context("fork")


def produce(q, n, go):
    go.wait()
    for i in range(n):
        q.put(i)


def queue_rate(n):
    q = ctx.Queue()
    go = ctx.Event()
    p = ctx.Process(target=produce, args=(q, n, go))
    p.start()

    def job():
        go.set()
        total = 0
        for _ in range(n):
            total += q.get()
        assert total == n * (n - 1) // 2, total

    t = best_of(1, job)
    p.join()
    return n / t


def dict_rate(n):
    with ctx.Manager() as m:
        d = m.dict()

        def job():
            for i in range(n):
                d[i] = i

        return n / best_of(1, job)


def increment(v, n, go):
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_rate(n):
    v = ctx.Value("q", 0)
    go = ctx.Event()
    ps = [ctx.Process(target=increment, args=(v, n, go)) for _ in range(2)]
    for p in ps:
        p.start()

    def job():
        go.set()
        for p in ps:
            p.join()

    t = best_of(1, job)
    assert v.value == 2 * n, v.value
    return 2 * n / t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queue-items", type=int, default=200_000)
    p.add_argument("--dict-sets", type=int, default=50_000)
    p.add_argument("--value-incs", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    report("queue_ints_per_s", max(queue_rate(a.queue_items) for _ in range(a.repeat)))
    report("dict_sets_per_s", max(dict_rate(a.dict_sets) for _ in range(a.repeat)))
    report("value_incs_per_s", max(value_rate(a.value_incs) for _ in range(a.repeat)))


if __name__ == "__main__":
    main()
