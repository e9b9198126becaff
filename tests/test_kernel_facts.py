"""Kernel facts (modules, modules at boot, command line) over recorded trees and on this VM."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import FIXTURES, read_fact

from llmtune.facts.kernel import (
    KernelCmdline,
    KernelModules,
    ModulesLoadConfig,
    ModulesLoadValue,
    parse_cmdline,
)

REC = FIXTURES / "recorded" / "gpu"
H100 = REC / "h100-vm"
VM = REC / "debian12-vm"


def test_h100_modules_through_the_real_command(tree) -> None:
    root = tree(
        {
            "/proc/modules": (H100 / "proc-modules.txt").read_text(),
            "/sys/module/nvidia/version": (H100 / "sys-module-nvidia-version.txt").read_text(),
        }
    )
    value = read_fact(KernelModules, root=root)
    assert value.readable and value.nvidia_version == "580.159.04"
    assert value.loaded("nvidia") and value.loaded("nvidia_uvm") and value.loaded("nvidia-uvm")
    assert not value.loaded("nvidia_drm") and not value.loaded("nvidia_modeset")
    uvm = value.modules[0]
    # This kernel cannot unload modules: /proc/modules prints "-" for the reference count.
    assert (uvm.name, uvm.size, uvm.refcount, uvm.state) == ("nvidia_uvm", 1830912, None, "Live")
    # The recorded fact output (same command, run on the H100) parses the same way.
    recorded = KernelModules().process((H100 / "fact-kernel-modules.txt").read_text().splitlines())
    assert recorded == value


def test_no_proc_modules(tree) -> None:
    # This VM's kernel has no loadable modules: /proc/modules does not exist.
    value = read_fact(KernelModules, root=tree({}))
    assert not value.readable and not value.loaded("nvidia")
    recorded = KernelModules().process((VM / "fact-kernel-modules.txt").read_text().splitlines())
    assert recorded == value
    assert KernelModules().process([]) == value


def test_real_commands_on_this_host() -> None:
    modules = read_fact(KernelModules)
    if not Path("/proc/modules").exists():
        assert not modules.readable
    config = read_fact(ModulesLoadConfig)
    assert isinstance(config, ModulesLoadValue)
    cmdline = read_fact(KernelCmdline)
    assert cmdline.raw == Path("/proc/cmdline").read_text().strip()


def _debian_vm_tree(root: Path) -> None:
    """This VM's layout (modules-load-ls.txt): the modules.conf link to an absent /etc/modules."""
    for directory in ("etc/modules-load.d", "usr/lib/modules-load.d", "lib/modules-load.d"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    os.symlink("../modules", root / "etc/modules-load.d/modules.conf")


def test_modules_load_on_this_vms_layout_lists_nothing(tmp_path) -> None:
    _debian_vm_tree(tmp_path)
    assert read_fact(ModulesLoadConfig, root=str(tmp_path)) == ModulesLoadValue()


def test_modules_load_after_the_fix_and_through_etc_modules(tmp_path) -> None:
    _debian_vm_tree(tmp_path)
    # What GPU007's fix writes: `echo nvidia_uvm | sudo tee /etc/modules-load.d/nvidia-uvm.conf`.
    (tmp_path / "etc/modules-load.d/nvidia-uvm.conf").write_text("nvidia_uvm\n")
    # Debian's /etc/modules, read through the modules.conf link too.
    (tmp_path / "etc/modules").write_text("# /etc/modules\nnvidia-drm modeset=1\n")
    value = read_fact(ModulesLoadConfig, root=str(tmp_path))
    assert value.sources("nvidia_uvm") == ("/etc/modules-load.d/nvidia-uvm.conf",)
    assert value.sources("nvidia_drm") == (
        "/etc/modules-load.d/modules.conf",
        "/etc/modules",
    )
    assert not value.lists("nvidia")


def test_modules_load_override_and_mask(tmp_path) -> None:
    _debian_vm_tree(tmp_path)
    (tmp_path / "usr/lib/modules-load.d/nvidia.conf").write_text("nvidia_uvm\n")
    (tmp_path / "usr/lib/modules-load.d/other.conf").write_text("nvidia\n")
    (tmp_path / "run/modules-load.d").mkdir(parents=True)
    # An empty file of the same name in an earlier directory overrides the later one...
    (tmp_path / "run/modules-load.d/other.conf").write_text("")
    # ...and a link to /dev/null masks it.
    os.symlink("/dev/null", tmp_path / "etc/modules-load.d/nvidia.conf")
    value = read_fact(ModulesLoadConfig, root=str(tmp_path))
    assert not value.lists("nvidia_uvm") and not value.lists("nvidia")
    assert value.masked == ("/etc/modules-load.d/nvidia.conf",)
    assert "/run/modules-load.d/other.conf" in value.files


def test_modules_load_mkinitcpio(tmp_path) -> None:
    line = (REC / "public" / "mkinitcpio-modules-line.txt").read_text()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/mkinitcpio.conf").write_text("# vim:set ft=sh\n" + line)
    value = read_fact(ModulesLoadConfig, root=str(tmp_path))
    assert value.sources("nvidia_uvm") == ("/etc/mkinitcpio.conf",)
    assert {"nvidia", "nvidia_modeset", "nvidia_drm"} <= set(value.modules)


def test_cmdline_of_both_vms(tree) -> None:
    for host in (H100, VM):
        text = (host / "proc-cmdline.txt").read_text()
        value = read_fact(KernelCmdline, root=tree({"/proc/cmdline": text}))
        assert value == parse_cmdline(text)
        assert value.get("console") == "ttyS0" and value.get("quiet") is None
        assert value.has("quiet") and not value.has("transparent_hugepage")
        assert value.get("mitigations") == "auto,no_guest_host,no_guest_guest"
        # Words after "--" go to init, not to the kernel.
        assert value.init_args[0] == "--firecracker-init" and not value.has("--addr")
    h100 = parse_cmdline((H100 / "proc-cmdline.txt").read_text())
    # Only the first "=" splits: pci=realloc=off is pci -> "realloc=off".
    assert h100.get("pci") == "realloc=off"
    assert h100.get("fc-dmapin") == "0xeebe0000,0x3000,0xeebf0000"  # "-" and "_" compare equal


def test_cmdline_unreadable_and_empty(tree) -> None:
    value = read_fact(KernelCmdline, root=tree({}))
    assert value.raw is None and value.params == {}
    assert KernelCmdline().process([]).raw is None
