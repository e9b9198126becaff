"""What differs between the distros llmtune supports: packages, tuned layout, tuned-ppd.

Pure: decided from the HostInfo fact (os-release), so deploys and tests share one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.facts.host import HostInfoValue
from llmtune.facts.tuned import NEW_LAYOUT, OLD_LAYOUT


class UnsupportedPlatform(ValueError):
    pass


@dataclass(frozen=True)
class Platform:
    family: str  # "debian" (Debian, Ubuntu), "fedora", "arch" (Arch, CachyOS)
    # tuned-ppd: the power-profiles API shim that replaces power-profiles-daemon on desktops.
    tuned_ppd: bool
    # Where this distro's tuned reads profiles: /etc/tuned (< 2.23) or /etc/tuned/profiles.
    tuned_profile_root: str

    @property
    def tuned_packages(self) -> tuple[str, ...]:
        return ("tuned", "tuned-ppd") if self.tuned_ppd else ("tuned",)

    @property
    def build_packages(self) -> tuple[str, ...]:
        """What building llama.cpp needs (python3 writes the build record)."""
        if self.family == "debian":
            return ("cmake", "ninja-build", "g++", "git", "ccache", "python3")
        if self.family == "fedora":
            return ("cmake", "ninja-build", "gcc-c++", "git", "ccache", "python3")
        return ("cmake", "ninja", "gcc", "git", "ccache", "python")

    @property
    def cuda_toolkit_packages(self) -> tuple[str, ...]:
        """The distro's own CUDA toolkit (only installed when the settings ask for it)."""
        if self.family == "debian":
            return ("nvidia-cuda-toolkit",)
        if self.family == "fedora":
            return ("cuda",)  # from NVIDIA's repository, which the owner must have enabled
        return ("cuda",)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def platform_for(host: HostInfoValue) -> Platform:
    """The platform of a host, from /etc/os-release (ID, ID_LIKE, VERSION_ID)."""
    ids = (host.distro_id, *host.distro_like)
    version = _version(host.distro_version)
    if host.distro_id == "debian":
        # Debian 12 ships tuned 2.20 without tuned-ppd; Debian 13 ships 2.25 with it.
        new = version >= (13,) or not version  # testing/sid have no VERSION_ID
        return Platform("debian", new, NEW_LAYOUT[0] if new else OLD_LAYOUT[0])
    if host.distro_id == "ubuntu":
        # Ubuntu 22.04 (tuned 2.15) and 24.04 (2.21): no tuned-ppd; 24.10 on have it (2.24+).
        new = version >= (24, 10)
        return Platform("debian", new, NEW_LAYOUT[0] if new else OLD_LAYOUT[0])
    if host.distro_id == "fedora" or "fedora" in ids:
        # tuned-ppd is Fedora's default power daemon from 41; tuned there is >= 2.24.
        return Platform("fedora", True, NEW_LAYOUT[0])
    if host.distro_id in ("arch", "cachyos") or "arch" in ids:
        return Platform("arch", True, NEW_LAYOUT[0])
    raise UnsupportedPlatform(
        f"{host.distro_name or host.distro_id or 'unknown distro'}: llmtune supports Debian "
        "12/13, Ubuntu 22.04/24.04, Fedora and Arch/CachyOS"
    )
