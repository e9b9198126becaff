"""tuned facts: the active profile, the profile include graph and tuned-ppd's profile mapping.

``tuned-adm active`` exits 0 and names the *preset* profile when the daemon is stopped, so its
text (not its status) tells the cases apart. The include graph lets a pure function decide
whether a profile is, or includes, throughput-performance (a custom ``llmtune`` profile with
``include=throughput-performance`` does). tuned-ppd matters because at every start it switches
tuned to the profile that ``/etc/tuned/ppd.conf`` maps its saved base profile to.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmtune.facts.probe import (
    FileValues,
    LlmtuneFact,
    c_locale,
    join,
    parse_grep_h,
    parse_tool,
    read_files,
    section,
    split_sections,
    sysroot,
    tool,
)

THROUGHPUT_PERFORMANCE = "throughput-performance"

# Profile directories, highest priority first. tuned >= 2.23 reads only the "profiles"
# subdirectories; older tuned (Debian 12: 2.20) keeps profiles directly under /etc/tuned and
# /usr/lib/tuned. /etc overrides /usr/lib for a profile of the same name.
NEW_LAYOUT = ("/etc/tuned/profiles", "/usr/lib/tuned/profiles")
OLD_LAYOUT = ("/etc/tuned", "/usr/lib/tuned")
STATE_FILES = (
    "/etc/tuned/active_profile",
    "/etc/tuned/profile_mode",
    "/etc/tuned/ppd.conf",
    "/etc/tuned/ppd_base_profile",
)
# Only section headers and include lines are needed from the profiles: the [main] include.
_PROFILE_GREP = r"^[[:space:]]*(\[|include[[:space:]]*=)"
# tuned splits include on commas and semicolons (tuned/profiles/loader.py).
_INCLUDE_SPLIT = re.compile(r"\s*[,;]\s*")
# ${f:virt_check:IN_VM:ON_METAL} picks one of two profiles depending on virtualization.
_VIRT_CHECK = re.compile(r"^\$\{f:virt_check:([^:}]+):([^:}]+)\}$")


@dataclass(frozen=True)
class TunedProfile:
    """One profile directory: ``TunedProfile("virtual-guest", "/usr/lib/tuned",
    ("throughput-performance",))``; ``includes`` are the [main] include entries as written."""

    name: str
    location: str
    includes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PpdConfig:
    """tuned-ppd's mapping from power-profiles-daemon profiles to tuned profiles.

    Example (Debian 13 as installed)::

        PpdConfig(default="balanced", base_profile="balanced",
                  profiles=(("power-saver", "powersave"), ("balanced", "balanced"),
                            ("performance", "throughput-performance")),
                  battery=(("balanced", "balanced-battery"),))
    """

    default: str = ""
    base_profile: str = ""
    profiles: tuple[tuple[str, str], ...] = ()
    battery: tuple[tuple[str, str], ...] = ()

    def tuned_profile_for(self, ppd_profile: str) -> str | None:
        return dict(self.profiles).get(ppd_profile)

    @property
    def startup_ppd_profile(self) -> str:
        """The ppd profile tuned-ppd applies when it starts: the saved base, else the default."""
        return self.base_profile or self.default or "balanced"

    @property
    def startup_profile(self) -> str | None:
        """The tuned profile tuned-ppd switches to at its start (on AC power)."""
        return self.tuned_profile_for(self.startup_ppd_profile)


@dataclass(frozen=True)
class TunedStateValue:
    """Example (Debian 12 with tuned 2.20 running the llmtune profile)::

        TunedStateValue(available=True, reason="", daemon_running=True,
                        active_profile="llmtune", preset_profile="", saved_profile="llmtune",
                        profile_mode="manual", layout="/etc/tuned",
                        profiles=(TunedProfile("llmtune", "/etc/tuned",
                                               ("throughput-performance",)), ...),
                        ppd=None)

    ``available`` is False when tuned-adm is missing or failed (``reason`` says which);
    ``active_profile`` is "" when tuned has none, ``preset_profile`` is what tuned-adm names
    when the daemon is not running; ``ppd`` is None without /etc/tuned/ppd.conf.
    """

    available: bool = False
    reason: str = ""
    daemon_running: bool = False
    active_profile: str = ""
    preset_profile: str = ""
    saved_profile: str = ""
    profile_mode: str = ""
    layout: str = ""
    profiles: tuple[TunedProfile, ...] = ()
    ppd: PpdConfig | None = None

    @property
    def active_profiles(self) -> tuple[str, ...]:
        """tuned can run several profiles at once (``tuned-adm profile a b``): their names."""
        return tuple(self.active_profile.split())

    def locations(self) -> tuple[str, ...]:
        return NEW_LAYOUT if self.layout == NEW_LAYOUT[1] else OLD_LAYOUT

    def find_profile(self, name: str, skip: Iterable[TunedProfile] = ()) -> TunedProfile | None:
        """The profile tuned loads for ``name``: /etc first, skipping files already loaded."""
        skipped = set(skip)
        for location in self.locations():
            for profile in self.profiles:
                if (profile.name, profile.location) == (name, location) and profile not in skipped:
                    return profile
        return None


def include_path(
    value: TunedStateValue, name: str, target: str = THROUGHPUT_PERFORMANCE
) -> tuple[str, ...] | None:
    """The include chain from ``name`` to ``target`` (``("llmtune", "throughput-performance")``),
    or None when ``name`` neither is nor (transitively) includes ``target``.

    A ``${f:virt_check:A:B}`` include counts only when both A and B reach the target, since the
    answer depends on the host's virtualization.
    """
    return _path(value, name, target, ())


def _path(
    value: TunedStateValue, name: str, target: str, loaded: tuple[TunedProfile, ...]
) -> tuple[str, ...] | None:
    if name == target:
        return (name,)
    profile = value.find_profile(name, loaded)
    if profile is None:
        return None
    for entry in profile.includes:
        alternatives = _alternatives(entry)
        paths = [_path(value, alt, target, (*loaded, profile)) for alt in alternatives]
        if alternatives and all(path is not None for path in paths):
            return (name, *(paths[0] or ()))
    return None


def _alternatives(entry: str) -> tuple[str, ...]:
    entry = entry.strip()
    match = _VIRT_CHECK.match(entry)
    if match:
        return (match.group(1).strip(), match.group(2).strip())
    # "-name" is a conditional include (skipped when missing); other variables cannot be resolved.
    entry = entry.removeprefix("-")
    if not entry or "$" in entry or "/" in entry:
        return ()
    return (entry,)


def includes_throughput_performance(value: TunedStateValue, name: str) -> bool:
    return include_path(value, name) is not None


def parse_tuned_adm_active(lines: Sequence[str]) -> tuple[bool, str, str]:
    """``tuned-adm active`` text -> (daemon running, active profile, preset profile)."""
    active = preset = ""
    running = True
    for line in lines:
        text = line.strip()
        if text.startswith("Current active profile:"):
            active = text.partition(":")[2].strip()
        elif text.startswith("Preset profile:"):
            preset = text.partition(":")[2].strip()
        elif text.startswith("Cannot talk to TuneD daemon") or "daemon is not running" in text:
            running = False
    return running, active, preset


def _strip_comment(text: str) -> str:
    return text.split("#", 1)[0].strip()


def _location(directory: str) -> str | None:
    """The profile directory a path lies in, whatever root the files were read under."""
    for location in (*NEW_LAYOUT, *OLD_LAYOUT):
        if directory == location or directory.endswith(location):
            return location
    return None


def _by_suffix(files: FileValues, path: str) -> str | None:
    """A file read under any root: paths are printed with the root the command was given."""
    for printed, lines in files.values.items():
        if printed == path or printed.endswith(path):
            return "\n".join(lines)
    return None


def parse_profiles(lines: Iterable[str]) -> tuple[TunedProfile, ...]:
    """Parse ``grep -H`` of headers and include lines of ``<dir>/<name>/tuned.conf`` files."""
    found: dict[tuple[str, str], list[str]] = {}
    sections: dict[tuple[str, str], str] = {}
    for path, lines_of_file in parse_grep_h(lines).values.items():
        directory, _, filename = path.rpartition("/")
        parent, _, name = directory.rpartition("/")
        location = _location(parent)
        if filename != "tuned.conf" or location is None or not name:
            continue
        key = (location, name)
        includes = found.setdefault(key, [])
        for line in lines_of_file:
            text = _strip_comment(line)
            if text.startswith("["):
                sections[key] = text.strip("[]").strip()
            elif sections.get(key, "main") == "main" and text.startswith("include"):
                entries = text.partition("=")[2].strip()
                includes.extend(e for e in _INCLUDE_SPLIT.split(entries) if e)
    return tuple(
        TunedProfile(name, location, tuple(inc)) for (location, name), inc in found.items()
    )


def parse_ppd_conf(text: str | None, base_profile: str | None) -> PpdConfig | None:
    if text is None:
        return None
    current = ""
    main: dict[str, str] = {}
    maps: dict[str, list[tuple[str, str]]] = {"profiles": [], "battery": []}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            current = stripped.strip("[]").strip()
            continue
        key, sep, val = stripped.partition("=")
        if not sep:
            continue
        if current == "main":
            main[key.strip()] = val.strip()
        elif current in maps:
            maps[current].append((key.strip(), val.strip()))
    return PpdConfig(
        default=main.get("default", ""),
        base_profile=(base_profile or "").strip(),
        profiles=tuple(maps["profiles"]),
        battery=tuple(maps["battery"]),
    )


class TunedState(LlmtuneFact[TunedStateValue]):
    """tuned's active profile, its profiles' includes, and tuned-ppd's mapping."""

    def command(self, root: str = "") -> str:
        confs = [
            shlex.quote(sysroot(root, location)) + "/*/tuned.conf"
            for location in (*NEW_LAYOUT, *OLD_LAYOUT)
        ]
        grep = f"grep -s -H -E {shlex.quote(_PROFILE_GREP)} {' '.join(confs)} 2>/dev/null; true"
        return c_locale(
            join(
                section("active", tool("tuned-adm", "tuned-adm active")),
                section("profiles", grep),
                section("files", read_files(sysroot(root, path) for path in STATE_FILES)),
            )
        )

    def process(self, output: list[str]) -> TunedStateValue:
        parts = split_sections(output)
        active = parse_tool(parts.get("active", []))
        profiles = parse_profiles(parts.get("profiles", []))
        files = parse_grep_h(parts.get("files", []))
        layout = (
            NEW_LAYOUT[1]
            if any(p.location == NEW_LAYOUT[1] for p in profiles)
            else OLD_LAYOUT[1]
            if profiles
            else ""
        )

        def first_line(path: str) -> str:
            text = _by_suffix(files, path)
            return text.splitlines()[0].strip() if text else ""

        running, current, preset = parse_tuned_adm_active(active.lines)
        # "No current active profile." exits 1 but is an answer; so is the daemon-down text.
        answered = bool(current or preset) or any(
            line.startswith("No current active profile") for line in active.lines
        )
        available = not active.missing and (active.ok or answered)
        reason = ""
        if not available:
            reason = "tuned-adm " + (
                active.brief() if active.lines or active.missing else "no output"
            )
        return TunedStateValue(
            available=available,
            reason=reason,
            daemon_running=available and running,
            active_profile=current if available and running else "",
            preset_profile=preset,
            saved_profile=first_line("/etc/tuned/active_profile"),
            profile_mode=first_line("/etc/tuned/profile_mode"),
            layout=layout,
            profiles=profiles,
            ppd=parse_ppd_conf(
                _by_suffix(files, "/etc/tuned/ppd.conf"), first_line("/etc/tuned/ppd_base_profile")
            ),
        )


_VERIFY_FAILED = re.compile(r"verify: failed: (.*)$")


def verify_failures(log_lines: Iterable[str]) -> list[str]:
    """What ``tuned-adm verify`` found unapplied, from tuned.log's ``verify: failed:`` lines.

    Only the lines after the last "verifying profile(s)" entry count: the log keeps every run.
    """
    lines = list(log_lines)
    start = max((i for i, line in enumerate(lines) if "verifying profile(s)" in line), default=-1)
    failures = []
    for line in lines[start + 1 :]:
        match = _VERIFY_FAILED.search(line)
        if match:
            failures.append(match.group(1).strip())
    return failures
