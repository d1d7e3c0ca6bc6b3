#!/usr/bin/python3
"""Python's ProcessPoolExecutor echoing bytes, for bench/payload.cpp.

Run by payload as a subprocess; prints "ppe_echo_<bytes>_gbps value" per size: bytes moved
both ways (2 x size) per second, the best of --repeat echoes on a warm 2-worker pool, after
--warmup untimed echoes of each size (as payload.cpp does).
"""
import argparse
from concurrent.futures import ProcessPoolExecutor

from common import best_of, report


def echo(b):
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--small", type=int, default=1 << 20)
    ap.add_argument("--large", type=int, default=64 << 20)
    args = ap.parse_args()
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(echo, [b"x"] * 4))  # start both workers
        for size in (args.small, args.large):
            payload = bytes(size)
            for _ in range(args.warmup):
                ex.submit(echo, payload).result()
            seconds = best_of(args.repeat, lambda: ex.submit(echo, payload).result())
            report(f"ppe_echo_{size}_gbps", 2 * size / seconds / 1e9)


if __name__ == "__main__":
    main()
