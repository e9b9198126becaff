"""The llama-bench command line that measures the service as it is planned.

Pure: the service record (the llama-server argv the deploy wrote), the installed llama-bench's
parsed ``--help`` and its path go in; a ``BenchCommand`` comes out. Every flag is looked up in the
bench's own help, as the server's are (``planner/server_argv.py``); a flag the service needs and
this llama-bench lacks raises ``BenchArgvError`` before anything runs.

What is measured (one llama-bench run, ``-o jsonl``):
- ``pp512`` and ``tg128``: llama-bench's defaults, the numbers every llama.cpp report quotes.
- the same at the serving depth ``-d D``: a conversation fills the context over a session; the
  generation speed falls as the KV cache grows (H100, 8B: 274.7 t/s at depth 0, 211.7 at 16384),
  so a session's average rate is about the rate at half the context. ``D`` is half the context
  of one slot, capped at 16384 (the depth of the measured anchors; the depth's prompt is
  processed once per test and then restored from a saved state, so the cap bounds the cost on
  a CPU host: 16384 tokens at 88 t/s is three minutes).

How the server's flags become llama-bench's:
- ``-ngl all``: llama-bench reads an integer (its help: ``-ngl <n>``, default -1), so all layers
  are asked for as 999, any number above the layer count (what server_argv gives old servers).
- ``--fit on``: llama-bench has no ``--fit`` switch; it runs the same fitting (common_fit_params)
  before each test when ``--fit-target``/``--fit-ctx`` differ from their 0 defaults. So the
  server's margin is passed as ``-fitt`` and its context as ``-fitc`` (which makes sure the fit
  runs even with a 0 MiB margin; the bench then sizes the context itself). The difference,
  said in the notes: the bench fits each test's own context (512, 128, D+512 and D+128 tokens),
  not the server's ``-c``, so under a tight VRAM budget it can keep more layers on the GPU than
  the server does and measure above the service. Baseline and later runs are fitted alike, so a
  comparison between them stays fair.
- the unit's ``CPUAffinity=`` (hybrid CPUs: the P-cores) becomes ``-C <mask>``: llama-bench pins
  its compute threads to it, as the unit confines the server.
- ``-ts``/``-dev`` lists use "/" and ``-ot`` lists ";" in llama-bench, where "," would start
  another test.
- llama-server's switches (``--no-kv-offload``, ``--no-repack``, ``--no-host``,
  ``--no-op-offload``) are ``<0|1>`` values in llama-bench.

Running it (the caller's part): stdout is the JSONL (``results.parse_jsonl``), stderr the log.
Stop llama-server first: it holds its VRAM (a fitted bench would see less free memory and place
fewer layers) and would share the GPU with the bench. ``-lm mlock`` locks the model as the unit
does: run as root or under ``ulimit -l unlimited`` (the unit's LimitMEMLOCK=infinity), otherwise
llama.cpp warns and measures unlocked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from llmtune.facts.llama import LlamaServerHelpValue
from llmtune.facts.llama_service import ServiceRecord
from llmtune.planner.kv_cost import serving_depth
from llmtune.planner.serve import LLAMA_FIT_TARGET_MIB, UNKNOWN_CONTEXT
from llmtune.planner.server_argv import ALL_LAYERS_NUMBER

BENCH_NAME = "llama-bench"
PROMPT_TOKENS = 512
GEN_TOKENS = 128
# llama-bench's own default: five samples give the spread the thresholds are judged against.
DEFAULT_REPETITIONS = 5
# -cmoe (every expert on the CPU) as llama-bench's -ncmoe N (the experts of the first N layers).
ALL_MOE_LAYERS = "999"

_NUMBER = re.compile(r"^-\d+(\.\d+)?$")
_TRUTHY = ("on", "enabled", "true", "1")

# llama-server's spellings of the options read here (0c1e570's --help), by meaning.
_SERVER: dict[str, tuple[str, ...]] = {
    "model": ("-m", "--model"),
    "ngl": ("-ngl", "--gpu-layers", "--n-gpu-layers"),
    "fit": ("-fit", "--fit"),
    "fit_target": ("-fitt", "--fit-target"),
    "fit_ctx": ("-fitc", "--fit-ctx"),
    "ctx": ("-c", "--ctx-size"),
    "parallel": ("-np", "--parallel"),
    "ctk": ("-ctk", "--cache-type-k"),
    "ctv": ("-ctv", "--cache-type-v"),
    "fa": ("-fa", "--flash-attn"),
    "ubatch": ("-ub", "--ubatch-size"),
    "batch": ("-b", "--batch-size"),
    "threads": ("-t", "--threads"),
    "threads_batch": ("-tb", "--threads-batch"),
    "n_cpu_moe": ("-ncmoe", "--n-cpu-moe"),
    "cpu_moe": ("-cmoe", "--cpu-moe"),
    "cpu_mask": ("-C", "--cpu-mask"),
    "cpu_strict": ("--cpu-strict",),
    "poll": ("--poll",),
    "prio": ("--prio",),
    "numa": ("--numa",),
    "split_mode": ("-sm", "--split-mode"),
    "main_gpu": ("-mg", "--main-gpu"),
    "tensor_split": ("-ts", "--tensor-split"),
    "device": ("-dev", "--device"),
    "override_tensor": ("-ot", "--override-tensor"),
    "load_mode": ("-lm", "--load-mode"),
    "lazy_mode": ("-lzm", "--lazy-mode"),
    "no_kv_offload": ("-nkvo", "--no-kv-offload"),
    "kv_offload": ("-kvo", "--kv-offload"),
    "no_repack": ("-nr", "--no-repack"),
    "repack": ("--repack",),
    "no_host": ("--no-host",),
    "no_op_offload": ("--no-op-offload",),
    "op_offload": ("--op-offload",),
    # Releases before -lm/--load-mode.
    "mlock": ("--mlock",),
    "no_mmap": ("--no-mmap",),
    # The server's endpoint and identity: nothing to measure.
    "serving": ("-a", "--alias", "--host", "--port", "--api-key-file", "--metrics", "--jinja"),
}
_MEANING = {spelling: key for key, spellings in _SERVER.items() for spelling in spellings}
# Those that take no value: the record's argv is read without the server's --help, and
# llama-server takes no positional arguments, so any other flag's next item, unless it is a
# flag itself, is its value.
_SERVER_SWITCHES = frozenset(
    s
    for key in (
        "cpu_moe",
        "no_kv_offload",
        "kv_offload",
        "no_repack",
        "repack",
        "no_host",
        "no_op_offload",
        "op_offload",
        "mlock",
        "no_mmap",
    )
    for s in _SERVER[key]
) | {"--metrics", "--jinja"}

# Same value, llama-bench's spelling: server meaning -> (bench spellings, separator to use for
# the server's "," lists or None).
_VALUES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "ctk": (("-ctk", "--cache-type-k"), None),
    "ctv": (("-ctv", "--cache-type-v"), None),
    "fa": (("-fa", "--flash-attn"), None),
    "ubatch": (("-ub", "--ubatch-size"), None),
    "batch": (("-b", "--batch-size"), None),
    "threads": (("-t", "--threads"), None),
    "n_cpu_moe": (("-ncmoe", "--n-cpu-moe"), None),
    "cpu_mask": (("-C", "--cpu-mask"), None),
    "cpu_strict": (("--cpu-strict",), None),
    "poll": (("--poll",), None),
    "prio": (("--prio",), None),
    "numa": (("--numa",), None),
    "split_mode": (("-sm", "--split-mode"), None),
    "main_gpu": (("-mg", "--main-gpu"), None),
    "lazy_mode": (("-lzm", "--lazy-mode"), None),
    "tensor_split": (("-ts", "--tensor-split"), "/"),
    "device": (("-dev", "--device"), "/"),
    "override_tensor": (("-ot", "--override-tensor"), ";"),
}
# llama-server switch -> llama-bench option and value.
_SWITCHES: dict[str, tuple[tuple[str, ...], str]] = {
    "no_kv_offload": (("-nkvo", "--no-kv-offload"), "1"),
    "no_repack": (("--repack",), "0"),
    "no_host": (("--no-host",), "1"),
    "no_op_offload": (("-nopo", "--no-op-offload"), "1"),
    "cpu_moe": (("-ncmoe", "--n-cpu-moe"), ALL_MOE_LAYERS),
}
# Switches that restate llama.cpp's default: nothing to pass.
_DEFAULTS = ("kv_offload", "repack", "op_offload")
# What llama-bench cannot measure, and what that means for its numbers.
_NOT_MEASURED = {
    "--spec-type": "llama-bench measures the model alone, without speculative decoding",
    "--mmproj": "llama-bench measures text only (the vision projector is not loaded)",
    "-mm": "llama-bench measures text only (the vision projector is not loaded)",
    "-md": "llama-bench measures the model alone, without the draft model",
    "--model-draft": "llama-bench measures the model alone, without the draft model",
}


class BenchArgvError(ValueError):
    """The service's command line cannot become this llama-bench's; names the server's flag."""

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        self.message = message
        super().__init__(f"{flag}: {message}")


@dataclass(frozen=True)
class BenchCommand:
    """Example (the H100 plan with plenty of VRAM)::

    BenchCommand(argv=("/opt/llmtune/llama.cpp/current/bin/llama-bench", "-m",
                       "/srv/models/llama8b-q4_k_m.gguf", "-ngl", "999", "-ctk", "f16", ...,
                       "-p", "512", "-n", "128", "-d", "0,16384", "-r", "5", "-o", "jsonl"),
                 tests=("pp512", "tg128", "pp512@d16384", "tg128@d16384"), depth=16384,
                 notes=())

    ``tests``: the results the run prints, in its order; ``notes``: what of the service the bench
    does not reproduce, one sentence each, for the user to read next to the numbers.
    """

    argv: tuple[str, ...]
    tests: tuple[str, ...]
    depth: int
    notes: tuple[str, ...] = ()


def bench_binary_for(server_binary: str) -> str:
    """llama-bench of the same build: ``.../current/bin/llama-server`` -> ``.../llama-bench``."""
    return str(PurePosixPath(server_binary).with_name(BENCH_NAME))


def _is_flag(item: str) -> bool:
    return item.startswith("-") and not _NUMBER.match(item)


def server_options(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(flag, value)`` pairs of llama-server's arguments (without the binary); ``None`` for a
    switch. Example: ``["-m", "/m.gguf", "--no-host", "-t", "16"]`` ->
    ``[("-m", "/m.gguf"), ("--no-host", None), ("-t", "16")]``."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        flag = args[i]
        if not _is_flag(flag):
            raise BenchArgvError(flag, "not a flag: llama-server takes no positional arguments")
        following = args[i + 1] if i + 1 < len(args) else None
        if flag in _SERVER_SWITCHES or following is None or _is_flag(following):
            pairs.append((flag, None))
            i += 1
        else:
            pairs.append((flag, following))
            i += 2
    return pairs


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


class _Builder:
    """Appends llama-bench flags, each checked against the bench's --help."""

    def __init__(self, help: LlamaServerHelpValue, binary: str) -> None:
        self.help = help
        self.argv = [binary]

    def add(self, server_flag: str, aliases: tuple[str, ...], value: str) -> None:
        flag = self.help.spelling_for(*aliases)
        if flag is None:
            why = f"this llama-bench has no {aliases[-1]} to reproduce it (its --help)"
            raise BenchArgvError(server_flag, why)
        option = self.help.option(flag)
        choices = option.choices if option else ()
        if choices and value not in choices:
            why = f"this llama-bench's {flag} accepts {'|'.join(choices)}, not {value}"
            raise BenchArgvError(server_flag, why)
        self.argv += [flag, value]


def bench_command(
    record: ServiceRecord,
    help: LlamaServerHelpValue,
    binary: str,
    *,
    repetitions: int = DEFAULT_REPETITIONS,
    depth: int | None = None,
) -> BenchCommand:
    """The llama-bench run for the service ``record`` plans. ``depth`` overrides the serving
    depth (0: no depth tests)."""
    if not help.available:
        raise BenchArgvError(binary, f"llama-bench's --help could not be read: {help.reason}")
    if len(record.argv) < 2:
        raise BenchArgvError("argv", "the service record holds no llama-server command line")
    options = server_options(record.argv[1:])
    # llama.cpp keeps the last value of a repeated flag.
    last: dict[str, str | None] = {}
    for flag, value in options:
        last[_MEANING.get(flag, flag)] = value
    notes: list[str] = []
    out = _Builder(help, binary)

    model = last.get("model")
    if not model:
        raise BenchArgvError("-m", "the service's command line names no model")
    out.add("-m", ("-m", "--model"), model)

    # Context of one slot (llama.cpp gives each of -np slots -c / np), then the depth.
    parallel = _int_or_none(last.get("parallel")) or 1
    total = _int_or_none(last.get("ctx")) or 0
    ctx = total // parallel if total else _int_or_none(last.get("fit_ctx")) or 0
    if not ctx:
        ctx = UNKNOWN_CONTEXT
        notes.append(
            f"the service sets no context size: the depth test assumes {UNKNOWN_CONTEXT} tokens"
        )
    if parallel > 1:
        notes.append(
            f"llama-bench measures one sequence; the server's {parallel} slots share the "
            "hardware when several requests run at once"
        )

    chosen = serving_depth(ctx) if depth is None else max(depth, 0)

    fit_value = last.get("fit")
    fit = (fit_value or "").lower() in _TRUTHY if "fit" in last else record.placement == "fit"
    if fit:
        fit_flag = "--fit on"
        margins = (last.get("fit_target") or str(LLAMA_FIT_TARGET_MIB)).split(",")
        if len(set(margins)) > 1:
            raise BenchArgvError(
                "--fit-target",
                f"{','.join(margins)}: llama-bench applies one margin to every device (a list "
                "would run each test once per margin)",
            )
        out.add(fit_flag, ("-fitt", "--fit-target"), margins[0])
        out.add(fit_flag, ("-fitc", "--fit-ctx"), str(ctx))
        notes.append(
            # The largest test context: pp512 at the depth (prompt + depth tokens).
            f"--fit: llama-bench fits each test's own context (at most {chosen + PROMPT_TOKENS} "
            f"tokens) with the server's "
            f"{margins[0]} MiB margin, not the server's {total or ctx}-token KV cache: under a "
            "tight VRAM budget it may keep more layers on the GPU than the service does"
        )
    else:
        ngl = last.get("ngl")
        if ngl is None or ngl in ("all", "auto") or ngl.startswith("-"):
            # Server: all = -2, auto = -1 (without --fit: every layer); negative = all.
            option = help.option("-ngl") or help.option("--n-gpu-layers")
            ngl = "all" if option is not None and "'all'" in option.help else ALL_LAYERS_NUMBER
        out.add("-ngl", ("-ngl", "--n-gpu-layers"), ngl)

    _load_mode(last, out, notes)
    for flag, value in options:
        meaning = _MEANING.get(flag, "")
        if meaning in _VALUES:
            aliases, separator = _VALUES[meaning]
            if value is None:
                if meaning != "fa":
                    raise BenchArgvError(flag, "needs a value")
                value = "on"  # releases where -fa was a switch meaning on
            out.add(flag, aliases, value.replace(",", separator) if separator else value)
        elif meaning in _SWITCHES:
            aliases, fixed = _SWITCHES[meaning]
            out.add(flag, aliases, fixed)
        elif meaning == "threads_batch" and value != last.get("threads"):
            notes.append(
                f"{flag} {value}: llama-bench processes prompts with -t threads "
                f"({last.get('threads') or 'its default'})"
            )
        elif flag in _NOT_MEASURED:
            notes.append(f"{flag} {value or ''}".rstrip() + f": {_NOT_MEASURED[flag]}")
        elif not meaning:
            notes.append(f"{flag} {value or ''}".rstrip() + ": not passed to llama-bench")
        # Everything else was read above (model, placement, context) or does not change the
        # speed of one sequence (the endpoint, the defaults).

    if record.cpu_affinity and "cpu_mask" not in last:
        mask = sum(1 << cpu for cpu in set(record.cpu_affinity))
        out.add("CPUAffinity=", ("-C", "--cpu-mask"), f"0x{mask:x}")

    depths = f"0,{chosen}" if chosen > 0 else "0"
    out.add("(test)", ("-p", "--n-prompt"), str(PROMPT_TOKENS))
    out.add("(test)", ("-n", "--n-gen"), str(GEN_TOKENS))
    out.add("(test)", ("-d", "--n-depth"), depths)
    out.add("(test)", ("-r", "--repetitions"), str(repetitions))
    out.add("(test)", ("-o", "--output"), "jsonl")
    tests = [f"pp{PROMPT_TOKENS}", f"tg{GEN_TOKENS}"]
    if chosen > 0:
        tests += [f"pp{PROMPT_TOKENS}@d{chosen}", f"tg{GEN_TOKENS}@d{chosen}"]
    return BenchCommand(tuple(out.argv), tuple(tests), chosen, tuple(notes))


def _load_mode(last: dict[str, str | None], out: _Builder, notes: list[str]) -> None:
    """-lm as the server has it; older servers' --no-mmap/--mlock as the mode they mean."""
    mode = last.get("load_mode")
    if mode is None and ("mlock" in last or "no_mmap" in last):
        mode = {(True, True): "mlock", (True, False): "mmap+mlock", (False, True): "none"}[
            ("mlock" in last, "no_mmap" in last)
        ]
    if mode is None or mode == "auto":
        return
    if out.help.has("-lm") or out.help.has("--load-mode"):
        out.add("-lm", ("-lm", "--load-mode"), mode)
    elif mode in ("none", "mlock") and out.help.has("-mmp"):
        # llama-bench before -lm: -mmp 0 reads the model into RAM; it cannot lock it.
        out.add("-lm", ("-mmp",), "0")
        if mode == "mlock":
            notes.append(
                "--mlock: this llama-bench reads the model without mmap but cannot lock it"
            )
    else:
        raise BenchArgvError(f"-lm {mode}", "this llama-bench has no -lm/--load-mode")


def bench_argv(record: ServiceRecord, help: LlamaServerHelpValue, binary: str) -> list[str]:
    """``[binary, flags...]`` of ``bench_command`` with its defaults."""
    return list(bench_command(record, help, binary).argv)
