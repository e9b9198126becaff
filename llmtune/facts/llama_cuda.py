"""Which GPU architectures the current llama.cpp build carries code for, read from the library.

build-info.json says which architectures the build asked CMake for; the library says what nvcc
actually put in it. ``cuobjdump --list-elf`` lists the SASS (cubin) images, one per real
architecture; ``--list-ptx`` the PTX that the driver can JIT-compile for newer GPUs (slowly, at
first start, and never as fast as native code).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from llmtune.facts.llama import ROOT_DIR
from llmtune.facts.probe import (
    LlmtuneFact,
    c_locale,
    join,
    parse_tool,
    section,
    split_sections,
    sysroot,
    tool,
)

# cuobjdump ships with the CUDA toolkit, which is often not on PATH for non-login shells.
CUDA_BIN_DIRS = ("/usr/local/cuda/bin", "/opt/cuda/bin")
# "ELF file    1: libggml-cuda.1.sm_90.cubin" / "PTX file    1: libggml-cuda.1.sm_90.ptx";
# arch-specific variants read "sm_90a", "sm_100f".
_IMAGE = re.compile(r"^(ELF|PTX) file\s+\d+:\s+(\S+?)\.sm_(\d+[a-z]?)\.(cubin|ptx)\s*$")


@dataclass(frozen=True)
class LlamaCudaCodeValue:
    """Example (the H100 build)::

    LlamaCudaCodeValue(available=True, library="/opt/llmtune/llama.cpp/current/bin/libggml-cuda.so",
                       sass=("90",), ptx=())

    ``available`` is False, with ``reason``, when there is no current build, the build has no
    CUDA library (a CPU build: ``library=""``) or cuobjdump is missing or fails.
    """

    available: bool
    reason: str = ""
    library: str = ""
    # Architectures as CMake spells them ("90", "90a"), sorted, without duplicates.
    sass: tuple[str, ...] = ()
    ptx: tuple[str, ...] = ()

    @staticmethod
    def arch_number(arch: str) -> int:
        """ "90a" -> 90: the compute capability a variant runs on."""
        return int(arch.rstrip("abcdefghijklmnopqrstuvwxyz"))

    def sass_for(self, arch: int) -> tuple[str, ...]:
        """The SASS images built for exactly this compute capability (90 -> "90", "90a")."""
        return tuple(a for a in self.sass if self.arch_number(a) == arch)


def parse_images(lines: list[str], kind: str) -> tuple[str, ...]:
    found = {m.group(3) for line in lines if (m := _IMAGE.match(line.strip())) and m[1] == kind}
    return tuple(sorted(found, key=lambda a: (LlamaCudaCodeValue.arch_number(a), a)))


class LlamaCudaCode(LlmtuneFact[LlamaCudaCodeValue]):
    """The CUDA architectures compiled into the current build's ggml CUDA library."""

    timeout_s = 30.0

    def command(self, root_dir: str = ROOT_DIR, root: str = "") -> str:
        bin_dir = shlex.quote(sysroot(root, root_dir) + "/current/bin")
        path = ":".join(("$PATH", *CUDA_BIN_DIRS))
        # A shared build has libggml-cuda.so beside the binaries; a static one links it into
        # llama-server itself.
        find_lib = (
            f"lib=; for f in {bin_dir}/libggml-cuda.so* {bin_dir}/llama-server; do "
            f'if [ -f "$f" ]; then lib="$f"; break; fi; done; '
            f'[ -d {bin_dir} ] && echo "dir"; echo "lib=$lib"'
        )
        return c_locale(
            join(
                f"export PATH={path}",
                section("lib", find_lib),
                'if [ -n "$lib" ]; then '
                + join(
                    section("elf", tool("cuobjdump", 'cuobjdump --list-elf "$lib"')),
                    section("ptx", tool("cuobjdump", 'cuobjdump --list-ptx "$lib"')),
                )
                + "; fi",
            )
        )

    def process(self, output: list[str]) -> LlamaCudaCodeValue:
        parts = split_sections(output)
        lib_lines = parts.get("lib", [])
        library = next((ln[4:].strip() for ln in lib_lines if ln.startswith("lib=")), "")
        if "dir" not in (ln.strip() for ln in lib_lines):
            return LlamaCudaCodeValue(False, reason=f"no current llama.cpp build ({ROOT_DIR})")
        if not library:
            return LlamaCudaCodeValue(False, reason="the current build has no llama-server")
        elf = parse_tool(parts.get("elf", []))
        ptx = parse_tool(parts.get("ptx", []))
        if elf.missing:
            return LlamaCudaCodeValue(False, reason="cuobjdump is not installed", library=library)
        sass = parse_images(list(elf.lines), "ELF")
        ptx_archs = parse_images(list(ptx.lines), "PTX")
        if elf.rc != 0 and not sass:
            # cuobjdump exits non-zero on a file without device code: a CPU build's binary.
            text = " ".join(elf.lines).lower()
            if "does not contain device code" in text:
                return LlamaCudaCodeValue(True, library=library, ptx=ptx_archs)
            return LlamaCudaCodeValue(
                False, reason=f"cuobjdump --list-elf: {elf.brief()}", library=library
            )
        return LlamaCudaCodeValue(True, library=library, sass=sass, ptx=ptx_archs)
