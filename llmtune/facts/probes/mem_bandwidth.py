"""RAM copy bandwidth probe, run on the host by the MemoryBandwidth fact (python3 stdlib only).

Shipped as text inside the fact's command (``python3 -c``), so it must run on any python3 >= 3.6
with nothing installed: no syntax past 3.6, no third-party modules.

Each thread maps its own source and destination buffers (first touch by the thread that uses
them, so on NUMA hosts the pages sit on its node; transparent hugepages asked for, so faulting a
gigabyte in takes milliseconds, not seconds, in a VM) and copies one into the other with
``ctypes.memmove`` until the deadline. ``ctypes.memmove`` is a foreign call, which releases the
GIL, so the threads really copy in parallel. Source plus destination are at least 4x the
last-level cache and at least 512 MiB, so the copies stream from RAM rather than from the cache.

Output: ``key=value`` lines; ``bytes`` counts what was read plus what was written.
"""

import contextlib
import ctypes
import mmap
import os
import threading
import time

MIB = 1024 * 1024
# One side (source or destination) of the copy, all threads together.
MIN_TOTAL = 256 * MIB
# Per-thread buffers below this are dominated by call overhead; above it memmove streams.
MIN_CHUNK = 8 * MIB
DURATION_S = float(os.environ.get("LLMTUNE_BW_SECONDS", "1.5"))


def llc_bytes():
    """The largest CPU cache (sysfs), 0 when unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        try:
            with open(os.path.join(base, name, "size")) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        scale = {"K": 1024, "M": MIB, "G": 1024 * MIB}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KMGkmg")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best


def mem_available():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def buffer(size):
    """An anonymous mapping's address (kept alive in MAPS); hugepages asked for where possible."""
    area = mmap.mmap(-1, size)
    advise = getattr(area, "madvise", None)  # python >= 3.8
    if advise is not None and hasattr(mmap, "MADV_HUGEPAGE"):
        # THP "never" or not compiled in: small pages work, they are only slower to fault in.
        with contextlib.suppress(OSError):
            advise(mmap.MADV_HUGEPAGE)
    MAPS.append(area)
    return ctypes.addressof(ctypes.c_char.from_buffer(area))


MAPS = []


def cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def main():
    threads = cpus()
    llc = llc_bytes()
    total = max(MIN_TOTAL, 2 * llc)
    available = mem_available()
    # Source plus destination must leave the host's memory alone: at most a quarter of what is
    # available, or the probe itself would push the host into swap.
    if available and 2 * total > available // 4:
        total = max(MIN_CHUNK, available // 8)
    # Whole 2 MiB pages, so every chunk can be backed by hugepages.
    chunk = max(MIN_CHUNK, total // threads) // (2 * MIB) * (2 * MIB)
    barrier_start = [0.0]

    def mark_start():
        # Runs once, when every thread has its buffers ready: the timed part starts here.
        barrier_start[0] = time.monotonic()

    barrier = threading.Barrier(threads + 1, action=mark_start)
    moved = [0] * threads
    errors = []

    def work(index):
        try:
            src = buffer(chunk)
            dst = buffer(chunk)
            ctypes.memset(src, 1, chunk)  # fault every page in before timing
            ctypes.memmove(dst, src, chunk)
        except (MemoryError, OSError, ValueError) as exc:
            errors.append(repr(exc))
            barrier.abort()
            return
        try:
            barrier.wait()
            deadline = barrier_start[0] + DURATION_S
        except threading.BrokenBarrierError:
            return
        count = 0
        while True:
            ctypes.memmove(dst, src, chunk)
            count += 1
            if time.monotonic() >= deadline:
                break
        moved[index] = count * chunk * 2

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = barrier_start[0]
    for worker in workers:
        worker.join()
    seconds = time.monotonic() - start
    if errors:
        print("error=" + errors[0])
        return
    print(f"threads={threads}")
    print(f"buffer_bytes={chunk * threads}")
    print(f"llc_bytes={llc}")
    print(f"bytes={sum(moved)}")
    print(f"seconds={seconds:.6f}")


if __name__ == "__main__":
    main()
