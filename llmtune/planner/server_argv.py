"""The llama-server command line of a plan, spelled as the installed binary expects.

Pure: a ``ServePlan``, the binary's parsed ``--help`` and its path go in; argv comes out. Flags
change between llama.cpp releases (``--no-mmap --mlock`` became ``-lm mlock``; ``-fa`` was a
switch and now takes on|off|auto; ``-ngl all`` is recent), so every flag is looked up in the
installed binary's own help. A decision the binary cannot express raises ``UnsupportedFlag``
naming the setting and the flag, before any unit is written. llama.cpp refuses unknown
arguments and reads no ``--flag=value``; the user's extra arguments are checked the same way.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

from llmtune.facts.cpu import format_cpulist
from llmtune.facts.llama import LlamaOption, LlamaServerHelpValue
from llmtune.planner.serve import Decision, ServePlan

# What older binaries take instead of -ngl all (any number above the layer count means all).
ALL_LAYERS_NUMBER = "999"
# Flags that would put a secret on the command line (readable by every local user via ps).
SECRET_FLAGS = ("--api-key",)
# llama.cpp reads these several times without overriding (comma lists accumulate).
REPEATABLE = ("--spec-type",)


class ArgvError(ValueError):
    """The plan or the settings cannot become this binary's command line."""

    def __init__(self, setting: str, key: str | None, flag: str, message: str) -> None:
        self.setting = setting
        self.key = key
        self.flag = flag
        where = f"{key} ({setting})" if key and key != setting else setting
        super().__init__(f"{where}: {flag}: {message}")


class UnsupportedFlag(ArgvError):
    """The installed llama-server does not accept the flag (or the value) a setting needs."""


def _unsupported(decision: Decision, flag: str, why: str) -> UnsupportedFlag:
    return UnsupportedFlag(decision.setting, decision.key, flag, why)


def _flag(help: LlamaServerHelpValue, decision: Decision, *aliases: str) -> str:
    """The first spelling of ``aliases`` the binary accepts."""
    spelled = help.spelling_for(*aliases)
    if spelled is None:
        raise _unsupported(decision, aliases[-1], "this llama-server does not accept it")
    return spelled


def _with_value(
    help: LlamaServerHelpValue, decision: Decision, aliases: Sequence[str], value: str
) -> list[str]:
    """``[flag, value]``, the value checked against the choices the help enumerates (each part
    of a comma list)."""
    flag = _flag(help, decision, *aliases)
    option = help.option(flag)
    choices = option.choices if option else ()
    bad = [part for part in value.split(",") if choices and part not in choices]
    if bad:
        why = f"this llama-server accepts {', '.join(choices)}"
        raise _unsupported(decision, f"{flag} {value}", why)
    return [flag, value]


# --- one renderer per decision --------------------------------------------------------------

Renderer = Callable[[Decision, ServePlan, LlamaServerHelpValue], list[str]]


def _nothing(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    return []


def _simple(*aliases: str) -> Renderer:
    def render(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
        if decision.value is None:
            return []
        return _with_value(help, decision, aliases, str(decision.value))

    return render


def _fit_off(help: LlamaServerHelpValue) -> list[str]:
    # Binaries from before --fit never fit: nothing to switch off.
    return ["--fit", "off"] if help.has("--fit") else []


def _all_layers(help: LlamaServerHelpValue, decision: Decision) -> list[str]:
    flag = _flag(help, decision, "-ngl", "--n-gpu-layers")
    option = help.option(flag)
    takes_all = option is not None and "'all'" in option.help
    return [flag, "all" if takes_all else ALL_LAYERS_NUMBER]


def _placement(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    if decision.value == "fit":
        return _with_value(help, decision, ("--fit",), "on")
    if decision.value == "gpu":
        return [*_fit_off(help), *_all_layers(help, decision)]
    return [*_fit_off(help), _flag(help, decision, "-ngl", "--n-gpu-layers"), "0"]


def context_tokens(plan: ServePlan) -> int:
    """-c: llama.cpp sizes the KV cache for -c and gives each slot -c / slots."""
    return int(plan.value("ctx") or 0) * int(plan.value("parallel") or 1)


def _ctx(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    # With --fit on, -c stops it from shortening the context: only when the user asked for one.
    if plan.placement == "fit" and not decision.from_settings:
        return _with_value(help, decision, ("--fit-ctx", "-fitc"), str(decision.value))
    return _with_value(help, decision, ("-c", "--ctx-size"), str(context_tokens(plan)))


def _fit_target(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    if plan.placement != "fit" or not isinstance(decision.value, tuple):
        return []  # the margin of the arithmetic only: --fit is off
    margins = [str(m) for m in decision.value]
    # One value is broadcast to every device.
    value = margins[0] if len(set(margins)) == 1 else ",".join(margins)
    return _with_value(help, decision, ("--fit-target", "-fitt"), value)


def _kv_cache(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    kv = str(decision.value)
    return [
        *_with_value(help, decision, ("-ctk", "--cache-type-k"), kv),
        *_with_value(help, decision, ("-ctv", "--cache-type-v"), kv),
    ]


def _flash_attn(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    flag = _flag(help, decision, "-fa", "--flash-attn")
    option = help.option(flag)
    if option is not None and not option.takes_value:
        # Older releases: a switch that means "on"; off is its absence.
        return [flag] if decision.value == "on" else []
    return _with_value(help, decision, (flag,), str(decision.value))


def _load_mode(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    if decision.value != "mlock":
        return []
    mode = help.option("-lm") or help.option("--load-mode")
    if mode is not None and not mode.removed and "mlock" in mode.choices:
        return [mode.spellings[0], "mlock"]
    if help.has("--no-mmap") and help.has("--mlock"):
        return ["--no-mmap", "--mlock"]  # before -lm/--load-mode
    raise _unsupported(decision, "--load-mode mlock", "neither it nor --no-mmap --mlock exist here")


def _api_key_file(decision: Decision, plan: ServePlan, help: LlamaServerHelpValue) -> list[str]:
    if decision.value is None:
        return []
    # Never falls back to --api-key: the key itself would be on the command line.
    return [_flag(help, decision, "--api-key-file"), str(decision.value)]


_RENDERERS: dict[str, Renderer] = {
    "model": _simple("-m", "--model"),
    "alias": _simple("-a", "--alias"),
    "placement": _placement,
    "ctx": _ctx,
    "fit_target": _fit_target,
    "kv_cache": _kv_cache,
    "flash_attn": _flash_attn,
    "ubatch": _simple("-ub", "--ubatch-size"),
    "threads": _simple("-t", "--threads"),
    "parallel": _simple("-np", "--parallel"),
    "load_mode": _load_mode,
    "mmproj": _simple("--mmproj", "-mm"),
    "spec_type": _simple("--spec-type"),
    "host": _simple("--host"),
    "port": _simple("--port"),
    "api_key_file": _api_key_file,
    # "cpus" (the unit's CPUAffinity=), "n_cpu_moe" (left to --fit) and "extra_args" (checked
    # below) have no flag of their own here.
}


# --- extra arguments ------------------------------------------------------------------------


def _options(
    args: Sequence[str], help: LlamaServerHelpValue, decision: Decision
) -> list[tuple[str, LlamaOption]]:
    """Walk ``args`` the way llama.cpp's parser does: a flag, then its value if it takes one.
    Every flag must be in the binary's --help (not removed), and ``--flag=value`` is refused as
    llama.cpp refuses it."""
    found: list[tuple[str, LlamaOption]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and "=" in arg:
            raise _unsupported(
                decision, arg, "llama-server reads no --flag=value; give the value as the next item"
            )
        option = help.option(arg) if arg.startswith("-") else None
        if option is None:
            raise _unsupported(decision, arg, "not an option of this llama-server (its --help)")
        if option.removed:
            raise _unsupported(decision, arg, option.help)
        if option.takes_value and i + 1 >= len(args):
            why = f"needs a value ({option.placeholder})"
            raise ArgvError(decision.setting, decision.key, arg, why)
        found.append((arg, option))
        i += 2 if option.takes_value else 1
    return found


def _checked_extra(
    decision: Decision, help: LlamaServerHelpValue, owners: dict[tuple[str, ...], Decision]
) -> list[str]:
    value = decision.value
    args = [str(a) for a in value] if isinstance(value, tuple) else []
    for arg, option in _options(args, help, decision):
        if any(flag in option.spellings for flag in SECRET_FLAGS):
            raise ArgvError(
                decision.setting,
                decision.key,
                arg,
                "puts the key on the command line, where every local user can read it; use "
                "server_api_key: file",
            )
        owner = owners.get(option.spellings)
        if owner is not None and not any(f in option.spellings for f in REPEATABLE):
            use = f"use the setting {owner.key}" if owner.key else "the planner decides it"
            raise ArgvError(
                decision.setting,
                decision.key,
                arg,
                f"the plan already sets it ({owner.setting}); llama.cpp would take only the "
                f"last one: {use}",
            )
    return args


def render_argv(plan: ServePlan, help: LlamaServerHelpValue, binary: str) -> list[str]:
    """``[binary, flags...]`` for the plan, in the plan's order, extra arguments last."""
    if not help.available:
        raise ArgvError("binary", None, binary, f"its --help could not be read: {help.reason}")
    argv = [binary]
    owners: dict[tuple[str, ...], Decision] = {}
    for decision in plan.decisions:
        if decision.setting == "extra_args":
            argv += _checked_extra(decision, help, owners)
            continue
        args = _RENDERERS.get(decision.setting, _nothing)(decision, plan, help)
        for _, option in _options(args, help, decision):
            owners[option.spellings] = decision
        argv += args
    return argv


# --- llmtune plan ---------------------------------------------------------------------------

_FLAGS = {
    "model": "-m",
    "alias": "-a",
    "fit_target": "--fit-target",
    "kv_cache": "-ctk/-ctv",
    "flash_attn": "-fa",
    "ubatch": "-ub",
    "threads": "-t",
    "cpus": "CPUAffinity=",
    "parallel": "-np",
    "n_cpu_moe": "-ncmoe",
    "load_mode": "-lm",
    "mmproj": "--mmproj",
    "spec_type": "--spec-type",
    "host": "--host",
    "port": "--port",
    "api_key_file": "--api-key-file",
    "extra_args": "(extra)",
}
_PLACEMENT_FLAGS = {"gpu": "-ngl all --fit off", "fit": "--fit on", "cpu": "-ngl 0 --fit off"}


def _flag_label(decision: Decision, plan: ServePlan) -> str:
    if decision.setting == "placement":
        return _PLACEMENT_FLAGS.get(str(decision.value), "")
    if decision.setting == "ctx":
        asked = decision.from_settings or plan.placement != "fit"
        return "-c" if asked else "--fit-ctx"
    if decision.setting == "fit_target" and plan.placement != "fit":
        return "(margin)"
    return _FLAGS.get(decision.setting, decision.setting)


def _value_label(decision: Decision, plan: ServePlan) -> str:
    value = decision.value
    if decision.setting == "ctx" and _flag_label(decision, plan) == "-c":
        return str(context_tokens(plan))
    if decision.setting == "cpus" and isinstance(value, tuple):
        return format_cpulist(int(v) for v in value)
    if isinstance(value, tuple):
        separator = " " if decision.setting == "extra_args" else ","
        return separator.join(str(v) for v in value)
    return "-" if value is None else str(value)


def explain(plan: ServePlan, width: int = 100) -> str:
    """A table: flag, value and reason of every decision (for ``llmtune plan``)."""
    rows = [("flag", "value", "reason")] + [
        (_flag_label(d, plan), _value_label(d, plan), d.reason) for d in plan.decisions
    ]
    flag_w = max(len(r[0]) for r in rows)
    value_w = min(max(len(r[1]) for r in rows), 40)
    indent = flag_w + value_w + 4
    lines: list[str] = []
    for flag, value, reason in rows:
        head = f"{flag:<{flag_w}}  {value:<{value_w}}  "
        if len(head) > indent:  # a long value (a path): the reason starts on the next line
            lines.append(head.rstrip())
            head = " " * indent
        wrapped = textwrap.wrap(reason, max(20, width - indent)) or [""]
        lines.append(head + wrapped[0])
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)
