#!/usr/bin/python3
"""Python's multiprocessing toolkit on bench/toolkit.cpp's rows (fork context).

Run by bench/toolkit as a subprocess; prints one "key value" line per figure:
  pipe_rtt_us    median round trip of an int through multiprocessing.Pipe between two
                 processes (the child echoes)
More rows (Queue, Value + Lock, Manager().dict()) print their own keys.
"""
import argparse
import multiprocessing as mp
import statistics
import time

from common import report


def echo(conn):
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass


def pipe_rtt(round_trips):
    ctx = mp.get_context("fork")
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=echo, args=(theirs,))
    p.start()
    theirs.close()
    for i in range(1000):  # warm up
        mine.send(i)
        mine.recv()
    samples = []
    for i in range(round_trips):
        t0 = time.perf_counter()
        mine.send(i)
        assert mine.recv() == i
        samples.append(time.perf_counter() - t0)
    p.terminate()  # the forked child holds a copy of `mine` too: no EOF would reach it
    p.join()
    return statistics.median(samples) * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-trips", type=int, default=20000)
    args = parser.parse_args()
    report("pipe_rtt_us", pipe_rtt(args.round_trips))


if __name__ == "__main__":
    main()
