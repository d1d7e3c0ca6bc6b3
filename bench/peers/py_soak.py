#!/usr/bin/python3
"""Python's process pools on bench/soak.cpp's job: tasks on 2 workers while one in
--kill-every kills its own worker and a thread SIGKILLs a random worker every --outside-ms.

Run by soak as a subprocess; prints "key value" lines. pebble is the Python pool that
survives a worker's death (the task's future gets ProcessExpired, the worker is replaced);
concurrent.futures breaks at the first death, which the ppe_storm_broken line counts.
"""
import argparse
import os
import random
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from common import report, timed

try:
    import pebble
except ImportError:
    pebble = None


def soak_task(i, kill_worker):
    if kill_worker:
        os.kill(os.getpid(), signal.SIGKILL)
    return i * 2 + 1


def children():
    """Pids of this process's children, from /proc."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return pids


class OutsideKiller:
    def __init__(self, period_s):
        self.period_s = period_s
        self.stop = threading.Event()
        self.kills = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        rng = random.Random(42)
        while not self.stop.wait(self.period_s):
            pids = children()
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass

    def __enter__(self):
        if self.period_s > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def pebble_run(n, kill_every, outside_ms, kills):
    """(values, crashed, wrong, lost) of n tasks on a pebble pool."""
    def job():
        values = crashed = wrong = 0
        with pebble.ProcessPool(max_workers=2) as pool, \
                OutsideKiller(outside_ms / 1000 if kills else 0):
            futures = [pool.schedule(soak_task, args=(i, kills and kill_every and
                                                      i % kill_every == kill_every - 1))
                       for i in range(n)]
            done, not_done = wait(futures, timeout=120)
            for i, f in enumerate(futures):
                if not f.done():
                    continue
                try:
                    values += f.result() == i * 2 + 1
                except pebble.ProcessExpired:
                    crashed += 1
                except Exception:
                    wrong += 1
            return values, crashed, wrong, len(not_done)
    return timed(job)


def ppe_storm(n, kill_every):
    """How many of n futures end with BrokenProcessPool once one task kills its worker."""
    broken = 0
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(soak_task, i, kill_every and i % kill_every == kill_every - 1)
                   for i in range(n)]
        for f in futures:
            try:
                f.result(timeout=120)
            except BrokenProcessPool:
                broken += 1
    return broken


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--kill-every", type=int, default=30)
    parser.add_argument("--outside-ms", type=int, default=50)
    args = parser.parse_args()
    if pebble is not None:
        (values, _, _, _), calm = pebble_run(args.tasks, args.kill_every, args.outside_ms, False)
        report("pebble_calm_per_s", args.tasks / calm)
        (values, crashed, wrong, lost), storm = pebble_run(args.tasks, args.kill_every,
                                                           args.outside_ms, True)
        report("pebble_storm_per_s", args.tasks / storm)
        report("pebble_storm_lost", lost)
        report("pebble_storm_wrong", wrong)
    report("ppe_storm_broken", ppe_storm(args.tasks, args.kill_every))


if __name__ == "__main__":
    main()
