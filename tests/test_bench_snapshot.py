"""The bench snapshot from real fact values: the H100 VM's recordings (its CUDA build's
build-info.json, nvidia-smi, nvcc, cpufreq, THP), public cpufreq and dmidecode trees, a recorded
tuned host; and the diff text `llmtune verify` prints."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from conftest import FIXTURES, HOSTS, make_tree, read_fact
from test_cpu_facts import ttar_tree
from test_memory_modules import AM5, read_with_stub
from test_systemd_state import fact_output

from llmtune.bench.snapshot import Snapshot, diff, same_commit, take_snapshot
from llmtune.facts.cpu import CpuFreq
from llmtune.facts.cuda import CudaToolkit
from llmtune.facts.gpu import parse_nvidia_gpus
from llmtune.facts.host import HostInfoValue
from llmtune.facts.llama import ROOT_DIR, LlamaBuilds, LlamaVersion
from llmtune.facts.memory import THP_DIR, MemoryModules, Thp
from llmtune.facts.probe import MARK
from llmtune.facts.tuned import TunedState

RECORDED = FIXTURES / "recorded"
PUBLIC = FIXTURES / "public"
H100_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
H100_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_CUDA=ON",
    "-DCMAKE_CUDA_ARCHITECTURES=90",
    "-DGGML_CUDA_GRAPHS=ON",
    f"-DLLAMA_BUILD_COMMIT={H100_COMMIT}",
    "-DLLAMA_BUILD_NUMBER=0",
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def h100_builds(root: Path):
    """The H100's build as the deploy left it: builds/<id>/build-info.json and ``current``."""
    base = root / ROOT_DIR.lstrip("/")
    build = base / "builds" / "0c1e570-ef071a1f58"
    build.mkdir(parents=True)
    (build / "build-info.json").write_text(
        (RECORDED / "llama-build" / "build-info-h100.json").read_text()
    )
    os.symlink("builds/0c1e570-ef071a1f58", base / "current")
    return read_fact(LlamaBuilds, root=str(root))


def thp_of(tmp_path: Path, host: str):
    """The Thp fact over the host's recorded sysfs files (thp.txt: enabled, then defrag)."""
    enabled, defrag = lines(HOSTS / host / "thp.txt")
    files = {f"{THP_DIR}/enabled": enabled + "\n", f"{THP_DIR}/defrag": defrag + "\n"}
    return read_fact(Thp, root=str(make_tree(tmp_path / f"thp-{host}", files)))


def kernel_of(host: str) -> HostInfoValue:
    """The kernel release from the host's recorded ``uname -a`` ("Linux vm 6.18.44-... #1 ...")."""
    uname = next(ln for ln in lines(HOSTS / host / "misc.txt") if ln.startswith("Linux "))
    return HostInfoValue(kernel=uname.split()[2])


# dmidecode on these VMs: no SMBIOS table (the same text on the H100 and the Debian VM).
NO_DMI_TABLE = RECORDED / "memory" / "memorymodules-fact-output-root-vm.txt"


def h100_facts(tmp_path: Path) -> dict[str, object]:
    """take_snapshot's arguments from what was recorded on the H100 VM."""
    return {
        "builds": h100_builds(tmp_path / "root"),
        "gpus": parse_nvidia_gpus(lines(RECORDED / "gpu" / "h100-vm" / "fact-nvidia-gpus.txt")),
        "cuda": CudaToolkit().process(lines(RECORDED / "cuda" / "fact-cuda-toolkit.txt")),
        "host": kernel_of("h100-ubuntu2404-vm"),
        "cpufreq": CpuFreq().process(
            lines(RECORDED / "cpu" / "h100-ubuntu2404-vm" / "fact-CpuFreq.txt")
        ),
        "thp": thp_of(tmp_path, "h100-ubuntu2404-vm"),
        # tuned was not recorded there: the fact's value for no output.
        "tuned": TunedState().process([]),
        "modules": MemoryModules().process(lines(NO_DMI_TABLE)),
    }


def h100_snapshot(tmp_path: Path) -> Snapshot:
    return take_snapshot(**h100_facts(tmp_path))  # type: ignore[arg-type]


def debian_snapshot(tmp_path: Path) -> Snapshot:
    """The Debian 12 VM (no GPU, no nvcc) with its CPU build from a git checkout, which has no
    build-info.json: the commit comes from --version."""
    version = LlamaVersion().process(
        [*lines(FIXTURES / "llama.cpp" / "llama-server-version-0c1e570-cpu.txt"), f"{MARK}rc 0"]
    )
    return take_snapshot(
        builds=read_fact(LlamaBuilds, root=str(tmp_path / "no-builds")),
        gpus=parse_nvidia_gpus(lines(RECORDED / "gpu" / "debian12-vm" / "fact-nvidia-gpus.txt")),
        cuda=CudaToolkit().process([f"{MARK}missing nvcc"]),
        host=kernel_of("debian12-vm-nogpu"),
        cpufreq=CpuFreq().process(
            lines(RECORDED / "cpu" / "debian12-vm" / "idle" / "fact-CpuFreq.txt")
        ),
        thp=thp_of(tmp_path, "debian12-vm-nogpu"),
        tuned=TunedState().process([]),
        modules=MemoryModules().process(lines(NO_DMI_TABLE)),
        version=version,
    )


def test_h100_snapshot_from_its_recordings(tmp_path: Path) -> None:
    assert h100_snapshot(tmp_path) == Snapshot(
        llama_commit=H100_COMMIT,
        build_id="0c1e570-ef071a1f58",
        cmake_flags=H100_FLAGS,
        gpu="NVIDIA H100 80GB HBM3",
        driver="580.159.04",
        cuda="13.0",
        kernel="6.18.44-fc-v657-gpu",
        governor="",  # a VM: no cpufreq
        epp="",
        thp="madvise",
        thp_defrag="madvise",
        tuned="",
        ram_speed="",  # a VM: no DMI table
    )


def desktop_facts(tmp_path: Path) -> dict[str, object]:
    """The H100's facts with the parts a bare-metal host reports: node_exporter's cpufreq tree
    (intel_pstate, powersave), a laptop's EPP values, a tuned host, an AM5 desktop's DIMMs."""
    facts = h100_facts(tmp_path)
    sys_root = ttar_tree(
        PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-cpufreq.ttar", tmp_path
    )
    facts["cpufreq"] = read_fact(CpuFreq, root=str(sys_root))
    facts["tuned"] = TunedState().process(
        fact_output("debian12-nspawn", "fact-headless-tuned-tp", "TunedState")
    )
    facts["modules"] = read_with_stub(tmp_path, AM5)
    return facts


def test_debian_vm_snapshot(tmp_path: Path) -> None:
    assert debian_snapshot(tmp_path) == Snapshot(
        llama_commit="0c1e570", kernel="6.18.44-fc-v669", thp="madvise", thp_defrag="madvise"
    )
    assert diff(debian_snapshot(tmp_path / "a"), debian_snapshot(tmp_path / "b")) == [
        "llama.cpp unchanged"
    ]


def test_bare_metal_parts_of_the_snapshot(tmp_path: Path) -> None:
    snap = take_snapshot(**desktop_facts(tmp_path))  # type: ignore[arg-type]
    assert (snap.governor, snap.epp) == ("powersave", "")
    assert snap.tuned == "throughput-performance"
    assert snap.ram_speed == "4800 MT/s"
    # Only the service's CPUs count: CPUs the tree does not have leave nothing to report.
    pinned = take_snapshot(**desktop_facts(tmp_path / "b"), cpus=(40, 41))  # type: ignore[arg-type]
    assert pinned.governor == ""


def test_epp_values_of_a_laptop(tree, tmp_path: Path) -> None:
    epps = lines(
        PUBLIC / "cpufreq-epp-balance-power-12cpu" / "cat-energy_performance_preference.txt"
    )
    root = tree(
        {
            f"/sys/devices/system/cpu/cpu{n}/cpufreq/energy_performance_preference": f"{epp}\n"
            for n, epp in enumerate(epps)
        }
    )
    facts = h100_facts(tmp_path)
    facts["cpufreq"] = read_fact(CpuFreq, root=root)
    assert take_snapshot(**facts).epp == "balance_power"  # type: ignore[arg-type]


def test_commit_from_version_without_build_info(tmp_path: Path) -> None:
    # A build llmtune did not make: no build-info.json; --version of the tarball CPU build.
    facts = h100_facts(tmp_path)
    facts["builds"] = read_fact(LlamaBuilds, root=str(tmp_path / "empty"))
    tarball = FIXTURES / "llama.cpp" / "llama-server-version-0c1e570-tarball-cpu.txt"
    version = LlamaVersion().process([*lines(tarball), f"{MARK}rc 0"])
    snap = take_snapshot(**facts, version=version)  # type: ignore[arg-type]
    assert snap.llama_commit == "0c1e570" and snap.build_id == "" and snap.cmake_flags == ()
    # The same commit as the full SHA of build-info.json: no change to report.
    assert same_commit(snap.llama_commit, H100_COMMIT)
    assert diff(h100_snapshot(tmp_path / "h"), snap)[0] == "llama.cpp unchanged"


def test_json_round_trip_keeps_every_key(tmp_path: Path) -> None:
    snap = h100_snapshot(tmp_path)
    data = snap.to_dict()
    assert data["cmake_flags"] == list(H100_FLAGS)
    assert Snapshot.from_dict(data) == snap
    # Keys a later llmtune adds are dropped; missing ones read as "".
    assert Snapshot.from_dict({"driver": "580.159.04", "numa": "off"}) == Snapshot(
        driver="580.159.04"
    )


# --- diff -------------------------------------------------------------------------------------


def test_diff_names_llama_cpp_and_the_driver_even_unchanged(tmp_path: Path) -> None:
    before = h100_snapshot(tmp_path)
    assert diff(before, before) == ["llama.cpp unchanged", "driver unchanged"]
    after = replace(before, llama_commit="abcdef1234567890abcdef1234567890abcdef12")
    assert diff(before, after) == ["llama.cpp 0c1e570 -> abcdef1", "driver unchanged"]
    # A CPU host has no driver to name.
    cpu = replace(before, gpu="", driver="", cuda="")
    assert diff(cpu, cpu) == ["llama.cpp unchanged"]


def test_diff_of_flags_leaves_out_what_restates_the_commit(tmp_path: Path) -> None:
    before = h100_snapshot(tmp_path)
    flags = tuple(
        "-DGGML_CUDA_GRAPHS=OFF" if f == "-DGGML_CUDA_GRAPHS=ON" else f for f in before.cmake_flags
    )
    after = replace(before, cmake_flags=flags, build_id="0c1e570-1234567890")
    # The build id is made of the commit and the flags: not named again.
    assert diff(before, after) == [
        "llama.cpp unchanged",
        "CMake flags -DGGML_CUDA_GRAPHS=ON -> -DGGML_CUDA_GRAPHS=OFF",
        "driver unchanged",
    ]
    new_commit = tuple(f.replace(H100_COMMIT, "abcdef1") for f in before.cmake_flags)
    moved = replace(before, llama_commit="abcdef1", cmake_flags=new_commit, build_id="abcdef1-x")
    assert diff(before, moved) == ["llama.cpp 0c1e570 -> abcdef1", "driver unchanged"]


def test_diff_of_a_host_whose_tuning_changed(tmp_path: Path) -> None:
    before = take_snapshot(**desktop_facts(tmp_path))  # type: ignore[arg-type]
    after = h100_snapshot(tmp_path / "after")
    after = replace(after, driver="590.44.01", kernel="6.18.50-fc-v700-gpu", thp="always")
    assert diff(before, after) == [
        "llama.cpp unchanged",
        "driver 580.159.04 -> 590.44.01",
        "kernel 6.18.44-fc-v657-gpu -> 6.18.50-fc-v700-gpu",
        "governor powersave -> none",
        "THP madvise -> always",
        "tuned profile throughput-performance -> none",
        "RAM 4800 MT/s -> none",
    ]
