"""The CUDA toolkit on a host: where nvcc is and which release (a CUDA build needs it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale, parse_tool, tool

_RELEASE = re.compile(r"release (\d+\.\d+)")


@dataclass(frozen=True)
class CudaToolkitValue:
    """Example: ``CudaToolkitValue(available=True, version="13.0", reason="")``."""

    available: bool = False
    version: str = ""
    reason: str = ""


class CudaToolkit(LlmtuneFact[CudaToolkitValue]):
    def command(self) -> str:
        # The PATH change must happen before `command -v`, so the tool check finds it too.
        return c_locale(
            'PATH="$PATH:/usr/local/cuda/bin:/opt/cuda/bin"; ' + tool("nvcc", "nvcc --version")
        )

    def process(self, output: list[str]) -> CudaToolkitValue:
        result = parse_tool(output)
        if not result.ok:
            return CudaToolkitValue(reason=f"nvcc {result.brief()}")
        match = _RELEASE.search(result.text())
        return CudaToolkitValue(True, match.group(1) if match else "")
