"""Installing and removing packages with the host's own package manager, chosen from the platform
table rather than probed during the run.

pyinfra's generic ``server.packages`` probes for a package manager while the run executes; when a
host vanishes at that moment it raises "No system package manager found", which pyinfra 3.10 does
not contain to that host: the whole run stops. Choosing from the platform (read before the run)
keeps a lost host's failure its own.
"""

from __future__ import annotations

from pyinfra.operations import apt, dnf, pacman

from llmtune.platform import Platform


def packages(name: str, platform: Platform, names: list[str], present: bool = True) -> None:
    if platform.family == "debian":
        apt.packages(name=name, packages=names, present=present)
    elif platform.family == "fedora":
        dnf.packages(name=name, packages=names, present=present)
    else:
        pacman.packages(name=name, packages=names, present=present)
