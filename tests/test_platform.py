"""The distro table, on os-release files recorded on real hosts."""

from __future__ import annotations

import pytest
from conftest import HOSTS

from llmtune.facts.host import HostInfoValue, parse_os_release
from llmtune.platform import UnsupportedPlatform, platform_for


def host_from(path) -> HostInfoValue:
    release = parse_os_release(path.read_text().splitlines())
    return HostInfoValue(
        distro_id=release.get("ID", ""),
        distro_like=tuple(release.get("ID_LIKE", "").split()),
        distro_version=release.get("VERSION_ID", ""),
        distro_name=release.get("PRETTY_NAME", ""),
    )


def test_ubuntu_2404_has_old_tuned_layout_and_no_ppd_shim() -> None:
    # misc.txt of the H100 VM holds its real /etc/os-release.
    platform = platform_for(host_from(HOSTS / "h100-ubuntu2404-vm" / "misc.txt"))
    assert platform.family == "debian" and not platform.tuned_ppd
    assert platform.tuned_profile_root == "/etc/tuned"
    assert platform.tuned_packages == ("tuned",)


def test_debian_12_and_13() -> None:
    d12 = platform_for(host_from(HOSTS / "debian12-vm-nogpu" / "misc.txt"))
    assert (d12.tuned_ppd, d12.tuned_profile_root) == (False, "/etc/tuned")
    d13 = platform_for(HostInfoValue(distro_id="debian", distro_version="13"))
    assert d13.tuned_ppd and d13.tuned_profile_root == "/etc/tuned/profiles"
    assert d13.tuned_packages == ("tuned", "tuned-ppd")


def test_fedora_arch_cachyos_and_unknown() -> None:
    assert platform_for(HostInfoValue(distro_id="fedora", distro_version="41")).family == "fedora"
    cachy = platform_for(HostInfoValue(distro_id="cachyos", distro_like=("arch",)))
    assert cachy.family == "arch" and cachy.tuned_ppd
    with pytest.raises(UnsupportedPlatform, match="supports Debian"):
        platform_for(HostInfoValue(distro_id="alpine", distro_name="Alpine Linux v3.20"))
