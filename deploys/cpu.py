"""CPU: governor and energy-performance preference now, and at boot where tuned is not wanted.

With ``tuned: true`` the llmtune tuned profile persists them (deploys/power.py); otherwise
systemd-tmpfiles does. Also exports the P-core list (``/etc/llmtune/cpu.env``) that the
llama-server unit pins to. Verified by CPU001, CPU002 and CPU004.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from llmtune.facts.cpu import CpuFreq, CpuTopology, format_cpulist
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.original import record_original
from llmtune.planner.ownership import TMPFILES, cpu_owner

CPUFREQ = "/sys/devices/system/cpu/cpu*/cpufreq"
CPU_TMPFILES = "/etc/tmpfiles.d/llmtune-cpu.conf"
CPU_ENV = "/etc/llmtune/cpu.env"


def _write_all(file: str, value: str) -> str:
    # Every CPU that has the file; a missing one (an offline CPU) is not an error.
    return f'for f in {CPUFREQ}/{file}; do [ -w "$f" ] && echo {value} > "$f"; done; true'


@deploy("llmtune cpu")
def cpu() -> None:
    settings = settings_of(host.data)
    freq = host.get_fact(CpuFreq)
    topology = host.get_fact(CpuTopology)
    record_original(
        "cpu",
        {
            "governor": {str(c.cpu): c.governor for c in freq.cpus if c.governor},
            "epp": {str(c.cpu): c.epp for c in freq.cpus if c.epp},
        },
    )

    pcores = format_cpulist(topology.pcores)
    threads = topology.pcore_physical_cores
    files.put(
        name="Export the P-cores for the llama-server unit",
        src=StringIO(
            "# Written by llmtune (deploys/cpu.py): the CPUs inference runs on.\n"
            f"LLMTUNE_PCORES={pcores}\nLLMTUNE_PCORE_THREADS={threads}\n"
        ),
        dest=CPU_ENV,
        mode="644",
        create_remote_dir=True,
    )

    if not freq.available:
        host.noop("no cpufreq on this host (a VM, or firmware-owned clocks): nothing to set")
        return
    if any(c.governor != settings.cpu_governor for c in freq.cpus if c.governor):
        server.shell(
            name=f"CPU governor {settings.cpu_governor} now",
            commands=[_write_all("scaling_governor", settings.cpu_governor)],
        )
    if any(c.epp != settings.cpu_epp for c in freq.cpus if c.epp):
        server.shell(
            name=f"CPU energy-performance preference {settings.cpu_epp} now",
            commands=[_write_all("energy_performance_preference", settings.cpu_epp)],
        )
    if cpu_owner(settings) == TMPFILES:
        files.put(
            name="CPU governor and EPP at every boot (systemd-tmpfiles)",
            src=StringIO(
                "# Written by llmtune\n"
                f"w {CPUFREQ}/scaling_governor - - - - {settings.cpu_governor}\n"
                f"w {CPUFREQ}/energy_performance_preference - - - - {settings.cpu_epp}\n"
            ),
            dest=CPU_TMPFILES,
            mode="644",
        )
    else:
        files.file(name="No second owner for governor and EPP", path=CPU_TMPFILES, present=False)


run_if_deploy_file(__file__, cpu)
