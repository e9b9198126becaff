"""The llama.cpp build plan, from GPU facts parsed out of real nvidia-smi recordings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import FIXTURES

from llmtune.facts.gpu import parse_nvidia_gpus
from llmtune.planner.build import BuildPlanError, plan_build

RECORDED = FIXTURES / "recorded" / "gpu"
OPTIONS = {"GGML_CUDA", "GGML_NATIVE", "GGML_CUDA_GRAPHS", "GGML_CUDA_FA_ALL_QUANTS"}


def gpus(name: str):
    return parse_nvidia_gpus((RECORDED / name / "fact-nvidia-gpus.txt").read_text().splitlines())


def test_h100_builds_for_sm90_only() -> None:
    plan = plan_build(ref="b1234", gpus=gpus("h100-vm"), cmake_options=OPTIONS)
    assert plan.cuda_architectures == (90,)
    assert "-DGGML_CUDA=ON" in plan.cmake_flags
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in plan.cmake_flags
    assert "-DGGML_NATIVE=ON" in plan.cmake_flags and "-DGGML_CUDA_GRAPHS=ON" in plan.cmake_flags
    # f16 KV is in the default kernels: no all-quants build time.
    assert not any("FA_" in flag for flag in plan.cmake_flags)
    assert plan.build_id.startswith("b1234-") and len(plan.build_id) == len("b1234-") + 10


def test_no_gpu_is_a_cpu_build_and_cuda_on_without_gpu_is_refused() -> None:
    vm = gpus("debian12-vm")
    plan = plan_build(ref="b1234", gpus=vm, cmake_options=OPTIONS)
    assert not any("CUDA" in flag for flag in plan.cmake_flags)
    assert any(reason.startswith("CPU build") for reason in plan.reasons)
    with pytest.raises(BuildPlanError, match="no NVIDIA GPU"):
        plan_build(ref="b1234", gpus=vm, cmake_options=OPTIONS, cuda="on")


def test_several_gpus_give_a_sorted_unique_arch_list() -> None:
    h100 = gpus("h100-vm")
    [gpu] = h100.gpus
    mixed = replace(h100, gpus=(gpu, replace(gpu, index=1, compute_cap="8.9"), gpu))
    plan = plan_build(ref="r", gpus=mixed, cmake_options=OPTIONS)
    assert plan.cuda_architectures == (89, 90)
    assert "-DCMAKE_CUDA_ARCHITECTURES=89;90" in plan.cmake_flags


def test_fa_quant_kernels_only_when_the_kv_types_need_them_spelled_as_the_source_does() -> None:
    h100 = gpus("h100-vm")
    q8 = plan_build(ref="r", gpus=h100, cmake_options=OPTIONS, kv_cache_pairs=[("q8_0", "q8_0")])
    assert not any("FA_" in flag for flag in q8.cmake_flags)
    mixed = [("q4_0", "q8_0")]
    old = plan_build(ref="r", gpus=h100, cmake_options=OPTIONS, kv_cache_pairs=mixed)
    assert "-DGGML_CUDA_FA_ALL_QUANTS=ON" in old.cmake_flags
    new_options = (OPTIONS - {"GGML_CUDA_FA_ALL_QUANTS"}) | {"GGML_CUDA_FA_QUANTS"}
    new = plan_build(ref="r", gpus=h100, cmake_options=new_options, kv_cache_pairs=mixed)
    assert "-DGGML_CUDA_FA_QUANTS=ON" in new.cmake_flags
    with pytest.raises(BuildPlanError, match="all-quants"):
        plan_build(ref="r", gpus=h100, cmake_options={"GGML_CUDA"}, kv_cache_pairs=mixed)


def test_same_inputs_same_build_id_and_any_flag_change_a_new_one() -> None:
    h100 = gpus("h100-vm")
    a = plan_build(ref="r", gpus=h100, cmake_options=OPTIONS)
    assert a.build_id == plan_build(ref="r", gpus=h100, cmake_options=OPTIONS).build_id
    lto = plan_build(ref="r", gpus=h100, cmake_options=OPTIONS, lto=True)
    assert "-DGGML_LTO=ON" in lto.cmake_flags and lto.build_id != a.build_id
    tarball = plan_build(
        ref="r", gpus=h100, cmake_options=OPTIONS, commit="0c1e570abc", build_number=7
    )
    assert "-DLLAMA_BUILD_COMMIT=0c1e570abc" in tarball.cmake_flags
    assert "-DLLAMA_BUILD_NUMBER=7" in tarball.cmake_flags


def test_rtx_4080_desktop_builds_for_sm89() -> None:
    # A real 202-field query from a KDE desktop (tests/fixtures/public/...), wrapped in the
    # probe's exit-status trailer as the NvidiaGpus command prints it.
    csv = FIXTURES / "public/nvidia-smi-rtx4080super-kde-desktop/nvidia-smi-query-gpu.idle.csv"
    desktop = parse_nvidia_gpus([*csv.read_text().splitlines(), "@@llmtune rc 0"])
    plan = plan_build(ref="r", gpus=desktop, cmake_options=OPTIONS)
    assert plan.cuda_architectures == (89,)
    assert "-DCMAKE_CUDA_ARCHITECTURES=89" in plan.cmake_flags
