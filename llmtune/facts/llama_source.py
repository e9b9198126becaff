"""A llama.cpp source tree on the host: present or not, and the CMake options it declares
(the build planner spells optional kernels as the source version expects)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale

_OPTION = re.compile(r"^\s*option\(\s*([A-Z0-9_]+)", re.MULTILINE)
MARK_PRESENT = "@@llmtune present"


def cmake_options(text: str) -> frozenset[str]:
    """The names a CMakeLists.txt declares with ``option(NAME ...)``."""
    return frozenset(_OPTION.findall(text))


@dataclass(frozen=True)
class LlamaSourceValue:
    """Example: ``LlamaSourceValue(present=True, options=frozenset({"GGML_CUDA", ...}))``."""

    present: bool = False
    options: frozenset[str] = frozenset()


class LlamaSource(LlmtuneFact[LlamaSourceValue]):
    def command(self, path: str = "/opt/llmtune/llama.cpp/src") -> str:
        src = shlex.quote(path)
        return c_locale(
            f"if [ -f {src}/CMakeLists.txt ]; then echo '{MARK_PRESENT}'; "
            f"cat {src}/CMakeLists.txt {src}/ggml/CMakeLists.txt 2>/dev/null; fi; true"
        )

    def process(self, output: list[str]) -> LlamaSourceValue:
        if MARK_PRESENT not in output:
            return LlamaSourceValue()
        return LlamaSourceValue(True, cmake_options("\n".join(output)))
