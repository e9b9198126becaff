"""The llama-server plan on real host recordings: the measured H100 scenarios, the no-GPU VM, a
hybrid Intel CPU on an RTX 4080 SUPER desktop, vision, MTP and the settings that override."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FIXTURES, HOSTS, make_tree, read_fact

from llmtune.facts.cpu import CpuTopology, CpuTopologyValue
from llmtune.facts.gpu import NvidiaGpusValue, parse_nvidia_gpus
from llmtune.facts.meminfo import MemInfo, MemInfoValue
from llmtune.facts.model import GgufModelValue
from llmtune.planner.serve import (
    GpuResource,
    HostResources,
    PlanError,
    ServePlan,
    compute_mib,
    host_resources,
    kv_mib,
    plan_server,
    usable_vram_mib,
    weights_mib,
)
from llmtune.settings import HostSettings

RECORDED = FIXTURES / "recorded"
PUBLIC = FIXTURES / "public"
MODEL_PATH = "/srv/models/llama8b-q4_k_m.gguf"
KEY_FILE = "/etc/llmtune/llama-server.key"


# --- the recorded hosts, through the facts' own parsers and commands --------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def meminfo(tmp_path: Path, host: str) -> MemInfoValue:
    """The host's recorded /proc/meminfo through MemInfo's real command."""
    root = make_tree(
        tmp_path / f"{host}-proc", {"/proc/meminfo": (HOSTS / host / "meminfo.txt").read_text()}
    )
    return read_fact(MemInfo, root=str(root))


def grep_h_files(path: Path) -> dict[str, str]:
    """A recorded ``grep -s -H .`` sysfs dump -> ``{path: content}`` for ``make_tree``."""
    files: dict[str, str] = {}
    for line in lines(path):
        name, sep, value = line.partition(":")
        if sep:
            files[name] = files.get(name, "") + value + "\n"
    return files


def h100_host(tmp_path: Path) -> HostResources:
    """The H100 VM: the NvidiaGpus and CpuTopology facts' outputs recorded there, its meminfo."""
    gpus = parse_nvidia_gpus(lines(RECORDED / "gpu" / "h100-vm" / "fact-nvidia-gpus.txt"))
    cpu = CpuTopology().process(
        lines(RECORDED / "cpu" / "h100-ubuntu2404-vm" / "fact-CpuTopology.txt")
    )
    return host_resources(gpus, cpu, meminfo(tmp_path, "h100-ubuntu2404-vm"))


def debian_host(tmp_path: Path) -> HostResources:
    """The Debian 12 VM: no nvidia-smi, 2 vCPUs, 24 GiB."""
    gpus = parse_nvidia_gpus(lines(RECORDED / "gpu" / "debian12-vm" / "fact-nvidia-gpus.txt"))
    cpu = CpuTopology().process(
        lines(RECORDED / "cpu" / "debian12-vm" / "idle" / "fact-CpuTopology.txt")
    )
    return host_resources(gpus, cpu, meminfo(tmp_path, "debian12-vm-nogpu"))


def hybrid_host(tmp_path: Path) -> HostResources:
    """A desktop assembled from real parts: the RTX 4080 SUPER KDE desktop's nvidia-smi query,
    the public Intel hybrid cpu_core/cpu_atom lists laid over the H100 VM's recorded CPU tree
    (CPUs 16-21 of the E-core list do not exist there and drop out), the H100 VM's meminfo."""
    csv = PUBLIC / "nvidia-smi-rtx4080super-kde-desktop" / "nvidia-smi-query-gpu.idle.csv"
    gpus = parse_nvidia_gpus([*lines(csv), "@@llmtune rc 0"])
    hybrid = PUBLIC / "intel-hybrid-cpu_core-cpu_atom"
    files = grep_h_files(RECORDED / "cpu" / "h100-ubuntu2404-vm" / "sys-cpu-topology.grep-H.txt")
    files["/sys/devices/cpu_core/cpus"] = (hybrid / "sys-devices-cpu_core-cpus.txt").read_text()
    files["/sys/devices/cpu_atom/cpus"] = (hybrid / "sys-devices-cpu_atom-cpus.txt").read_text()
    cpu = read_fact(CpuTopology, root=str(make_tree(tmp_path / "sys", files)))
    return host_resources(gpus, cpu, meminfo(tmp_path, "h100-ubuntu2404-vm"))


@pytest.fixture
def h100(tmp_path: Path) -> HostResources:
    return h100_host(tmp_path)


@pytest.fixture
def debian_vm(tmp_path: Path) -> HostResources:
    return debian_host(tmp_path)


@pytest.fixture
def hybrid_desktop(tmp_path: Path) -> HostResources:
    return hybrid_host(tmp_path)


def llama8b(**changes: object) -> GgufModelValue:
    """The measured anchors' synthetic 8B, Q4_K_M (its trained context is 8192). The fact's
    tensor sum was not recorded: tensor_bytes 0, so the file size stands for the weights."""
    model = GgufModelValue(
        available=True,
        path=MODEL_PATH,
        file_bytes=4_368_445_280,
        architecture="llama",
        name="llama8b",
        file_type="Q4_K_M",
        block_count=32,
        context_length=8192,
        embedding_length=4096,
        feed_forward_length=14336,
        head_count=32,
        head_count_kv=8,
        key_length=128,
        value_length=128,
        vocab_size=32000,
    )
    return replace(model, **changes)  # type: ignore[arg-type]


def settings(**values: object) -> HostSettings:
    return HostSettings(model_path=MODEL_PATH, **values)  # type: ignore[arg-type]


def values(plan: ServePlan) -> dict[str, object]:
    return {d.setting: d.value for d in plan.decisions}


# --- host resources -----------------------------------------------------------------------------


def test_h100_resources_from_the_recordings(h100: HostResources) -> None:
    assert h100.gpus == (GpuResource(0, "NVIDIA H100 80GB HBM3", 81559, 81079),)
    assert (h100.physical_cores, h100.pcore_physical_cores, h100.hybrid) == (16, 16, False)
    assert h100.pcores == tuple(range(16))
    # 131981020 kB and 131469784 kB in the recorded /proc/meminfo.
    assert (h100.ram_total_mib, h100.ram_available_mib) == (128887, 128388)


def test_hosts_csv_without_index_column_gives_the_same_gpu(h100: HostResources) -> None:
    # tests/fixtures/hosts/.../nvidia-smi-query.csv has no index column: its position stands in.
    csv = parse_nvidia_gpus(
        [*lines(HOSTS / "h100-ubuntu2404-vm" / "nvidia-smi-query.csv"), "@@llmtune rc 0"]
    )
    resources = host_resources(csv, CpuTopologyValue(), MemInfoValue())
    assert resources.gpus == h100.gpus


def test_no_gpu_resources_keep_nvidia_smis_reason(debian_vm: HostResources) -> None:
    assert debian_vm.gpus == ()
    assert debian_vm.gpu_note == "nvidia-smi is not installed"
    assert (debian_vm.physical_cores, debian_vm.ram_total_mib) == (2, 24105)


def test_gpu_without_free_memory_reading_and_one_without_memory_at_all() -> None:
    from llmtune.facts.gpu import NvidiaGpu

    gpus = NvidiaGpusValue(
        available=True,
        gpus=(
            NvidiaGpu(index=0, name="A", memory_total_mib=24576, memory_used_mib=576),
            NvidiaGpu(index=1, name="B"),
        ),
    )
    resources = host_resources(gpus, CpuTopologyValue(), MemInfoValue())
    assert resources.gpus == (GpuResource(0, "A", 24576, 24000),)
    assert resources.gpu_note == "GPU 1 (B): memory not reported"


# --- the arithmetic -----------------------------------------------------------------------------


def test_vram_arithmetic_of_the_8b() -> None:
    model = llama8b()
    assert weights_mib(model) == 4167  # 4,368,445,280 bytes
    assert weights_mib(replace(model, tensor_bytes=4_365_000_000)) == 4163
    # 32 layers x 8 KV heads x (128 + 128) x 2 bytes = 128 KiB per token in f16.
    assert kv_mib(model, "f16", 32768) == 4096
    assert kv_mib(model, "q8_0", 32768) == 2176  # 34 bytes per 32 values
    # Measured on the H100: 8929 MiB used - 4166 weights - 4096 KV = 667 MiB; modelled 703.
    assert compute_mib(model, 512, 1) == 703
    assert 8929 - 4166 - 4096 <= compute_mib(model, 512, 1) <= 8929 - 4166 - 4096 + 64


def test_several_gpus_lose_half_a_layer_each_to_whole_layer_splits() -> None:
    gpus = (GpuResource(0, "a", 24576, 24000), GpuResource(1, "b", 24576, 24000))
    assert usable_vram_mib(gpus[:1], (1024,), llama8b()) == 22976
    # (devices + 1) half layers of 4167 / 32 MiB each: 195 MiB, as common/fit.cpp estimates.
    assert usable_vram_mib(gpus, (1024, 1024), llama8b()) == 2 * 22976 - 195


# --- (a) plenty of VRAM: the H100 at -c 32768 ---------------------------------------------------


def test_a_h100_plenty_of_vram_f16_everything_on_the_gpu(h100: HostResources) -> None:
    plan = plan_server(h100, llama8b(), settings(context_size=32768), KEY_FILE)
    got = values(plan)
    assert got["placement"] == "gpu"
    assert got["kv_cache"] == "f16"
    assert got["ctx"] == 32768
    assert got["threads"] == 16
    assert got["parallel"] == 1
    assert got["flash_attn"] == "on"
    assert got["load_mode"] == "mlock"
    assert got["fit_target"] == (1024,)
    assert got["port"] == 8080 and got["host"] == "127.0.0.1"
    assert got["alias"] == "llama8b-q4_k_m"
    assert plan.vram is not None
    assert (plan.vram.usable_mib, plan.vram.needed_mib) == (81079 - 1024, 4167 + 4096 + 703)
    kv = plan.get("kv_cache")
    assert kv is not None and "q8_0 KV is 9-22% slower when VRAM is plentiful" in kv.reason
    ctx = plan.get("ctx")
    assert ctx is not None and ctx.from_settings and "set in settings" in ctx.reason
    assert "beyond the trained 8192" in ctx.reason
    # A dense model: no n_cpu_moe decision; not hybrid: no CPU list for the unit.
    assert "n_cpu_moe" not in got and "cpus" not in got


def test_default_context_is_the_trained_context_capped_at_32768(h100: HostResources) -> None:
    assert plan_server(h100, llama8b(), settings(), KEY_FILE).value("ctx") == 8192
    long = llama8b(context_length=131072)
    plan = plan_server(h100, long, settings(), KEY_FILE)
    assert plan.value("ctx") == 32768
    decision = plan.get("ctx")
    assert decision is not None and not decision.from_settings and "capped" in decision.reason
    assert plan_server(h100, llama8b(context_length=0), settings(), KEY_FILE).value("ctx") == 4096


# --- (b) the measured 4 GB budget ---------------------------------------------------------------


def test_b_four_gb_budget_fit_and_f16_at_the_serving_depth(h100: HostResources) -> None:
    plan = plan_server(
        h100, llama8b(), settings(context_size=32768, fit_target_mib=77559), KEY_FILE
    )
    got = values(plan)
    assert got["placement"] == "fit"
    # At depth 16384 the CPU layers' q8_0 attention costs more than the 4 layers it buys
    # (measured on the H100: f16 6.8 vs q8_0 5.8 t/s).
    assert got["kv_cache"] == "f16"
    assert got["fit_target"] == (77559,)
    assert got["threads"] == 16
    assert plan.vram is not None and plan.vram.usable_mib == 81079 - 77559
    kv = plan.get("kv_cache")
    assert kv is not None and not kv.from_settings
    assert "at depth 16384" in kv.reason and "(22 layers on the CPU)" in kv.reason
    assert "f16 6.8 vs q8_0 5.8" in kv.reason
    fit = plan.get("fit_target")
    assert fit is not None and fit.from_settings and "set in settings" in fit.reason
    threads = plan.get("threads")
    assert threads is not None and "16 threads 22.2 t/s vs 8 threads 13.2" in threads.reason


def test_q8_0_where_it_keeps_every_layer_on_the_gpu(h100: HostResources) -> None:
    # 8000 MiB usable: f16 needs 8966, q8_0 7046.
    plan = plan_server(
        h100, llama8b(), settings(context_size=32768, fit_target_mib=73079), KEY_FILE
    )
    assert (plan.value("placement"), plan.value("kv_cache")) == ("gpu", "q8_0")
    kv = plan.get("kv_cache")
    assert kv is not None and "keeps every layer on the GPU" in kv.reason


def test_settings_win_and_say_so(h100: HostResources) -> None:
    chosen = settings(context_size=32768, fit_target_mib=77559, kv_cache_type="f16", threads=8)
    plan = plan_server(h100, llama8b(), chosen, KEY_FILE)
    for name in ("kv_cache", "threads", "fit_target", "ctx"):
        decision = plan.get(name)
        assert decision is not None and decision.from_settings
        assert "set in settings" in decision.reason
    assert (plan.value("kv_cache"), plan.value("threads")) == ("f16", 8)
    assert plan.value("placement") == "fit"  # f16 KV does not fit 3520 MiB either


# --- (c) no GPU ---------------------------------------------------------------------------------


def test_c_debian_vm_without_gpu_runs_on_the_cpu(debian_vm: HostResources) -> None:
    plan = plan_server(debian_vm, llama8b(), settings(), KEY_FILE)
    got = values(plan)
    assert got["placement"] == "cpu"
    assert got["kv_cache"] == "f16"
    assert got["threads"] == 2
    assert got["ctx"] == 8192
    assert "fit_target" not in got and plan.vram is None
    placement = plan.get("placement")
    assert placement is not None and "nvidia-smi is not installed" in placement.reason
    # 4167 MiB of model + 1024 MiB of KV + 2410 MiB headroom fit in 23828 MiB available.
    assert got["load_mode"] == "mlock"


def test_ram_too_small_to_lock_the_model_says_why(debian_vm: HostResources) -> None:
    big = llama8b(file_bytes=40 * 1024**3)
    plan = plan_server(debian_vm, big, settings(), KEY_FILE)
    load = plan.get("load_mode")
    assert load is not None and load.value == "auto"
    assert "not locked" in load.reason and "23828 MiB available" in load.reason
    unknown = replace(debian_vm, ram_total_mib=None, ram_available_mib=None)
    assert plan_server(unknown, llama8b(), settings(), KEY_FILE).value("load_mode") == "auto"


# --- (d) vision ---------------------------------------------------------------------------------


def test_d_vision_raises_the_fit_target_and_keeps_ubatch_512(h100: HostResources) -> None:
    chosen = settings(workload="vision", mmproj_path="/srv/models/mmproj-f16.gguf")
    plan = plan_server(h100, llama8b(), chosen, KEY_FILE)
    fit_target = plan.value("fit_target")
    assert isinstance(fit_target, tuple) and min(fit_target) >= 2048
    assert int(str(plan.value("ubatch"))) >= 512
    assert plan.value("mmproj") == "/srv/models/mmproj-f16.gguf"
    # The projector's size counts when the deploy read its header.
    projector = GgufModelValue(available=True, file_bytes=600 * 1024 * 1024)
    with_size = plan_server(h100, llama8b(), chosen, KEY_FILE, mmproj=projector)
    assert with_size.vram is not None and with_size.vram.extra_mib == 600


def test_vision_under_a_user_margin_below_the_floor_is_flagged(h100: HostResources) -> None:
    chosen = settings(workload="vision", mmproj_path="/m.gguf", fit_target_mib=1024)
    decision = plan_server(h100, llama8b(), chosen, KEY_FILE).get("fit_target")
    assert decision is not None and decision.value == (1024,)
    assert "below the 2048 MiB vision floor" in decision.reason


def test_vision_without_projector_path_is_refused(h100: HostResources) -> None:
    # settings_from_mapping refuses it already; a HostSettings built in code gets the same answer.
    with pytest.raises(PlanError, match="mmproj_path"):
        plan_server(h100, llama8b(), settings(workload="vision"), KEY_FILE)


# --- (e) MTP ------------------------------------------------------------------------------------


def test_e_mtp_without_mtp_layers_is_refused_naming_model_path(h100: HostResources) -> None:
    with pytest.raises(PlanError) as refused:
        plan_server(h100, llama8b(), settings(workload="mtp"), KEY_FILE)
    assert refused.value.key == "model_path"
    assert MODEL_PATH in str(refused.value) and "nextn_predict_layers is 0" in str(refused.value)


def test_mtp_keeps_f16_even_under_a_budget(h100: HostResources) -> None:
    mtp_model = llama8b(nextn_predict_layers=1)
    chosen = settings(workload="mtp", context_size=32768, fit_target_mib=77559)
    plan = plan_server(h100, mtp_model, chosen, KEY_FILE)
    assert (plan.value("placement"), plan.value("kv_cache")) == ("fit", "f16")
    assert plan.value("spec_type") == "draft-mtp"


# --- (f) a hybrid CPU ---------------------------------------------------------------------------


def test_f_hybrid_cpu_threads_are_the_pcores_physical_cores(hybrid_desktop: HostResources) -> None:
    assert hybrid_desktop.hybrid and hybrid_desktop.pcores == (0, 1, 3, 6, 8, 10)
    plan = plan_server(hybrid_desktop, llama8b(), settings(), KEY_FILE)
    assert plan.value("threads") == 6
    assert plan.value("cpus") == (0, 1, 3, 6, 8, 10)
    threads = plan.get("threads")
    assert threads is not None and "P-cores' physical cores (CPUs 0-1,3,6,8,10)" in threads.reason
    # 15348 MiB free on the 16 GB desktop card: the 8B at 8192 tokens fits, f16.
    assert (plan.value("placement"), plan.value("kv_cache")) == ("gpu", "f16")


# --- refusals and the endpoint ------------------------------------------------------------------


def test_api_key_file_policy(h100: HostResources) -> None:
    with pytest.raises(PlanError, match="server_api_key"):
        plan_server(h100, llama8b(), settings(), None)
    none = plan_server(h100, llama8b(), settings(server_api_key="none"), None)
    assert none.value("api_key_file") is None


def test_model_missing_or_unreadable_is_refused(h100: HostResources) -> None:
    with pytest.raises(PlanError, match="model_path: not set"):
        plan_server(h100, llama8b(), HostSettings(), KEY_FILE)
    gone = GgufModelValue(available=False, reason="no such file")
    with pytest.raises(PlanError, match=f"model_path: {MODEL_PATH}: no such file"):
        plan_server(h100, gone, settings(), KEY_FILE)


def test_parallel_slots_multiply_the_kv(h100: HostResources) -> None:
    plan = plan_server(h100, llama8b(), settings(parallel=4), KEY_FILE)
    assert plan.vram is not None and plan.vram.kv_mib == 4 * 1024
    parallel = plan.get("parallel")
    assert parallel is not None and "-c is 32768, 8192 tokens per slot" in parallel.reason


def test_moe_model_leaves_expert_placement_to_fit(h100: HostResources) -> None:
    moe = llama8b(expert_count=8, expert_used_count=2)
    plan = plan_server(h100, moe, settings(fit_target_mib=78000), KEY_FILE)
    decision = plan.get("n_cpu_moe")
    assert decision is not None and decision.value is None
    assert "--fit moves expert tensors" in decision.reason
