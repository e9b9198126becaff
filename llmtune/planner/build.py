"""How to configure llama.cpp for a host: CMake flags from its GPUs and the settings, with reasons.

Pure: the GPU fact, the CMake options the source tree declares and the settings go in; a plan
with the flags, the CUDA architectures and a build id comes out. The build id names the build
directory, so the same ref and flags never build twice and a different one never overwrites a
working build.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from llmtune.facts.gpu import NvidiaGpusValue

# The flash-attention kernels for every KV quantization pair. The default build already has
# f16/f16 and q8_0/q8_0; other pairs (q4_0 K with q8_0 V...) need this, which costs build time.
FA_QUANTS_OPTIONS = ("GGML_CUDA_FA_QUANTS", "GGML_CUDA_FA_ALL_QUANTS")  # new name first
DEFAULT_FA_KV_PAIRS = frozenset({("f16", "f16"), ("q8_0", "q8_0")})
TARGETS = ("llama-server", "llama-bench", "llama-quantize", "llama-fit-params")


class BuildPlanError(ValueError):
    pass


@dataclass(frozen=True)
class BuildPlan:
    ref: str
    cmake_flags: tuple[str, ...]
    cuda_architectures: tuple[int, ...]
    targets: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def flags_hash(self) -> str:
        return hashlib.sha256("\n".join(self.cmake_flags).encode()).hexdigest()[:10]

    @property
    def build_id(self) -> str:
        """``<ref>-<hash of the flags>``: the build directory's name."""
        ref = re.sub(r"[^A-Za-z0-9._-]", "_", self.ref)[:40]
        return f"{ref}-{self.flags_hash}"


def cuda_architectures(gpus: NvidiaGpusValue) -> tuple[int, ...]:
    """Every installed GPU's compute capability as CMake wants it (8.9 -> 89), sorted, unique."""
    archs = {gpu.cuda_arch for gpu in gpus.gpus}
    if None in archs:
        unknown = [g.name for g in gpus.gpus if g.cuda_arch is None]
        raise BuildPlanError(f"compute capability unknown for {', '.join(unknown)}")
    return tuple(sorted(a for a in archs if a is not None))


def _fa_quants_option(options: Iterable[str]) -> str | None:
    known = set(options)
    return next((name for name in FA_QUANTS_OPTIONS if name in known), None)


def plan_build(
    *,
    ref: str,
    gpus: NvidiaGpusValue,
    cmake_options: Iterable[str],
    cuda: str = "auto",
    lto: bool = False,
    kv_cache_pairs: Iterable[tuple[str, str]] = (("f16", "f16"),),
    commit: str | None = None,
    build_number: int | None = None,
    extra: Iterable[str] = (),
) -> BuildPlan:
    """The configure flags for this host.

    ``cuda``: "auto" builds CUDA when the host has NVIDIA GPUs, "on" requires them, "off" builds
    for the CPU. ``kv_cache_pairs`` are the (K, V) cache types the service plan uses.
    ``commit``/``build_number`` are passed when building from a tarball without .git, so that
    ``--version`` names the source.
    """
    options = set(cmake_options)
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_NATIVE=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
    ]
    reasons = [
        "GGML_NATIVE=ON: built on the host that runs it, for its own CPU (AVX-512, AMX...)",
        "LLAMA_CURL=OFF: models are local files; no download code in the server",
        "LLAMA_BUILD_TESTS/EXAMPLES=OFF: only the tools llmtune runs",
    ]
    if "LLAMA_USE_PREBUILT_UI" in options:
        # Otherwise the build downloads the web UI's "latest" files: a pinned build that
        # changes with the day it was built (and fails offline).
        flags.append("-DLLAMA_USE_PREBUILT_UI=OFF")
        reasons.append("LLAMA_USE_PREBUILT_UI=OFF: no web UI download at build time (a pin)")
    archs: tuple[int, ...] = ()
    use_cuda = cuda == "on" or (cuda == "auto" and gpus.available and bool(gpus.gpus))
    if cuda == "on" and not (gpus.available and gpus.gpus):
        raise BuildPlanError(f"llama_cpp_cuda is on but no NVIDIA GPU answers: {gpus.reason}")
    if use_cuda:
        archs = cuda_architectures(gpus)
        arch_list = ";".join(str(a) for a in archs)
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={arch_list}"]
        flags.append("-DGGML_CUDA_GRAPHS=ON")
        reasons += [
            f"GGML_CUDA=ON, CMAKE_CUDA_ARCHITECTURES={arch_list}: code for exactly the installed "
            "GPUs (a generic build compiles for every architecture and takes far longer)",
            "GGML_CUDA_GRAPHS=ON: fewer kernel launches per token",
        ]
        extra_pairs = set(kv_cache_pairs) - DEFAULT_FA_KV_PAIRS
        option = _fa_quants_option(options)
        if extra_pairs and option:
            flags.append(f"-D{option}=ON")
            pairs = ", ".join(f"{k}/{v}" for k, v in sorted(extra_pairs))
            reasons.append(f"{option}=ON: flash-attention kernels for the KV types {pairs}")
        elif extra_pairs:
            raise BuildPlanError(
                "the planned KV cache types need the all-quants flash-attention kernels, and this "
                f"source declares neither {' nor '.join(FA_QUANTS_OPTIONS)}"
            )
    else:
        reasons.append(
            "CPU build: "
            + (
                "llama_cpp_cuda is off"
                if cuda == "off"
                else f"no NVIDIA GPU ({gpus.reason or 'none listed'})"
            )
        )
    if lto:
        flags.append("-DGGML_LTO=ON")
        reasons.append("GGML_LTO=ON (settings): link-time optimization, slower build")
    if commit:
        flags.append(f"-DLLAMA_BUILD_COMMIT={commit}")
        flags.append(f"-DLLAMA_BUILD_NUMBER={build_number or 0}")
        reasons.append("LLAMA_BUILD_COMMIT/NUMBER: a tarball has no .git; --version names it")
    extra = list(extra)
    if extra:
        flags += extra
        reasons.append(f"{' '.join(extra)}: from the settings (llama_cpp_cmake_extra)")
    return BuildPlan(ref, tuple(flags), archs, TARGETS, tuple(reasons))
