"""PCIe link under load: copy host memory to each NVIDIA GPU and read the link meanwhile.

A GPU's PCIe link trains down (lower generation, sometimes fewer lanes) when idle, so the idle
reading cannot tell a power-saving link from a card in a bad slot. This script loads each link
with host-to-device copies (pinned memory, synchronous ``cuMemcpyHtoD``) for about
``LOAD_SECONDS``, runs ``nvidia-smi`` for that GPU while the copies run, and prints what it saw.

Standard library only (ctypes on the driver's ``libcuda.so.1``): it runs on any host that has the
NVIDIA driver, without the CUDA toolkit or Python packages. It never changes clocks, power
limits, persistence or MIG mode; it only allocates 2 x ``CHUNK_BYTES`` per GPU and frees them.

Every line it prints starts with ``pcie-load``; it always exits 0 (the fact reads the lines):

- ``pcie-load unavailable REASON``: no driver library, no device; nothing was loaded.
- ``pcie-load result cuda=N bus=BUS bytes=B seconds=S gb_s=G``: one GPU's measured copy rate.
- ``pcie-load smi bus=BUS LINE``: one line of the nvidia-smi CSV (header included) taken
  during that GPU's load.
- ``pcie-load error cuda=N bus=BUS MESSAGE``: that GPU could not be loaded (out of memory,
  exclusive compute mode held by another process...).

Importing this module does nothing; ``main()`` runs the probe.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PREFIX = "pcie-load"
LOAD_SECONDS = 2.0
# Large enough that per-copy overhead is negligible, small enough to fit next to a loaded model.
CHUNK_BYTES = 64 << 20
# When the nvidia-smi sample is taken, into the load: the link retrains within milliseconds.
SAMPLE_AFTER_S = 0.6
# The load goes on until the sample returns, but never longer than this.
MAX_LOAD_SECONDS = 15.0
SMI_TIMEOUT_S = 10.0
SMI_FIELDS = (
    "index,pci.bus_id,pcie.link.gen.current,pcie.link.gen.max,"
    "pcie.link.width.current,pcie.link.width.max"
)


class CudaError(Exception):
    """A driver API call returned an error (its message names the call and the error)."""


def emit(*parts: object) -> None:
    print(PREFIX, *parts, flush=True)


def normalize_bus_id(bus_id: str) -> str:
    """One spelling for PCI addresses: nvidia-smi's ``00000000:1A:00.0`` and CUDA's
    ``0000:1a:00.0`` both become ``0000:1a:00.0``.

    >>> normalize_bus_id("00000000:01:00.0")
    '0000:01:00.0'
    """
    text = bus_id.strip().lower()
    domain, sep, rest = text.partition(":")
    if not sep or ":" not in rest:
        return text
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return text


def error_name(cuda: Any, code: int) -> str:
    name = ctypes.c_char_p()
    try:
        if cuda.cuGetErrorName(code, ctypes.byref(name)) == 0 and name.value:
            return name.value.decode(errors="replace")
    except AttributeError:
        pass
    return f"CUresult {code}"


def call(cuda: Any, function: str, *args: Any) -> None:
    code = getattr(cuda, function)(*args)
    if code != 0:
        raise CudaError(f"{function} failed: {error_name(cuda, code)}")


def sample_smi(bus_id: str) -> list[str]:
    """nvidia-smi's view of one GPU's link, as CSV lines with a header (or its error text)."""
    command = [
        "nvidia-smi",
        f"--id={bus_id}",
        f"--query-gpu={SMI_FIELDS}",
        "--format=csv,nounits",
    ]
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"nvidia-smi could not run: {exc}"]
    return (proc.stdout + proc.stderr).splitlines()


def load_one(cuda: Any, ordinal: int, sampler: Callable[[str], list[str]] = sample_smi) -> None:
    """Load one GPU's link and print its result and the nvidia-smi lines taken meanwhile."""
    device = ctypes.c_int()
    call(cuda, "cuDeviceGet", ctypes.byref(device), ordinal)
    buffer = ctypes.create_string_buffer(64)
    call(cuda, "cuDeviceGetPCIBusId", buffer, 64, device)
    bus = normalize_bus_id(buffer.value.decode(errors="replace"))
    context = ctypes.c_void_p()
    try:
        call(cuda, "cuCtxCreate_v2", ctypes.byref(context), 0, device)
    except CudaError as exc:
        raise CudaError(f"bus={bus} {exc}") from exc
    host = ctypes.c_void_p()
    dev_ptr = ctypes.c_uint64()
    size = ctypes.c_size_t(CHUNK_BYTES)
    samples: list[str] = []
    copied = 0
    elapsed = 0.0
    try:
        call(cuda, "cuMemAllocHost_v2", ctypes.byref(host), size)
        call(cuda, "cuMemAlloc_v2", ctypes.byref(dev_ptr), size)
        # One copy before timing: the first one pays for page mapping and link retraining.
        call(cuda, "cuMemcpyHtoD_v2", dev_ptr, host, size)

        def take_sample() -> None:
            time.sleep(SAMPLE_AFTER_S)
            samples.extend(sampler(bus))

        # ctypes releases the GIL during each copy, so the sampler runs while the link is busy.
        thread = threading.Thread(target=take_sample, daemon=True)
        start = time.monotonic()
        thread.start()
        while True:
            call(cuda, "cuMemcpyHtoD_v2", dev_ptr, host, size)
            copied += CHUNK_BYTES
            elapsed = time.monotonic() - start
            if elapsed >= MAX_LOAD_SECONDS or (elapsed >= LOAD_SECONDS and not thread.is_alive()):
                break
        thread.join(timeout=SMI_TIMEOUT_S)
    except CudaError as exc:
        raise CudaError(f"bus={bus} {exc}") from exc
    finally:
        if dev_ptr.value:
            cuda.cuMemFree_v2(dev_ptr)
        if host.value:
            cuda.cuMemFreeHost(host)
        cuda.cuCtxDestroy_v2(context)
    emit(
        "result",
        f"cuda={ordinal}",
        f"bus={bus}",
        f"bytes={copied}",
        f"seconds={elapsed:.3f}",
        f"gb_s={copied / elapsed / 1e9:.2f}",
    )
    for line in samples:
        emit("smi", f"bus={bus}", line)


def main(loader: Callable[[str], Any] = ctypes.CDLL) -> int:
    try:
        cuda = loader("libcuda.so.1")
    except OSError as exc:
        emit("unavailable", f"no NVIDIA driver library (libcuda.so.1): {exc}")
        return 0
    count = ctypes.c_int()
    try:
        call(cuda, "cuInit", 0)
        call(cuda, "cuDeviceGetCount", ctypes.byref(count))
    except (CudaError, AttributeError) as exc:
        emit("unavailable", str(exc))
        return 0
    if count.value == 0:
        emit("unavailable", "CUDA sees no device")
        return 0
    for ordinal in range(count.value):
        try:
            load_one(cuda, ordinal)
        except (CudaError, AttributeError) as exc:
            emit("error", f"cuda={ordinal}", str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
