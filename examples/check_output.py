#!/usr/bin/env python3
"""Runs one example and checks what it printed (meson test --suite examples).

    check_output.py TEST_NAME PROGRAM [ARGS...]

Each test expects an exit status and a list of regular expressions that must match the
output (stdout, then stderr) in the order given. Lines that depend on timing or process ids
are matched loosely; everything else exactly.
"""
import json
import re
import subprocess
import sys

PID = r"worker pid \d+"

EXPECTED = {
    "collatz-bad-backend": (2, [r"--backend: gpu not in \{"]),
    "collatz-config": (0, [
        r"answer: start 77031, 350 steps",
        r"\nsequential +1 ",
        r"\nprocess +2 ",
    ]),
    "as_completed": (0, [
        r"Part 1:",
        # Completion order depends on the scheduler, so each range is only required once.
        *[rf"(?s)(?=.*starts below +{n}: longest chain from {s}, {l} steps\n)"
          for n, s, l in [(1000000, 837799, 524), (20000, 17647, 278), (500000, 410011, 448),
                          (2000, 1161, 181), (100000, 77031, 350)]],
        r"Part 2:",
        r"completed: 1\n  completed: 2\n  TimeoutError: 1 \(of 3\) futures unfinished\n",
        r"after opening the gate: 3\n",
    ]),
    "coroutines": (0, [
        r"progress: 0 of 8 chunks done\n",
        r"answer below 2000000: start 1723519, 556 steps\n",
        r"slow chunk: deadline passed after 500 ms, future cancelled: yes\n",
        r"its worker was replaced: pid changed \(\d+ -> \d+\)\n",
    ]),
    "exceptions": (0, [
        r"thread backend:",
        r"invalid_argument +-> caught std::invalid_argument: '12x' is not a count\n"
        r" +raised in this process",
        r"registered +-> caught QuotaExceeded: monthly quota exceeded by 250\n +raised in this",
        r"unregistered +-> caught DiskFull: no space left for report.pdf\n +raised in this",
        r"crash +-> skipped",
        r"result\(20ms\) +-> caught cfx::TimeoutError: .*later result\(\) = 300",
        r"process backend:",
        rf"invalid_argument +-> caught std::invalid_argument: '12x' is not a count\n"
        rf" +remote context: task 'parse_count', {PID}",
        rf"registered +-> caught QuotaExceeded: monthly quota exceeded by 250\n"
        rf" +remote context: task 'charge', {PID}",
        rf"unregistered +-> caught cfx::RemoteError: DiskFull: no space left for report.pdf"
        rf"\n +remote context: task 'save', {PID}",
        r"crash +-> caught cfx::WorkerCrashed: .*crash.*SIGABRT",
        r"result\(20ms\) +-> caught cfx::TimeoutError: .*later result\(\) = 300",
        r"task_timeout = 1s:",
        r"sleep_ms\(60000\) +-> caught cfx::TimeoutError",
        r"sleep_ms\(1\) +-> 1 ",
    ]),
    "shared_data": (0, [
        r"array: 10000000 integers, 76 MB, built once\n",
        r"sum: 50000005000000\n",
        r"multiples of 7: 1428571\n",
        r"max of n\^2 mod 1000003: \d+\n",
        # Every worker maps the whole array (shared) and holds less of its own than a copy of
        # it would take (a few MB; under AddressSanitizer, whose shadow memory counts, 20-30).
        r"worker: resident \d+ MB, of which shared \(the array\) 7\d MB, private [1-6]?\d MB\n",
    ]),
    "pool_patterns": (0, [
        r"map\(square\): +\[0, 1, 4, 9, 16, 25, 36, 49, 64, 81\]",
        r"starmap\(add\): +\[3, 7, 11\]",
        r"apply\(square, 7\): +49",
        r"apply_async callbacks: \[9, 16, 25\]",
        r"chunked map, sum: +333338333350000",
        r"map_unordered, sum: +333338333350000",
        r"as_completed, failures handled per future:\n"
        + "".join(rf"  key {k} {expected}\n" for k, expected in [
            (1, "-> 10"), (2, "-> 20"), (3, "-> 30"), (4, "failed: lookup of key 4 failed"),
            (5, "-> 50"), (6, "-> 60"), (7, "-> 70"), (8, "failed: lookup of key 8 failed")]),
    ]),
    "primitives": (0, [
        r"Value \+ get_lock\(\): two processes, 100,000 guarded increments each: 200000\n",
        r"Array \+ get_lock\(\): scaled in a child: 10 20 30\n",
        r"Pipe: received \[42, None, 'hello'\] from a child\n",
        r"Barrier: 3 processes met twice \(phase two seen: yes\)\n",
        r"Event: 3 processes waiting, event set: no\n",
        r"Event: set; every waiter went on: yes\n",
        r"Queue: two producers, 2,000 squares in all: sum = 2664667000\n",
        r"Manager dict: 3 keys: apple=3 fig=1 pear=2\n",
    ]),
    "config_swap-process-file": (0, [
        r"backend: process, max_workers: 2\n",
        r"longest chain below 100000: start 77031, 350 steps",
    ]),
    "config_swap-env-thread": (0, [
        r"backend: thread, max_workers: 3\n",
        r"longest chain below 100000: start 77031, 350 steps",
    ]),
    "config_swap-env-process": (0, [
        r"backend: process, max_workers: 2\n",
        r"longest chain below 100000: start 77031, 350 steps",
    ]),
}


def check_collatz_json(out: str) -> list[str]:
    """The --json output: the answer, and one correct row per backend."""
    doc = json.loads(out)
    errors = []
    if doc["answer"] != {"start": 77031, "length": 350}:
        errors.append(f"wrong answer {doc['answer']}")
    backends = [row["backend"] for row in doc["rows"]]
    if backends != ["sequential", "thread", "process"]:
        errors.append(f"rows {backends}, expected sequential, thread, process")
    for row in doc["rows"]:
        if (row["start"], row["length"], row["correct"]) != (77031, 350, True):
            errors.append(f"row {row['backend']} is wrong: {row}")
        if not row["seconds"] > 0 or not row["speedup"] > 0:
            errors.append(f"row {row['backend']} has no timing: {row}")
    return errors


def check_patterns(out: str, patterns: list[str]) -> list[str]:
    """Each pattern must match after the previous one's match."""
    pos = 0
    for pattern in patterns:
        m = re.compile(pattern).search(out, pos)
        if not m:
            return [f"no match for {pattern!r} after offset {pos}"]
        pos = m.end()
    return []


def main() -> int:
    name, command = sys.argv[1], sys.argv[2:]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=100)
    out = proc.stdout + proc.stderr
    print(out)
    if name == "collatz-json":
        status, errors = 0, check_collatz_json(proc.stdout)
        if "\r" in proc.stderr:
            errors.append("a progress bar was drawn although stderr is not a terminal")
    else:
        status, patterns = EXPECTED[name]
        errors = check_patterns(out, patterns)
    if proc.returncode != status:
        errors.append(f"exit status {proc.returncode}, expected {status}")
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
