"""Which GPU processes belong to a graphical session (display servers, compositors, shells).

While one runs on the GPU it holds VRAM and GPU time that llama-server could use (seed 004 §7.4,
§6.2): the headless check (SYS001) and the VRAM check (GPU002) both ask this module.
"""

from __future__ import annotations

import re

from llmtune.facts.gpu import GpuProcess

# Display servers, compositors, desktop shells, greeters and the desktop helpers seen holding
# VRAM (nvidia-smi process names, compared by basename, case-insensitively). The one list of
# "graphics session" processes, shared by the headless and VRAM checks.
DISPLAY_PROCESSES: tuple[str, ...] = (
    # X and Wayland servers
    "Xorg",
    "X",
    "Xwayland",
    # Wayland compositors / window managers
    "gnome-shell",
    "mutter",
    "kwin_wayland",
    "kwin_x11",
    "kwin",
    "sway",
    "weston",
    "Hyprland",
    "gamescope",
    "cosmic-comp",
    "labwc",
    "wayfire",
    "river",
    "niri",
    "xfwm4",
    "cinnamon",
    "muffin",
    "marco",
    "budgie-wm",
    "enlightenment",
    "compiz",
    "picom",
    "compton",
    "openbox",
    "i3",
    # desktop shells, helpers and greeters
    "plasmashell",
    "plasma-keyboard",
    "xwaylandvideobridge",
    "sddm-greeter",
    "sddm-greeter-qt6",
    "lightdm-gtk-greeter",
    "gdm-wayland-session",
    "gdm-x-session",
)
_DISPLAY_NAMES = frozenset(name.lower() for name in DISPLAY_PROCESSES)


def process_basename(name: str) -> str:
    """``/usr/lib/xorg/Xorg`` -> ``Xorg``; nvidia-smi may cut a long path to ``...g/Xorg``."""
    base = name.strip().rsplit("/", 1)[-1]
    # The table shows no arguments, but a query may: keep the command word only.
    return re.split(r"\s", base, maxsplit=1)[0] if base else base


def is_display_process(process: GpuProcess) -> bool:
    return process_basename(process.name).lower() in _DISPLAY_NAMES
