"""What the installed ``llama-bench`` accepts, from its own ``--help``.

llama-bench prints its help by hand (tools/llama-bench/llama-bench.cpp, ``print_usage``), not
through common/arg.cpp like llama-server: every option is indented two spaces, a placeholder is
always in angle brackets, and there are no ``(env: ...)`` lines::

      -r, --repetitions <n>                       number of times to repeat each test (default: 5)
      -ot --override-tensor <tensor name pattern>=<buffer type>;...
                                                        (default: disabled)

So it gets its own parser, producing the same ``LlamaServerHelpValue`` (``has``, ``option``,
``spelling_for``) as llama-server's help, and the bench's command line is checked the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmtune.facts.llama import (
    ROOT_DIR,
    LlamaOption,
    LlamaServerHelp,
    _choices,
)

BENCH_BINARY = f"{ROOT_DIR}/current/bin/llama-bench"

# "options:" / "test parameters:" at column 0.
_SECTION = re.compile(r"^([a-z][a-z ]*):$")
# An option's head: two spaces, then the spellings ("-r, --repetitions", "-ot --override-tensor").
_HEAD = re.compile(r"^  (-\S.*)$")
# "(seconds)" after "<0...N>", "(default: auto)" after the -lm placeholder (one space before it).
_TRAILING_NOTE = re.compile(r"^(?P<placeholder>.*?) (?P<note>\([^()]*\))$")


def _bench_option(text: str, body: Sequence[str], section_name: str) -> LlamaOption:
    head, _, first = text.partition("  ")
    spellings: list[str] = []
    words = head.split(" ")
    while words and words[0].startswith("-"):
        spellings.append(words.pop(0).rstrip(","))
    placeholder = " ".join(words).strip()
    lines = [first.strip()] if first.strip() else []
    if m := _TRAILING_NOTE.match(placeholder):
        placeholder = m["placeholder"]
        lines.insert(0, m["note"])
    lines += [line.strip() for line in body if line.strip()]
    return LlamaOption(
        spellings=tuple(spellings),
        placeholder=placeholder,
        choices=_choices(placeholder, lines),
        section=section_name,
        help=" ".join(lines),
    )


def parse_bench_help(lines: Sequence[str]) -> tuple[LlamaOption, ...]:
    """Parse ``llama-bench --help`` into options, in printed order.

    Lines at column 0 other than a section header ("usage: ...", a CUDA build's
    "ggml_cuda_init: ..." on stderr, the closing "Multiple values can be given ..." paragraph) end
    the current option and are skipped.
    """
    options: list[LlamaOption] = []
    head: str | None = None
    body: list[str] = []
    section_name = ""

    def flush() -> None:
        if head is not None:
            options.append(_bench_option(head, body, section_name))

    for raw in lines:
        line = raw.rstrip()
        if m := _HEAD.match(line):
            flush()
            head, body = m.group(1), []
        elif s := _SECTION.match(line):
            flush()
            head, body, section_name = None, [], s.group(1)
        elif line.startswith("   ") and head is not None:
            body.append(line)
        else:
            # Column 0 text or a blank line: the option (if any) is complete.
            flush()
            head, body = None, []
    flush()
    return tuple(options)


class LlamaBenchHelp(LlamaServerHelp):
    """The options the installed ``llama-bench`` accepts, from its own ``--help``."""

    binary = BENCH_BINARY
    parse = staticmethod(parse_bench_help)
