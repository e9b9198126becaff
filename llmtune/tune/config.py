"""One llama-server configuration as tune measures it: the knobs, and nothing of the endpoint.

A ``Config`` is what changes speed: where the weights go (``placement``), the KV cache type,
flash attention, the physical batch, the threads, the batch, the --fit margin and the load mode.
Context, slots and model are the host's (the serving context is fixed for a tune), so they are
not part of it. ``None`` means llama.cpp's own default (what a user who leaves the flag out gets).

Placements:
- ``gpu``: every layer on the GPU (``-ngl all``, --fit off).
- ``fit``: llama.cpp's --fit at the serving context with ``fit_target`` MiB left free per GPU
  (None: llama.cpp's 1024); what it places is read from ``llama-fit-params`` (``fit_params.py``).
- ``cpu-moe``: every layer on the GPU but all expert tensors in RAM (``-cmoe``), the placement
  MoE guides recommend before --fit existed.
- ``cpu``: no GPU layers.

The three reference configurations of the benchmark report are here too: llama.cpp's defaults,
the seed documents' recipe and the plan (``from_plan``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmtune.planner.serve import ServePlan

PLACEMENTS = ("gpu", "fit", "cpu-moe", "cpu")
# What llama.cpp uses for a knob left out (0c1e570's llama-server and llama-bench --help).
LLAMA_DEFAULT_UBATCH = 512
LLAMA_DEFAULT_BATCH = 2048


@dataclass(frozen=True)
class Config:
    """Example (the plan under a 4 GB budget)::

    Config(placement="fit", kv="q8_0", flash_attn="on", ubatch=512, threads=16,
           fit_target=77559, load_mode="mlock")
    """

    placement: str
    kv: str = "f16"
    flash_attn: str = "auto"
    ubatch: int | None = None
    threads: int | None = None
    batch: int | None = None
    fit_target: int | None = None
    load_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement {self.placement!r}: expected one of {PLACEMENTS}")

    @property
    def valid(self) -> bool:
        """llama.cpp runs a quantized V cache only with flash attention."""
        return self.kv == "f16" or self.flash_attn != "off"

    def brief(self) -> str:
        """``fit@77559 q8_0 fa on ub 512 t 16`` (defaults as ``-``)."""
        where = self.placement
        if self.placement == "fit" and self.fit_target is not None:
            where += f"@{self.fit_target}"
        parts = [where, self.kv, f"fa {self.flash_attn}", f"ub {self.ubatch or '-'}"]
        parts.append(f"t {self.threads or '-'}")
        if self.batch:
            parts.append(f"b {self.batch}")
        if self.load_mode != "auto":
            parts.append(f"lm {self.load_mode}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


def from_plan(plan: ServePlan) -> Config:
    """The configuration ``llmtune plan`` gives the service."""
    margins = plan.value("fit_target")
    fit_target = None
    if plan.placement == "fit" and isinstance(margins, tuple) and margins:
        fit_target = int(margins[0])
    threads = plan.value("threads")
    return Config(
        placement=plan.placement,
        kv=str(plan.value("kv_cache")),
        flash_attn=str(plan.value("flash_attn")),
        ubatch=int(str(plan.value("ubatch"))),
        threads=int(str(threads)) if threads is not None else None,
        fit_target=fit_target,
        load_mode=str(plan.value("load_mode") or "auto"),
    )


def llama_defaults(fit_target: int | None, gpu: bool = True) -> Config:
    """``llama-server -m MODEL -c CTX`` (plus the VRAM budget, a fact of the host): --fit is on
    by default in this llama.cpp, f16 KV, flash attention auto, llama.cpp's threads. Without a
    GPU, the CPU."""
    if not gpu:
        return Config(placement="cpu")
    return Config(placement="fit", fit_target=fit_target)


def seed_recipe(fit_target: int | None, gpu: bool = True) -> Config:
    """The recipe of the seed documents (000, 004): ``-ngl -1 -fa -ctk q8_0 -ctv q8_0 -ub 512
    -b 2048`` (-ngl -1 is "auto", i.e. --fit); their -t is their host's, so llama.cpp's here."""
    return Config(
        placement="fit" if gpu else "cpu",
        kv="q8_0",
        flash_attn="on",
        ubatch=512,
        batch=2048,
        fit_target=fit_target if gpu else None,
    )
