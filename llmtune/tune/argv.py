"""The two command lines tune runs per measurement, and how the first one's answer is read. Pure.

1. ``llama-fit-params`` (built with llama-server, same arguments): for a ``fit`` configuration it
   runs llama.cpp's own --fit (common_fit_params) with the server's context, KV type, flash
   attention, batch and margin, and prints the placement the server would start with::

       -c 32768 -ngl 12
       -c 32768 -ngl 49 -ot "blk\\.20\\.ffn_(gate|down).*=CPU,blk\\.21\\.ffn_(up|...)_(ch|)exps=CPU"

   This is why tune does not pass --fit to llama-bench: llama-bench fits each test's own small
   context (a few hundred tokens plus the depth), not the server's KV cache, so under a tight
   budget it would keep more layers on the GPU than the service can, and measure above it.
2. ``llama-bench`` with that placement given explicitly (``-ngl N -ot ...``), the configuration's
   knobs and the serving-depth tests ``-p 512 -n 64 -d D``. Configurations that share the
   placement and differ only in threads (or, where the placement does not depend on it, the
   physical batch) run in one llama-bench: it keeps the model loaded between them.

llama-bench's own spellings: ``-ot`` items are joined by ";" and ``-ts`` by "/" (a "," would
start another test), ``-ngl`` takes a number (999: all).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from llmtune.facts.llama import LlamaServerHelpValue
from llmtune.tune.config import Config

FIT_PARAMS_NAME = "llama-fit-params"
BENCH_NAME = "llama-bench"
ALL_LAYERS = "999"
PROMPT_TOKENS = 512
# 64 generated tokens: the rate at the depth is steady after a few tokens, and a configuration
# that runs half its layers on the CPU generates 25 t/s (128 tokens x 2 repetitions = 10 s).
GEN_TOKENS = 64


class TuneArgvError(ValueError):
    """A knob this binary cannot express, or fit-params output that is not a placement."""


def sibling(server_binary: str, name: str) -> str:
    """Another tool of the same build: ``.../bin/llama-server`` -> ``.../bin/<name>``."""
    return str(PurePosixPath(server_binary).with_name(name))


def _flag(help: LlamaServerHelpValue, *aliases: str) -> str:
    flag = help.spelling_for(*aliases)
    if flag is None:
        raise TuneArgvError(f"this build's --help has no {aliases[-1]}")
    return flag


def fit_params_argv(
    binary: str, model: str, config: Config, ctx_total: int, help: LlamaServerHelpValue
) -> list[str]:
    """llama-fit-params for a ``fit`` configuration at ``ctx_total`` tokens (all slots: the KV
    cache llama-server allocates). ``help`` is llama-server's (fit-params parses the same
    arguments); knobs left at llama.cpp's default are left out, as the server would have them."""
    if config.placement != "fit":
        raise TuneArgvError(f"{config.placement}: only --fit placements are fitted")
    argv = [binary, _flag(help, "-m", "--model"), model]
    argv += [_flag(help, "-c", "--ctx-size"), str(ctx_total)]
    argv += [_flag(help, "-ctk", "--cache-type-k"), config.kv]
    argv += [_flag(help, "-ctv", "--cache-type-v"), config.kv]
    if config.flash_attn != "auto":
        argv += [_flag(help, "-fa", "--flash-attn"), config.flash_attn]
    if config.batch:
        argv += [_flag(help, "-b", "--batch-size"), str(config.batch)]
    if config.ubatch:
        argv += [_flag(help, "-ub", "--ubatch-size"), str(config.ubatch)]
    if config.fit_target is not None:
        argv += [_flag(help, "-fitt", "--fit-target"), str(config.fit_target)]
    return argv


@dataclass(frozen=True)
class Placement:
    """Where --fit put the weights: GPU layers, and tensor overrides / split if any."""

    ngl: int
    overrides: tuple[str, ...] = ()
    tensor_split: tuple[str, ...] = ()
    ctx: int = 0

    def brief(self) -> str:
        moved = f", {len(self.overrides)} tensor override(s)" if self.overrides else ""
        return f"-ngl {self.ngl}{moved}"


def parse_fit_output(lines: Sequence[str]) -> Placement:
    """The last line of llama-fit-params' stdout that starts with ``-c``."""
    line = next((x for x in reversed(lines) if x.strip().startswith("-c ")), None)
    if line is None:
        raise TuneArgvError("llama-fit-params printed no placement (no line starting with -c)")
    items = shlex.split(line)
    values: dict[str, str] = {}
    for flag, value in zip(items[::2], items[1::2], strict=False):
        values[flag] = value
    try:
        ngl = int(values["-ngl"])
        ctx = int(values["-c"])
    except (KeyError, ValueError) as exc:
        raise TuneArgvError(f"llama-fit-params: unreadable placement {line!r}") from exc
    overrides = tuple(x for x in values.get("-ot", "").split(",") if x)
    split = tuple(x for x in values.get("-ts", "").split(",") if x)
    return Placement(ngl, overrides, split, ctx)


def placement_args(config: Config, fitted: Placement | None) -> tuple[str, ...]:
    """llama-bench's placement flags for ``config`` (``fitted``: fit-params' answer for it)."""
    if config.placement == "gpu":
        return ("-ngl", ALL_LAYERS)
    if config.placement == "cpu":
        return ("-ngl", "0")
    if config.placement == "cpu-moe":
        return ("-ngl", ALL_LAYERS, "-ncmoe", ALL_LAYERS)
    if fitted is None:
        raise TuneArgvError("a --fit configuration needs llama-fit-params' placement")
    args: tuple[str, ...] = ("-ngl", str(fitted.ngl))
    if fitted.overrides:
        args += ("-ot", ";".join(fitted.overrides))
    if fitted.tensor_split:
        args += ("-ts", "/".join(fitted.tensor_split))
    return args


@dataclass(frozen=True)
class BenchGroup:
    """Configurations measured by one llama-bench run: the same placement and KV, a cross
    product of ``ubatches`` x ``threads`` (llama-bench crosses its lists)."""

    placement: tuple[str, ...]
    base: Config
    ubatches: tuple[int | None, ...]
    threads: tuple[int | None, ...]

    @property
    def configs(self) -> list[Config]:
        return [
            replace(self.base, ubatch=u, threads=t) for u in self.ubatches for t in self.threads
        ]


def group_configs(placed: Sequence[tuple[Config, tuple[str, ...]]]) -> list[BenchGroup]:
    """Pack (configuration, placement flags) pairs into llama-bench runs, keeping their order."""

    buckets: dict[tuple, list[Config]] = {}
    for config, args in placed:
        # llama.cpp's default and explicit values cannot share a list: keep them apart.
        defaults = (config.ubatch is None, config.threads is None)
        key = (args, replace(config, ubatch=None, threads=None), defaults)
        buckets.setdefault(key, []).append(config)
    groups: list[BenchGroup] = []
    for (args, base, _), configs in buckets.items():
        ubatches = tuple(dict.fromkeys(c.ubatch for c in configs))
        threads = tuple(dict.fromkeys(c.threads for c in configs))
        if len(configs) == len(ubatches) * len(threads):
            groups.append(BenchGroup(args, base, ubatches, threads))
            continue
        for ub in ubatches:  # not a cross product: one run per physical batch
            ts = tuple(dict.fromkeys(c.threads for c in configs if c.ubatch == ub))
            groups.append(BenchGroup(args, base, (ub,), ts))
    return groups


def bench_argv(
    binary: str,
    model: str,
    group: BenchGroup,
    depth: int,
    repetitions: int,
    help: LlamaServerHelpValue,
    cpu_mask: str | None = None,
) -> list[str]:
    """llama-bench for ``group`` at the serving ``depth``. ``help`` is llama-bench's."""
    base = group.base
    argv = [binary, _flag(help, "-m", "--model"), model]
    flags = list(group.placement)
    for i in range(0, len(flags), 2):
        argv += [_flag(help, flags[i]), flags[i + 1]]
    argv += [_flag(help, "-ctk", "--cache-type-k"), base.kv]
    argv += [_flag(help, "-ctv", "--cache-type-v"), base.kv]
    argv += [_flag(help, "-fa", "--flash-attn"), base.flash_attn]
    if base.batch:
        argv += [_flag(help, "-b", "--batch-size"), str(base.batch)]
    if any(group.ubatches):
        if None in group.ubatches:
            raise TuneArgvError("a run mixes the default physical batch with explicit ones")
        argv += [_flag(help, "-ub", "--ubatch-size"), ",".join(map(str, group.ubatches))]
    if any(group.threads):
        if None in group.threads:
            raise TuneArgvError("a run mixes the default thread count with explicit ones")
        argv += [_flag(help, "-t", "--threads"), ",".join(map(str, group.threads))]
    if base.load_mode != "auto":
        argv += [_flag(help, "-lm", "--load-mode"), base.load_mode]
    if cpu_mask:
        argv += [_flag(help, "-C", "--cpu-mask"), cpu_mask]
    argv += [_flag(help, "-p", "--n-prompt"), str(PROMPT_TOKENS)]
    argv += [_flag(help, "-n", "--n-gen"), str(GEN_TOKENS)]
    argv += [_flag(help, "-d", "--n-depth"), str(depth)]
    argv += [_flag(help, "-r", "--repetitions"), str(repetitions)]
    argv += [_flag(help, "-o", "--output"), "jsonl"]
    return argv
