"""SYS001 headless on recorded systemd hosts and real nvidia-smi process tables."""

from __future__ import annotations

from conftest import FIXTURES, HOSTS
from test_power_checks import SYSTEMD_HOST, VM_HOST
from test_systemd_state import fact_output, recorded_systemd

from llmtune.checks.display import DISPLAY_PROCESSES, is_display_process
from llmtune.checks.registry import CHECKS, FactUnavailable, FactValues
from llmtune.checks.system import headless
from llmtune.facts.gpu import GpuProcesses, GpuProcessesValue
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.facts.systemd import SystemdState, SystemdStateValue
from llmtune.findings import Outcome, Status
from llmtune.settings import HostSettings

KDE = FIXTURES / "public" / "nvidia-smi-rtx4080super-kde-desktop"


def nvidia_smi(path) -> GpuProcessesValue:
    """GpuProcesses parsing a real plain ``nvidia-smi`` output as its tool wrapper prints it."""
    return GpuProcesses().process([*path.read_text().splitlines(), "@@llmtune rc 0"])


H100_IDLE = nvidia_smi(HOSTS / "h100-ubuntu2404-vm" / "nvidia-smi.txt")
KDE_DESKTOP = nvidia_smi(KDE / "nvidia-smi.load.txt")


def sys001(
    host: HostInfoValue, systemd: SystemdStateValue, gpu: GpuProcessesValue | None
) -> Outcome:
    values: dict = {HostInfo: host, SystemdState: systemd}
    problems = {}
    if gpu is not None:
        values[GpuProcesses] = gpu
    else:
        problems[GpuProcesses] = FactUnavailable("GpuProcesses", "probe exited 1")
    return headless(FactValues(values, problems), HostSettings())


def headless_host() -> SystemdStateValue:
    return SystemdState().process(
        fact_output("debian12-nspawn", "fact-headless-tuned-tp", "SystemdState")
    )


def test_registered():
    check = CHECKS["SYS001"]
    assert (check.name, check.category) == ("headless", "system")
    assert GpuProcesses in check.facts


def test_display_process_names_from_a_real_desktop():
    assert KDE_DESKTOP.available
    shown = {p.name: is_display_process(p) for p in KDE_DESKTOP.processes}
    assert shown == {
        "/usr/bin/kwin_wayland": True,
        "/usr/bin/plasma-keyboard": True,
        "/usr/bin/Xwayland": True,
        "/usr/bin/plasmashell": True,
        "/usr/bin/xwaylandvideobridge": True,
        "ffmpeg": False,
    }
    assert "Xorg" in DISPLAY_PROCESSES and "gnome-shell" in DISPLAY_PROCESSES


def test_pass_headless_host_with_idle_gpu():
    assert H100_IDLE.available and H100_IDLE.processes == ()
    outcome = sys001(SYSTEMD_HOST, headless_host(), H100_IDLE)
    assert outcome.status == Status.PASS
    assert (
        outcome.observed == "default target multi-user.target; display manager lightdm.service off"
    )


def test_pass_without_gpu_process_list():
    outcome = sys001(SYSTEMD_HOST, headless_host(), None)
    assert outcome.status == Status.PASS and outcome.observed.endswith("(no GPU process list)")


def test_fail_compositor_holds_vram():
    # Systemd side headless, yet a desktop session (started by hand) holds VRAM.
    outcome = sys001(SYSTEMD_HOST, headless_host(), KDE_DESKTOP)
    assert outcome.status == Status.FAIL
    assert "5 display process(es) hold 352 MiB VRAM" in outcome.observed
    assert outcome.details[0] == "GPU0 pid 2165 C+G /usr/bin/kwin_wayland 25 MiB"
    assert len(outcome.details) == 5


def test_fail_display_manager_running(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian12-nspawn", "lightdm-active")
    outcome = sys001(SYSTEMD_HOST, systemd, H100_IDLE)
    assert outcome.status == Status.FAIL
    assert outcome.observed == (
        "default target graphical.target; display manager running: lightdm.service"
    )
    # The real unit, not the alias: `disable --now display-manager` left lightdm running.
    assert outcome.fix == (
        "sudo systemctl set-default multi-user.target"
        " && sudo systemctl disable --now lightdm.service"
        " && sudo systemctl isolate multi-user.target"
    )


def test_fail_display_manager_running_after_alias_removed(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian12-nspawn", "dm-alias-disabled-lightdm-running")
    outcome = sys001(SYSTEMD_HOST, systemd, None)
    assert outcome.status == Status.FAIL
    assert "disable --now lightdm.service" in outcome.fix


def test_fail_graphical_default_with_enabled_display_manager(tmp_path):
    # lightdm stopped by `isolate multi-user.target`, but enabled: it returns at the next boot.
    systemd = recorded_systemd(tmp_path, "debian12-nspawn", "isolated-multi-user-dm-enabled")
    outcome = sys001(SYSTEMD_HOST, systemd, H100_IDLE)
    assert outcome.status == Status.FAIL
    assert outcome.observed == (
        "default target graphical.target; display manager lightdm.service enabled"
    )


def test_warn_graphical_default_without_display_manager(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian13-nspawn", "bare")
    outcome = sys001(SYSTEMD_HOST, systemd, None)
    assert outcome.status == Status.WARN
    assert outcome.fix == "sudo systemctl set-default multi-user.target"


def test_fact_output_with_lightdm_active_on_multi_user_default():
    systemd = SystemdState().process(
        fact_output("debian12-nspawn", "fact-lightdm-active", "SystemdState")
    )
    outcome = sys001(SYSTEMD_HOST, systemd, H100_IDLE)
    assert outcome.status == Status.FAIL
    assert "display manager running: lightdm.service" in outcome.observed


def test_skip_without_systemd(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian12-vm-no-systemd", "")
    outcome = sys001(VM_HOST, systemd, H100_IDLE)
    assert outcome.status == Status.SKIP and "not systemd" in outcome.observed
