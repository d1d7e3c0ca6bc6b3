"""Sums doctest's per-program counts from meson's testlog.json and prints the closing line.

Each test program is a doctest binary ending with a line such as
"[doctest] test cases: 12 | 11 passed | 1 failed | 0 skipped". A program that crashed or
timed out before printing it counts as one failed test. Exits 1 if anything failed.
"""
import json
import re
import sys

LINE = re.compile(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")
# doctest colours its summary where its output is a terminal (mpiexec gives the ranks one).
COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def main(path):
    passed = failed = 0
    with open(path) as log:
        for raw in log:
            entry = json.loads(raw)
            found = LINE.findall(COLOUR.sub("", entry.get("stdout", "") or ""))
            if found:
                passed += int(found[-1][1])
                failed += int(found[-1][2])
            elif entry.get("result") == "OK":
                passed += 1  # a program that is not a doctest binary
            if entry.get("result") not in ("OK", "SKIP") and (not found or found[-1][2] == "0"):
                failed += 1  # crashed, timed out, or exited non-zero after passing cases
                print(f"FAILED: {entry.get('name')} ({entry.get('result')})")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
