"""Measure the wall time of `llmtune doctor` (quick level) as a user runs it.

Runs the installed console script N times (default 10) after one warm-up and prints min, median
and max wall time. Usage: python scripts/bench_doctor.py [N] [extra doctor args...]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    extra = sys.argv[2:]
    exe = shutil.which("llmtune")
    command = [exe] if exe else [sys.executable, "-m", "llmtune"]
    command += ["doctor", "--format", "json", *extra]
    subprocess.run(command, capture_output=True, check=False)  # warm the page cache
    times = []
    for i in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1, 3):
            sys.exit(f"run {i}: exit {proc.returncode}: {proc.stderr.decode()}")
        print(f"run {i + 1}/{runs}: {times[-1]:.3f} s", file=sys.stderr)
    print(
        f"llmtune doctor {' '.join(extra) or '(quick)'}: {runs} runs, "
        f"min {min(times):.3f} s, median {statistics.median(times):.3f} s, max {max(times):.3f} s"
    )


if __name__ == "__main__":
    main()
