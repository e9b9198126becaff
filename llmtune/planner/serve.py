"""How llama-server should run on a host: each decision with its value and the reason for it.

Pure: the host's resources (GPUs, CPU topology, RAM), the model's metadata and the settings go in;
an ordered list of decisions comes out, each naming an abstract setting ("placement", "ctx",
"kv_cache"...), its value and one sentence saying which rule or measurement chose it. The flags
are spelled later, for the binary actually installed (``planner/server_argv.py``).

The rules, and where they come from:
- Placement: every layer on the GPU when the model, its KV cache at the planned context and the
  compute buffers fit in the usable VRAM; otherwise ``--fit`` places as many layers as fit;
  without a GPU, the CPU.
- KV cache: f16 wherever everything fits (measured on the H100: q8_0 KV is 9-22% slower when
  VRAM is plentiful); otherwise q8_0 only where the layers (or experts) it keeps on the GPU
  outweigh its slower attention at the serving depth (``kv_cost``: measured under a 4 GB budget,
  q8_0 +25% on a fresh prompt, -15% at depth 16384); f16 always for MTP drafting.
- Threads: the P-cores' physical cores (every physical core on a non-hybrid CPU); measured under
  a VRAM budget: 16 threads 22.2 t/s vs 8 threads 13.2.
- Settings that are set (kv_cache_type, threads, ubatch_size, flash_attn, fit_target_mib,
  context_size; ``llmtune tune`` writes measured ones) win, and their reason says "set in
  settings".

VRAM arithmetic (MiB, per the numbers nvidia-smi gives):
    usable = sum over GPUs of (free - fit target margin)
    needed = weights + KV (bytes per token x context x slots) + compute allowance per GPU
The compute allowance is ``COMPUTE_FIXED_MIB`` + the f32 logits of one ubatch (vocabulary x
ubatch x 4 bytes): on the H100, llama.cpp's defaults at -c 32768 used 8929 MiB for 4166 MiB of
weights and 4096 MiB of f16 KV, i.e. 667 MiB beyond both (CUDA context, compute buffer, logits);
the model gives 640 + 62.5 = 702.5 MiB for that 32000-token vocabulary, a little above the
measurement, and grows with the vocabulary (a 152k vocabulary's logits alone take 297 MiB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from llmtune.facts.cpu import CpuTopologyValue, format_cpulist
from llmtune.facts.gpu import NvidiaGpusValue
from llmtune.facts.meminfo import MemInfoValue
from llmtune.facts.model import GgufModelValue
from llmtune.planner.kv_cost import cheaper_kv, serving_depth
from llmtune.settings import HostSettings, is_loopback

MIB = 1024 * 1024
# llama.cpp's --fit margin per device (common.h: fit_params_target = 1024 MiB).
LLAMA_FIT_TARGET_MIB = 1024
# Vision: the projector allocates at load and an image is hundreds of tokens in one ubatch.
VISION_FIT_TARGET_MIB = 2048
VISION_MIN_UBATCH = 512
# llama.cpp's default physical batch (-ub).
DEFAULT_UBATCH = 512
# The default context: the model's trained context, at most this.
CONTEXT_CAP = 32768
# When the model does not say its trained context: the least --fit would choose itself
# (common.h: fit_params_min_ctx = 4096).
UNKNOWN_CONTEXT = 4096
# See the module docstring: measured 667 MiB beyond weights and KV on the H100 (8B, -c 32768).
COMPUTE_FIXED_MIB = 640
LOGIT_BYTES = 4
# RAM left to the OS, page cache and the server itself when the model is locked in RAM.
RAM_HEADROOM_MIN_MIB = 2048
RAM_HEADROOM_SHARE = 0.10

Value = str | int | bool | tuple[int, ...] | tuple[str, ...] | None


class PlanError(ValueError):
    """The settings ask for something this host or model cannot do; names the settings key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class GpuResource:
    index: int
    name: str
    total_mib: int
    free_mib: int


@dataclass(frozen=True)
class HostResources:
    """What the planner may use. Example (the H100 VM)::

    HostResources(gpus=(GpuResource(0, "NVIDIA H100 80GB HBM3", 81559, 81079),),
                  physical_cores=16, pcores=(0, 1, ..., 15), pcore_physical_cores=16,
                  hybrid=False, ram_total_mib=128887, ram_available_mib=128388)
    """

    gpus: tuple[GpuResource, ...] = ()
    # Why there is no usable GPU (nvidia-smi's own reason), for the CPU placement's reason.
    gpu_note: str = ""
    physical_cores: int = 0
    # The CPUs to run on: the P-cores of a hybrid CPU, else every CPU.
    pcores: tuple[int, ...] = ()
    pcore_physical_cores: int = 0
    hybrid: bool = False
    ram_total_mib: int | None = None
    ram_available_mib: int | None = None


def host_resources(
    gpus: NvidiaGpusValue, cpu: CpuTopologyValue, meminfo: MemInfoValue
) -> HostResources:
    """The facts reduced to what the service plan needs. A GPU whose memory nvidia-smi does not
    report is left out (nothing can be planned on it) and named in ``gpu_note``."""
    usable: list[GpuResource] = []
    skipped: list[str] = []
    for position, gpu in enumerate(gpus.gpus if gpus.available else ()):
        if gpu.memory_total_mib is None:
            skipped.append(f"{gpu.label}: memory not reported")
            continue
        free = gpu.memory_free_mib
        if free is None:
            free = gpu.memory_total_mib - (gpu.memory_used_mib or 0)
        index = gpu.index if gpu.index is not None else position
        usable.append(GpuResource(index, gpu.name, gpu.memory_total_mib, free))
    note = "; ".join(skipped) or ("" if usable else (gpus.reason or "no NVIDIA GPU listed"))
    return HostResources(
        gpus=tuple(usable),
        gpu_note=note,
        physical_cores=cpu.physical_cores,
        pcores=cpu.pcores,
        pcore_physical_cores=cpu.pcore_physical_cores,
        hybrid=cpu.hybrid,
        ram_total_mib=meminfo.total_mib,
        ram_available_mib=meminfo.available_mib,
    )


@dataclass(frozen=True)
class Decision:
    """One abstract setting of the server, its value and why.

    ``key`` is the settings key the user can change it with (None: the planner's alone);
    ``from_settings`` is True when that key's value was used as given.
    """

    setting: str
    value: Value
    reason: str
    key: str | None = None
    from_settings: bool = False


@dataclass(frozen=True)
class VramBudget:
    """The arithmetic behind the placement, in MiB (all GPUs together)."""

    free_mib: int
    margin_mib: tuple[int, ...]
    usable_mib: int
    weights_mib: int
    kv_mib: int
    compute_mib: int
    extra_mib: int

    @property
    def needed_mib(self) -> int:
        return self.weights_mib + self.kv_mib + self.compute_mib + self.extra_mib

    @property
    def fits(self) -> bool:
        return self.needed_mib <= self.usable_mib


@dataclass(frozen=True)
class ServePlan:
    """The decisions in flag order; ``vram`` is the arithmetic behind the placement (None on the
    CPU). Settings: model, alias, placement (gpu|fit|cpu), ctx (tokens per slot), fit_target
    (MiB per GPU), kv_cache, flash_attn, ubatch, threads, cpus (hybrid only: the unit's
    CPUAffinity=), parallel, n_cpu_moe (MoE only), load_mode (mlock|auto), mmproj (vision),
    spec_type (mtp), host, port, api_key_file, extra_args. Example (the 4 GB budget)::

        ServePlan(decisions=(Decision("model", "/srv/models/llama8b-q4_k_m.gguf", ...), ...,
                             Decision("placement", "fit", "--fit: 7046 MiB needed ..."),
                             Decision("kv_cache", "q8_0", "q8_0: f16 KV (4096 MiB ...", ...)),
                  vram=VramBudget(free_mib=81079, margin_mib=(77559,), usable_mib=3520, ...))
    """

    decisions: tuple[Decision, ...]
    vram: VramBudget | None = None

    def get(self, setting: str) -> Decision | None:
        return next((d for d in self.decisions if d.setting == setting), None)

    def value(self, setting: str) -> Value:
        decision = self.get(setting)
        return None if decision is None else decision.value

    @property
    def placement(self) -> str:
        return str(self.value("placement"))


# --- arithmetic -----------------------------------------------------------------------------


def _mib(nbytes: float) -> int:
    return math.ceil(nbytes / MIB)


def weights_mib(model: GgufModelValue) -> int:
    """The tensors' data (what lands in VRAM); the file size when the fact could not sum them."""
    return _mib(model.tensor_bytes or model.file_bytes)


def kv_mib(model: GgufModelValue, kv_type: str, tokens: int) -> int:
    """KV cache for ``tokens`` cells (the total over all slots: llama.cpp sizes the cache for -c,
    and each of P slots gets -c / P of it)."""
    return _mib(model.kv_bytes_per_token(kv_type, kv_type) * tokens)


def compute_mib(model: GgufModelValue, ubatch: int, gpus: int) -> int:
    """Per GPU: CUDA context and compute buffers, plus one ubatch of f32 logits."""
    return gpus * _mib(COMPUTE_FIXED_MIB * MIB + model.vocab_size * ubatch * LOGIT_BYTES)


def usable_vram_mib(
    gpus: tuple[GpuResource, ...], margins: tuple[int, ...], model: GgufModelValue
) -> int:
    """Free VRAM minus the margin on each GPU; with several GPUs, minus the half-layer per device
    (plus one) that whole-layer splits waste (the estimate common/fit.cpp uses)."""
    usable = sum(max(0, gpu.free_mib - margin) for gpu, margin in zip(gpus, margins, strict=True))
    if len(gpus) > 1 and model.block_count:
        usable -= (len(gpus) + 1) * weights_mib(model) // (2 * model.block_count)
    return max(0, usable)


def ram_headroom_mib(total_mib: int) -> int:
    return max(RAM_HEADROOM_MIN_MIB, int(total_mib * RAM_HEADROOM_SHARE))


# --- decisions ------------------------------------------------------------------------------


def _check_model(model: GgufModelValue, settings: HostSettings) -> str:
    if not settings.model_path:
        raise PlanError("model_path", "not set: there is no llama-server service to plan")
    if not model.available:
        raise PlanError("model_path", f"{settings.model_path}: {model.reason or 'not readable'}")
    if settings.workload == "mtp" and model.nextn_predict_layers <= 0:
        raise PlanError(
            "model_path",
            f"{settings.model_path} has no MTP layers (nextn_predict_layers is 0): workload: mtp "
            "drafts with the model's own multi-token-prediction layers; use a model trained with "
            "them, or workload: text",
        )
    if settings.workload == "vision" and not settings.mmproj_path:
        raise PlanError("mmproj_path", "workload: vision needs the projector GGUF's path")
    return settings.model_path


def _context(model: GgufModelValue, settings: HostSettings) -> tuple[int, Decision]:
    """Tokens per request (per slot)."""
    trained = model.context_length
    if settings.context_size:
        beyond = (
            f"; beyond the trained {trained} tokens (llama.cpp warns of a training context "
            "overflow)"
            if trained and settings.context_size > trained
            else ""
        )
        reason = f"{settings.context_size} tokens per request: set in settings{beyond}"
        return settings.context_size, Decision(
            "ctx", settings.context_size, reason, "context_size", True
        )
    if not trained:
        reason = (
            f"{UNKNOWN_CONTEXT}: the model does not state its trained context; the least --fit "
            "would choose itself"
        )
        return UNKNOWN_CONTEXT, Decision("ctx", UNKNOWN_CONTEXT, reason, "context_size")
    ctx = min(trained, CONTEXT_CAP)
    reason = (
        f"{ctx}: the model's trained context"
        if ctx == trained
        else f"{ctx}: the trained {trained} capped at {CONTEXT_CAP} (KV grows with every token)"
    )
    return ctx, Decision("ctx", ctx, reason, "context_size")


def _fit_target(
    settings: HostSettings, gpus: tuple[GpuResource, ...]
) -> tuple[tuple[int, ...], Decision]:
    """The VRAM margin left free on each GPU (--fit-target; also the arithmetic's margin)."""
    vision = settings.workload == "vision"
    if settings.fit_target_mib is not None:
        margin = settings.fit_target_mib
        margins = (margin,) * len(gpus)
        left = ", ".join(f"{max(0, g.free_mib - margin)} of {g.free_mib}" for g in gpus)
        reason = f"{margin} MiB per GPU: set in settings (leaves {left} MiB free VRAM)"
        if vision and margin < VISION_FIT_TARGET_MIB:
            reason += f"; below the {VISION_FIT_TARGET_MIB} MiB vision floor"
        return margins, Decision("fit_target", margins, reason, "fit_target_mib", True)
    if vision:
        margins = (VISION_FIT_TARGET_MIB,) * len(gpus)
        reason = (
            f"{VISION_FIT_TARGET_MIB} MiB per GPU: vision needs room for the projector's "
            "buffers at load and the first image (smaller margins crash there)"
        )
        return margins, Decision("fit_target", margins, reason, "fit_target_mib")
    margins = (LLAMA_FIT_TARGET_MIB,) * len(gpus)
    reason = f"{LLAMA_FIT_TARGET_MIB} MiB per GPU: llama.cpp's default --fit margin"
    return margins, Decision("fit_target", margins, reason, "fit_target_mib")


def _ubatch(settings: HostSettings) -> tuple[int, Decision]:
    if settings.ubatch_size is not None:
        ubatch = settings.ubatch_size
        if settings.workload == "vision" and ubatch < VISION_MIN_UBATCH:
            raise PlanError(
                "ubatch_size",
                f"{ubatch} with workload vision: an image must fit one physical batch; use at "
                f"least {VISION_MIN_UBATCH}",
            )
        return ubatch, Decision("ubatch", ubatch, "set in settings", "ubatch_size", True)
    if settings.workload == "vision":
        ubatch = max(DEFAULT_UBATCH, VISION_MIN_UBATCH)
        reason = (
            f"{ubatch}: an image is several hundred tokens and must fit one physical batch "
            "(llama.cpp asserts otherwise)"
        )
        return ubatch, Decision("ubatch", ubatch, reason, "ubatch_size")
    reason = (
        f"{DEFAULT_UBATCH}: llama.cpp's default; a larger batch costs compute-buffer memory "
        "(on a GPU, VRAM that layers would otherwise use)"
    )
    return DEFAULT_UBATCH, Decision("ubatch", DEFAULT_UBATCH, reason, "ubatch_size")


def _flash_attn(settings: HostSettings) -> Decision:
    if settings.flash_attn != "auto":
        return Decision("flash_attn", settings.flash_attn, "set in settings", "flash_attn", True)
    reason = (
        "on: measured on H100 at depth 16384: 211.7 t/s with FA vs 172.3 without; a quantized "
        "V cache requires it"
    )
    return Decision("flash_attn", "on", reason, "flash_attn")


def _budget(
    host: HostResources,
    model: GgufModelValue,
    margins: tuple[int, ...],
    kv_type: str,
    tokens: int,
    ubatch: int,
    mmproj: GgufModelValue | None,
) -> VramBudget:
    return VramBudget(
        free_mib=sum(g.free_mib for g in host.gpus),
        margin_mib=margins,
        usable_mib=usable_vram_mib(host.gpus, margins, model),
        weights_mib=weights_mib(model),
        kv_mib=kv_mib(model, kv_type, tokens),
        compute_mib=compute_mib(model, ubatch, len(host.gpus)),
        extra_mib=_mib(mmproj.file_bytes) if mmproj is not None and mmproj.available else 0,
    )


def _kv_cache(
    settings: HostSettings,
    model: GgufModelValue,
    budgets: dict[str, VramBudget],
    tokens: int,
    depth: int,
) -> Decision:
    """f16 unless q8_0 makes a token cheaper at the serving ``depth`` (``kv_cost``); f16 always
    for MTP; the setting when it is set.

    ``budgets``: the VRAM arithmetic with f16 and with q8_0 KV ({} without a GPU).
    """
    if settings.kv_cache_type != "auto":
        reason = f"{settings.kv_cache_type}: set in settings"
        if settings.workload == "mtp" and settings.kv_cache_type != "f16":
            reason += " (MTP draft acceptance is known to suffer with a quantized KV cache)"
        return Decision("kv_cache", settings.kv_cache_type, reason, "kv_cache_type", True)
    if settings.workload == "mtp":
        reason = (
            "f16: MTP drafting keeps a full-precision KV cache (quantized KV drove draft "
            "acceptance toward zero in published MTP tests)"
        )
        return Decision("kv_cache", "f16", reason, "kv_cache_type")
    if not budgets:
        reason = "f16: no GPU, so a smaller cache buys no GPU layers; llama.cpp's default"
        return Decision("kv_cache", "f16", reason, "kv_cache_type")
    f16, q8 = budgets["f16"], budgets["q8_0"]
    if f16.fits:
        reason = (
            f"f16: the model and f16 KV at {tokens} tokens fit in VRAM; measured on H100: "
            "q8_0 KV is 9-22% slower when VRAM is plentiful"
        )
        return Decision("kv_cache", "f16", reason, "kv_cache_type")
    room = f16.usable_mib - f16.compute_mib - f16.extra_mib
    choice, f16_cost, q8_cost = cheaper_kv(model, room, tokens, depth)
    what = "expert MiB" if model.is_moe and model.expert_tensor_bytes else "layers"
    estimate = (
        f"estimated per token at depth {depth}: f16 {f16_cost.cost / 1e6:.0f} MB of CPU "
        f"weight streaming ({f16_cost.on_cpu:.0f} {what} on the CPU), q8_0 "
        f"{q8_cost.cost / 1e6:.0f} MB ({q8_cost.on_cpu:.0f})"
    )
    if choice == "f16":
        reason = (
            f"f16: the model with f16 KV ({f16.kv_mib} MiB at {tokens} tokens) does not fit in "
            f"{f16.usable_mib} MiB usable, but q8_0 would not make a token cheaper: {estimate} "
            "(measured on H100 under a 4 GB budget at depth 16384: f16 6.8 vs q8_0 5.8 t/s)"
        )
        return Decision("kv_cache", "f16", reason, "kv_cache_type")
    gain = (
        "keeps every layer on the GPU"
        if q8.fits
        else "leaves room for more GPU layers; measured on H100 under a 4 GB budget on a fresh "
        "prompt: q8_0 22.2 vs f16 17.7 t/s (+25%)"
    )
    reason = (
        f"q8_0: f16 KV ({f16.kv_mib} MiB at {tokens} tokens) does not fit in {f16.usable_mib} "
        f"MiB usable; q8_0 ({q8.kv_mib} MiB) {gain}; {estimate}"
    )
    return Decision("kv_cache", "q8_0", reason, "kv_cache_type")


def _placement(host: HostResources, budget: VramBudget | None, kv_type: str) -> Decision:
    if budget is None:
        reason = f"CPU: no usable NVIDIA GPU ({host.gpu_note or 'none listed'})"
        return Decision("placement", "cpu", reason)
    arithmetic = (
        f"{budget.needed_mib} MiB needed (weights {budget.weights_mib} + {kv_type} KV "
        f"{budget.kv_mib} + compute {budget.compute_mib}"
        + (f" + projector {budget.extra_mib}" if budget.extra_mib else "")
        + f"), {budget.usable_mib} usable ({budget.free_mib} free - {sum(budget.margin_mib)} "
        "margin)"
    )
    if budget.fits:
        reason = (
            f"everything on the GPU: {arithmetic}; all layers, --fit off "
            "(measured on H100: 274.7 t/s all on the GPU vs 14.2 on the CPU)"
        )
        return Decision("placement", "gpu", reason)
    reason = (
        f"--fit: {arithmetic}; --fit puts as many layers on the GPU as fit and the rest "
        "on the CPU (measured: 22.2 t/s under a 4 GB budget vs 13.8 with no GPU layers)"
    )
    return Decision("placement", "fit", reason)


def _threads(settings: HostSettings, host: HostResources) -> Decision:
    measured = "measured under a VRAM budget: 16 threads 22.2 t/s vs 8 threads 13.2"
    if settings.threads is not None:
        return Decision("threads", settings.threads, "set in settings", "threads", True)
    if host.hybrid and host.pcore_physical_cores:
        cores = host.pcore_physical_cores
        reason = (
            f"{cores}: the P-cores' physical cores (CPUs {format_cpulist(host.pcores)}); "
            f"E-cores and SMT siblings hold every step back; {measured}"
        )
        return Decision("threads", cores, reason, "threads")
    if host.physical_cores:
        cores = host.physical_cores
        reason = f"{cores}: every physical core (not a hybrid CPU); {measured}"
        return Decision("threads", cores, reason, "threads")
    reason = "CPU topology unknown: left to llama.cpp"
    return Decision("threads", None, reason, "threads")


def _parallel(settings: HostSettings, ctx: int) -> Decision:
    slots = settings.parallel
    if slots == 1:
        reason = (
            "1 slot: a single user (settings.parallel); llama.cpp's auto is 4 slots sharing "
            "one KV pool"
        )
    else:
        reason = f"{slots} slots: set in settings; -c is {slots * ctx}, {ctx} tokens per slot"
    return Decision("parallel", slots, reason, "parallel", slots != 1)


def _load_mode(
    host: HostResources, model: GgufModelValue, placement: str, kv_in_ram_mib: int
) -> Decision:
    if host.ram_total_mib is None or host.ram_available_mib is None:
        return Decision("load_mode", "auto", "MemAvailable unknown: left to llama.cpp (mmap)")
    need = _mib(model.file_bytes) + (kv_in_ram_mib if placement == "cpu" else 0)
    headroom = ram_headroom_mib(host.ram_total_mib)
    what = f"{need} MiB + {headroom} MiB headroom vs {host.ram_available_mib} MiB available"
    if need + headroom <= host.ram_available_mib:
        reason = (
            f"mlock: read into RAM and locked, no mmap ({what}): no page faults or swap-outs "
            "mid-session (the unit needs LimitMEMLOCK=infinity)"
        )
        return Decision("load_mode", "mlock", reason)
    reason = (
        f"not locked ({what}): locking would push the host into swap or the OOM killer; "
        "left to mmap"
    )
    return Decision("load_mode", "auto", reason)


def _n_cpu_moe(model: GgufModelValue, placement: str) -> Decision | None:
    if not model.is_moe:
        return None
    reason = {
        "gpu": "not set: every expert tensor fits on the GPU",
        "fit": "not set: --fit moves expert tensors to the CPU before whole layers",
        "cpu": "not set: no GPU",
    }[placement]
    return Decision("n_cpu_moe", None, reason)


def _endpoint(settings: HostSettings, api_key_file: str | None) -> list[Decision]:
    bind = settings.server_bind
    host_reason = (
        "loopback: reachable from this host only"
        if is_loopback(bind)
        else "listens beyond loopback (settings); clients need the API key"
    )
    decisions = [
        Decision("host", bind, host_reason, "server_bind", True),
        Decision(
            "port",
            settings.server_port,
            "always explicit: llama.cpp's default port has changed between releases",
            "server_port",
            True,
        ),
    ]
    if settings.server_api_key == "file":
        if not api_key_file:
            raise PlanError("server_api_key", "'file' needs the key file's path on the host")
        reason = (
            "the key stays in a file of the service user; on the command line every local "
            "user could read it (ps, /proc/PID/cmdline)"
        )
        decisions.append(Decision("api_key_file", api_key_file, reason, "server_api_key"))
    else:
        reason = "no key: server_api_key none (allowed on a loopback bind only)"
        decisions.append(Decision("api_key_file", None, reason, "server_api_key", True))
    return decisions


def plan_server(
    host: HostResources,
    model: GgufModelValue,
    settings: HostSettings,
    api_key_file: str | None,
    *,
    mmproj: GgufModelValue | None = None,
) -> ServePlan:
    """The llama-server decisions for this host, in the order the flags are written.

    ``api_key_file`` is the key file's path on the host (needed when server_api_key is "file");
    ``mmproj`` is the projector's metadata when the deploy read it (vision), so that its size
    counts in the VRAM arithmetic (otherwise only the 2048 MiB margin covers it).
    """
    path = _check_model(model, settings)
    alias = settings.model_alias or PurePosixPath(path).name.removesuffix(".gguf")
    alias_reason = "set in settings" if settings.model_alias else "the file name without .gguf"
    size = f"{model.file_type or 'GGUF'}, {_mib(model.file_bytes)} MiB"
    decisions = [
        Decision("model", path, f"the model ({size})", "model_path", True),
        Decision("alias", alias, alias_reason, "model_alias", bool(settings.model_alias)),
    ]

    per_slot, ctx = _context(model, settings)
    # llama.cpp sizes the KV cache for -c and gives each of the P slots -c / P: -c is ctx x P.
    tokens = per_slot * settings.parallel
    ubatch, ubatch_decision = _ubatch(settings)

    budgets: dict[str, VramBudget] = {}
    fit_target: Decision | None = None
    if host.gpus:
        margins, fit_target = _fit_target(settings, host.gpus)
        kv_types = {"f16", "q8_0", settings.kv_cache_type} - {"auto"}
        budgets = {
            kv_type: _budget(host, model, margins, kv_type, tokens, ubatch, mmproj)
            for kv_type in sorted(kv_types)
        }
    kv = _kv_cache(settings, model, budgets, tokens, serving_depth(per_slot))
    kv_type = str(kv.value)
    placement = _placement(host, budgets.get(kv_type), kv_type)

    if placement.value == "fit" and not ctx.from_settings:
        ctx = replace(
            ctx,
            reason=f"{ctx.reason}; --fit-ctx: --fit keeps at least this and moves layers to the "
            "CPU rather than cut the context below it",
        )
    decisions += [placement, ctx]
    if fit_target is not None:
        if placement.value == "gpu":
            note = "; the margin of the VRAM arithmetic (--fit is off)"
            fit_target = replace(fit_target, reason=fit_target.reason + note)
        decisions.append(fit_target)
    decisions += [
        kv,
        _flash_attn(settings),
        ubatch_decision,
        _threads(settings, host),
    ]
    if host.hybrid and host.pcores:
        reason = (
            "P-cores only: the service unit pins llama-server there (CPUAffinity=); E-cores "
            "would hold every step back"
        )
        decisions.append(Decision("cpus", host.pcores, reason))
    decisions.append(_parallel(settings, per_slot))
    moe = _n_cpu_moe(model, str(placement.value))
    if moe is not None:
        decisions.append(moe)
    kv_ram = kv_mib(model, kv_type, tokens)
    decisions.append(_load_mode(host, model, str(placement.value), kv_ram))
    if settings.workload == "vision":
        reason = "the vision projector (workload: vision)"
        decisions.append(Decision("mmproj", settings.mmproj_path, reason, "mmproj_path", True))
    if settings.workload == "mtp":
        reason = (
            f"draft-mtp: the model's own {model.nextn_predict_layers} MTP layer(s) draft tokens "
            "that the model verifies in one step (workload: mtp)"
        )
        decisions.append(Decision("spec_type", "draft-mtp", reason, "workload", True))
    decisions += _endpoint(settings, api_key_file)
    if settings.server_extra_args:
        reason = "as given, after every flag was checked against this binary's --help"
        extra = tuple(settings.server_extra_args)
        decisions.append(Decision("extra_args", extra, reason, "server_extra_args", True))
    return ServePlan(tuple(decisions), budgets.get(kv_type))
