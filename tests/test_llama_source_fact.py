"""LlamaSource over llama.cpp 0c1e570's real CMake files: the options the planner spells."""

from __future__ import annotations

import shutil

from conftest import FIXTURES, read_fact

from llmtune.facts.llama_source import LlamaSource, LlamaSourceValue


def test_options_of_a_real_source_tree(tmp_path) -> None:
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "llama.cpp" / "src-0c1e570", src)
    value = read_fact(LlamaSource, path=str(src))
    assert value.present
    assert {"GGML_NATIVE", "GGML_CUDA", "GGML_CUDA_FA_ALL_QUANTS", "LLAMA_USE_PREBUILT_UI"} <= (
        value.options
    )
    assert "GGML_CUDA_FA_QUANTS" not in value.options  # the new name came later


def test_absent_tree(tmp_path) -> None:
    assert read_fact(LlamaSource, path=str(tmp_path / "none")) == LlamaSourceValue()
