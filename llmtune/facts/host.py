"""Who and what the host is: name, distro, kernel, virtualization, init system, our privileges."""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.facts.probe import (
    LlmtuneFact,
    c_locale,
    join,
    parse_tool,
    section,
    split_sections,
    tool,
)

# systemd-detect-virt's names for containers (its other answers are hypervisors).
CONTAINERS = frozenset(
    {"docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn", "openvz", "rkt", "wsl", "proot"}
)


@dataclass(frozen=True)
class HostInfoValue:
    """Example::

    HostInfoValue(hostname="vm", kernel="6.18.44-fc-v669", distro_id="debian", distro_version="12",
                  distro_name="Debian GNU/Linux 12 (bookworm)", virtualization="kvm",
                  pid1="systemd", uid=0)
    """

    hostname: str = ""
    kernel: str = ""
    distro_id: str = ""
    distro_like: tuple[str, ...] = ()
    distro_version: str = ""
    distro_name: str = ""
    # systemd-detect-virt's answer ("none" on bare metal, "kvm", "systemd-nspawn"...), or "" when
    # the tool is missing.
    virtualization: str = ""
    # The command name of PID 1 ("systemd" on a systemd host).
    pid1: str = ""
    uid: int | None = None

    @property
    def systemd(self) -> bool:
        return self.pid1 == "systemd"

    @property
    def root(self) -> bool:
        return self.uid == 0

    @property
    def virtualized(self) -> bool:
        return self.virtualization not in ("", "none")

    @property
    def container(self) -> bool:
        """In a container the kernel (modules, cpufreq, DMI) is the host's, not ours to tune."""
        return self.virtualization in CONTAINERS


def parse_os_release(lines: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            data[key] = value
    return data


class HostInfo(LlmtuneFact[HostInfoValue]):
    """The host's identity and the facts other checks use to decide what applies."""

    def command(self) -> str:
        return c_locale(
            join(
                section("hostname", "uname -n"),
                section("kernel", "uname -r"),
                section(
                    "os-release",
                    "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null; true",
                ),
                section("virt", tool("systemd-detect-virt", "systemd-detect-virt")),
                section("pid1", "cat /proc/1/comm 2>/dev/null; true"),
                section("uid", "id -u"),
            )
        )

    def process(self, output: list[str]) -> HostInfoValue:
        parts = split_sections(output)

        def first(name: str) -> str:
            return next((line.strip() for line in parts.get(name, []) if line.strip()), "")

        release = parse_os_release(parts.get("os-release", []))
        virt = parse_tool(parts.get("virt", []))
        # systemd-detect-virt prints "none" and exits 1 on bare metal: both are answers.
        virtualization = "" if virt.missing else next(iter(virt.lines), "").strip()
        uid = first("uid")
        return HostInfoValue(
            hostname=first("hostname"),
            kernel=first("kernel"),
            distro_id=release.get("ID", ""),
            distro_like=tuple(release.get("ID_LIKE", "").split()),
            distro_version=release.get("VERSION_ID", ""),
            distro_name=release.get("PRETTY_NAME", ""),
            virtualization=virtualization,
            pid1=first("pid1"),
            uid=int(uid) if uid.isdigit() else None,
        )
