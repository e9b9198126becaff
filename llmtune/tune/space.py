"""What tune may try on a host: each knob's values, and what the planner rules out beforehand.

Pure: the host's resources, the model, the settings and the plan go in; a ``SearchSpace`` comes
out. Every knob lists its candidate values (the exhaustive sweep measures all valid combinations
of them) and, for tune, the values pruned with the reason: a measurement or a rule that already
says the value cannot win on this host. Pruning is what makes tune a fraction of the sweep.

Knobs and their values:
- ``threads``: half, three quarters and all of the physical cores tune may use (the P-cores on a
  hybrid CPU), plus their SMT siblings' count where there are any, plus the plan's.
  Tune prunes: every value but the plan's when every layer is on the GPU (the CPU threads only
  launch kernels there); fewer than three quarters of the cores otherwise (measured on the H100
  under a VRAM budget: 8 threads 13.2 t/s vs 16 threads 22.2).
- ``kv``: f16 and q8_0; a setting (``kv_cache_type``) fixes it: the KV type is a quality choice
  (q4_0 only when asked for there). Tune prunes q8_0 when everything fits in VRAM with f16
  (measured: q8_0 9-22% slower there).
- ``ubatch``: 256, 512 and 2048 (at most the batch; vision at least 512). Under --fit it
  trades compute-buffer VRAM against GPU layers, so nothing is pruned.
- ``flash_attn``: on and off (off only with an f16 cache: llama.cpp needs FA for a quantized V).
  Tune prunes off where a GPU runs attention (measured slower at depth, all on the GPU and
  under a budget).
- ``placement``: the plan's; for a MoE under --fit also ``cpu-moe`` (all experts in RAM) where
  its dense part fits. Tune prunes cpu-moe: --fit moves expert tensors to RAM layer by layer only
  as far as the budget needs, so all experts in RAM reads more per token from slower memory.
- ``fit_target``: under --fit, the margin; a ``fit_target_mib`` setting is the user's VRAM budget
  and fixes it, otherwise llama.cpp's 1024 and 512 MiB (the smallest margin the seed guide
  calls safe: below it CUDA graphs' memory pool grows into OOM mid-session).

Context, slots and the model are not knobs: tune measures at the serving context the settings
give (``context_size``, ``parallel``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from llmtune.facts.model import GgufModelValue
from llmtune.planner.serve import (
    MIB,
    HostResources,
    compute_mib,
    kv_mib,
    usable_vram_mib,
    weights_mib,
)
from llmtune.settings import HostSettings
from llmtune.tune.config import LLAMA_DEFAULT_BATCH, Config

# llama.cpp's default, half of it (a smaller compute buffer: VRAM for layers) and the batch
# itself (the fewest passes over weights kept in RAM while a long prompt is processed).
UBATCHES = (256, 512, 2048)
KV_TYPES = ("f16", "q8_0")
FIT_MARGINS = (1024, 512)
KNOBS = ("threads", "kv", "ubatch", "flash_attn", "placement", "fit_target")
VISION_MIN_UBATCH = 512


@dataclass(frozen=True)
class Knob:
    """One knob: the values the sweep tries, and those tune leaves out with the reason."""

    name: str
    values: tuple
    pruned: tuple[tuple[object, str], ...] = ()
    # Why the knob has one value only (a setting, or nothing to choose), for the report.
    fixed: str = ""

    def for_tune(self) -> tuple:
        out = {v for v, _ in self.pruned}
        return tuple(v for v in self.values if v not in out)


@dataclass(frozen=True)
class SearchSpace:
    """The knobs around ``start`` (the plan's configuration); ``ctx`` is the serving context of
    one slot, ``slots`` the server's slots."""

    start: Config
    knobs: tuple[Knob, ...]
    ctx: int
    slots: int
    moe: bool

    def knob(self, name: str) -> Knob:
        return next(k for k in self.knobs if k.name == name)

    def values(self, name: str, *, exhaustive: bool) -> tuple:
        knob = self.knob(name)
        return knob.values if exhaustive else knob.for_tune()

    def valid(self, config: Config) -> bool:
        return config.valid and (config.placement != "cpu-moe" or self._dense_fits(config))

    # Set by search_space: whether the dense part (all experts in RAM) fits, per KV type and
    # ubatch; a dict keeps the dataclass pure data.
    dense_fit: tuple[tuple[tuple[str, int], bool], ...] = ()

    def _dense_fits(self, config: Config) -> bool:
        return dict(self.dense_fit).get((config.kv, config.ubatch or 512), False)

    def grid(self, *, exhaustive: bool) -> list[Config]:
        """Every valid combination of the knobs' values (the exhaustive sweep, or tune's
        pruned space), the start first."""
        names = KNOBS
        combos = itertools.product(*(self.values(n, exhaustive=exhaustive) for n in names))
        out = [self.start]
        for combo in combos:
            config = replace(self.start, **dict(zip(names, combo, strict=True)))
            if config.placement != "fit":
                config = replace(config, fit_target=None)
            if config not in out and self.valid(config):
                out.append(config)
        return out


def _thread_counts(host: HostResources, plan_threads: int | None) -> tuple[int, ...]:
    cores = host.pcore_physical_cores or host.physical_cores
    counts = {max(1, cores // 2), max(1, cores * 3 // 4), cores} if cores else set()
    logical = len(host.pcores)
    if cores and logical > cores:  # SMT siblings
        counts.add(logical)
    if plan_threads:
        counts.add(plan_threads)
    return tuple(sorted(counts))


def _dense_fit(
    host: HostResources,
    model: GgufModelValue,
    margin: int | None,
    tokens: int,
    kv_types: tuple[str, ...],
    ubatches: tuple[int, ...],
) -> tuple[tuple[tuple[str, int], bool], ...]:
    """Whether every layer fits on the GPUs with all expert tensors in RAM (-cmoe)."""
    if not host.gpus or not model.is_moe:
        return ()
    margins = (margin if margin is not None else 1024,) * len(host.gpus)
    usable = usable_vram_mib(host.gpus, margins, model)
    dense = weights_mib(model) - model.expert_tensor_bytes // MIB
    gpus = len(host.gpus)
    return tuple(
        ((kv, ub), dense + kv_mib(model, kv, tokens) + compute_mib(model, ub, gpus) <= usable)
        for kv in kv_types
        for ub in ubatches
    )


def search_space(
    host: HostResources,
    model: GgufModelValue,
    settings: HostSettings,
    start: Config,
    ctx: int,
) -> SearchSpace:
    """The knobs for tune and the exhaustive sweep, around the plan's configuration ``start``
    at ``ctx`` tokens per slot (the plan's context)."""
    slots = settings.parallel
    on_gpu = start.placement == "gpu"
    knobs: list[Knob] = []

    threads = _thread_counts(host, start.threads)
    if on_gpu:
        pruned = tuple(
            (t, "every layer is on the GPU: the CPU threads only launch its kernels")
            for t in threads
            if t != start.threads
        )
    elif start.placement == "cpu" or not threads:
        pruned = ()
    else:
        cores = host.pcore_physical_cores or host.physical_cores
        floor = cores * 3 // 4
        pruned = tuple(
            (
                t,
                "fewer than 3/4 of the cores: the CPU's layers run on every core (measured "
                "on the H100 under a VRAM budget: 8 threads 13.2 t/s vs 16 threads 22.2)",
            )
            for t in threads
            if t < floor and t != start.threads
        )
    knobs.append(Knob("threads", threads or (start.threads,), pruned))

    if settings.kv_cache_type != "auto":
        why = f"kv_cache_type {settings.kv_cache_type} is set in settings (a quality choice)"
        knobs.append(Knob("kv", (settings.kv_cache_type,), fixed=why))
    elif settings.workload == "mtp":
        why = "MTP drafting keeps an f16 KV cache (llama-bench cannot measure draft acceptance)"
        knobs.append(Knob("kv", ("f16",), fixed=why))
    elif not host.gpus:
        knobs.append(Knob("kv", ("f16",), fixed="no GPU: a smaller cache buys no GPU layers"))
    else:
        pruned = ()
        if on_gpu and start.kv == "f16":
            pruned = (
                (
                    "q8_0",
                    "everything fits in VRAM with f16: q8_0 only slows attention (measured "
                    "on the H100: 9-22% slower)",
                ),
            )
        knobs.append(Knob("kv", KV_TYPES, pruned))

    low = VISION_MIN_UBATCH if settings.workload == "vision" else 0
    batch = start.batch or LLAMA_DEFAULT_BATCH
    ubatches = tuple(sorted({u for u in UBATCHES if low <= u <= batch} | {start.ubatch or 512}))
    knobs.append(Knob("ubatch", ubatches))
    fa_pruned: tuple[tuple[object, str], ...] = ()
    if host.gpus and start.placement != "cpu" and start.flash_attn == "on":
        fa_pruned = (
            (
                "off",
                "without flash attention the attention is slower at depth and its larger "
                "compute buffer takes VRAM from layers (measured on the H100 at depth 16384: "
                "217.1 vs 169.2 t/s all on the GPU; 7.7 vs 6.6 under a 4 GB budget)",
            ),
        )
    knobs.append(Knob("flash_attn", ("on", "off"), fa_pruned))

    placements: tuple[str, ...] = (start.placement,)
    pruned_placement: tuple[tuple[object, str], ...] = ()
    # Only the KV types and batches the knobs offer: a cpu-moe that fits with none of them is
    # not a placement to offer.
    kv_offered = knobs[1].values
    dense_fit = _dense_fit(host, model, start.fit_target, ctx * slots, kv_offered, ubatches)
    if model.is_moe and start.placement == "fit" and any(ok for _, ok in dense_fit):
        placements += ("cpu-moe",)
        pruned_placement = (
            (
                "cpu-moe",
                "--fit moves expert tensors to RAM layer by layer only as far as the budget "
                "needs; all experts in RAM reads more per token from the slower memory",
            ),
        )
    fixed = "" if len(placements) > 1 else f"{start.placement}: the plan's placement"
    knobs.append(Knob("placement", placements, pruned_placement, fixed))

    if start.placement != "fit":
        knobs.append(Knob("fit_target", (start.fit_target,), fixed="--fit is off"))
    elif settings.fit_target_mib is not None or settings.workload == "vision":
        why = (
            f"fit_target_mib {settings.fit_target_mib} is set in settings (the VRAM budget)"
            if settings.fit_target_mib is not None
            else "vision keeps the planner's margin for the projector"
        )
        knobs.append(Knob("fit_target", (start.fit_target,), fixed=why))
    else:
        margins = tuple(sorted({*FIT_MARGINS, start.fit_target or 1024}, reverse=True))
        knobs.append(Knob("fit_target", margins))
    return SearchSpace(start, tuple(knobs), ctx, slots, model.is_moe, dense_fit)
