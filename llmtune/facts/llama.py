"""llama.cpp as installed: what its binary accepts, which build it is, which builds the host has.

- ``LlamaServerHelp``: ``llama-server --help`` parsed into options (spellings, placeholder, env
  name, choices). Flags change between llama.cpp versions (``--no-mmap``/``--mlock`` became
  ``-lm/--load-mode``), so the service's flags are generated for the binary actually installed.
- ``LlamaVersion``: ``llama-server --version`` (version, build number, commit, compiler, target).
- ``LlamaBuilds``: the build directories under ``/opt/llmtune/llama.cpp`` (their
  ``build-info.json``, written by ``llmtune.ops.llama_build``) and which one ``current`` points at.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmtune.facts.probe import (
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

ROOT_DIR = "/opt/llmtune/llama.cpp"
SERVER_BINARY = f"{ROOT_DIR}/current/bin/llama-server"

# "----- common params -----": llama.cpp's help groups options under such headers.
_SECTION = re.compile(r"^-{3,}\s*(.*?)\s*-{3,}$")
# An option's first line starts at column 0 with its spellings, comma-separated ("-h,    --help,
# --usage"); the placeholder follows after one space and may hold single spaces
# ("<tensor name pattern>=<buffer type>,..."); the help text starts after 2+ spaces (llama.cpp pads
# the head to column 40, or puts the help on the next line when the head is longer).
_HEAD = re.compile(r"^(?P<spellings>-[^\s,]+(?:,\s+-[^\s,]+)*)(?: (?P<rest>.*))?$")
_ENV = re.compile(r"^\(env: ([A-Za-z0-9_]+)\)$")
_ALLOWED = re.compile(r"allowed values: (.+)$")
# "- mmap+mlock: ..." / "- layer (default): ..." / "- 0: generic output" in the help text.
_BULLET = re.compile(r"^- ([\w.+-]+)(?: \(default\))?: ")
# A bare comma list of lowercase words as placeholder ("none,draft-simple,ngram-cache").
_WORD_LIST = re.compile(r"^[a-z0-9][a-z0-9_.+-]*(?:,[a-z0-9][a-z0-9_.+-]*)+$")


@dataclass(frozen=True)
class LlamaOption:
    """One option of ``llama-server --help``.

    Example (``-lm,   --load-mode MODE`` with its help)::

        LlamaOption(spellings=("-lm", "--load-mode"), placeholder="MODE",
                    env="LLAMA_ARG_LOAD_MODE",
                    choices=("auto", "none", "mmap", "mlock", "mmap+mlock", "dio"),
                    section="common", help="model loading mode (default: auto) - auto: ...")
    """

    # Every spelling the parser accepts, as printed: short and long forms and the negations
    # that share the option ("--kv-offload", "--no-kv-offload").
    spellings: tuple[str, ...]
    # The value's placeholder as printed ("N", "MODE", "[on|off|auto]"); "" for a switch. A value
    # is always required when there is one, brackets or not: llama.cpp reads the next argument,
    # so "-fa" alone (a switch in older releases) swallows the flag after it.
    placeholder: str = ""
    # The environment variable llama.cpp reads for it ("" where the help lists none).
    env: str = ""
    # The values the help enumerates (in the placeholder, "allowed values: ..." or a "- name:"
    # list); () where it does not (free numbers, paths).
    choices: tuple[str, ...] = ()
    # The help's group: "common", "sampling", "speculative", "example-specific".
    section: str = ""
    help: str = ""
    # Still listed, but the binary refuses it ("the argument has been removed. use ...").
    removed: bool = False
    # Accepted with a warning ("(DEPRECATED)").
    deprecated: bool = False

    @property
    def takes_value(self) -> bool:
        return bool(self.placeholder)


@dataclass(frozen=True)
class LlamaServerHelpValue:
    """Example::

    LlamaServerHelpValue(installed=True, rc=0, reason="", options=(LlamaOption(...), ...))

    ``installed=False`` when the binary is missing; ``rc`` non-zero (or None when cut short) with
    ``reason`` when it ran and failed (a missing shared library, a crash).
    """

    installed: bool = False
    rc: int | None = None
    reason: str = ""
    options: tuple[LlamaOption, ...] = ()

    @property
    def available(self) -> bool:
        return bool(self.options)

    def option(self, flag: str) -> LlamaOption | None:
        """The option one of whose spellings is ``flag`` (``--fit=on`` reads as ``--fit``)."""
        name = flag.split("=", 1)[0]
        if name.startswith("--"):  # llama.cpp reads "--n_gpu_layers" as "--n-gpu-layers"
            name = name.replace("_", "-")
        return next((opt for opt in self.options if name in opt.spellings), None)

    def has(self, flag: str) -> bool:
        """Whether this binary accepts ``flag``; an option the help lists as removed does not."""
        opt = self.option(flag)
        return opt is not None and not opt.removed

    def spelling_for(self, *aliases: str) -> str | None:
        """The first of ``aliases`` this binary accepts, e.g. ``("--no-mmap", "-lm")`` -> "-lm"."""
        return next((alias for alias in aliases if self.has(alias)), None)


def _choices(placeholder: str, help_lines: Sequence[str]) -> tuple[str, ...]:
    """The values enumerated in the placeholder, else in "allowed values:", else as "- name:"."""
    inner = placeholder[1:-1] if placeholder[:1] in "[<{" and placeholder[-1:] in "]>}" else ""
    if inner and "..." not in inner and ".." not in inner:
        if "|" in inner:  # "[on|off|auto]", "<0|1>"
            return tuple(inner.split("|"))
        if placeholder[0] == "{":  # "{none,linear,yarn}"
            return tuple(inner.split(","))
    if _WORD_LIST.match(placeholder):
        return tuple(placeholder.split(","))
    for line in help_lines:
        if m := _ALLOWED.search(line):
            return tuple(v.strip() for v in m.group(1).split(",") if v.strip())
    if placeholder:
        bullets = tuple(m.group(1) for line in help_lines if (m := _BULLET.match(line)))
        if bullets:
            return bullets
    return ()


def _option(head: str, body: Sequence[str], section_name: str) -> LlamaOption:
    m = _HEAD.match(head)
    assert m  # the caller matched it already
    spellings = tuple(s.strip() for s in m.group("spellings").split(","))
    rest = m.group("rest") or ""
    # Two spaces or more right after the spellings: a switch, the help follows; otherwise the
    # placeholder runs up to the padding.
    placeholder, _, first = ("", "", rest) if rest.startswith(" ") else rest.partition("  ")
    lines = [first.strip()] if first.strip() else []
    env = ""
    for line in body:
        text = line.strip()
        if e := _ENV.match(text):
            env = e.group(1)
        elif text:
            lines.append(text)
    help_text = " ".join(lines)
    placeholder = placeholder.strip()
    return LlamaOption(
        spellings=spellings,
        placeholder=placeholder,
        env=env,
        choices=_choices(placeholder, lines),
        section=section_name,
        help=help_text,
        removed="the argument has been removed" in help_text,
        deprecated="DEPRECATED" in help_text,
    )


def parse_help(lines: Sequence[str]) -> tuple[LlamaOption, ...]:
    """Parse llama.cpp's ``--help`` (common/arg.cpp's format) into options, in printed order.

    Lines that are neither an option's head (column 0, ``-``), its indented continuation nor a
    section header (a backend's start-up messages on stderr, "ggml_cuda_init: ...") end the
    current option and are skipped.
    """
    options: list[LlamaOption] = []
    head: str | None = None
    body: list[str] = []
    section_name = ""

    def flush() -> None:
        if head is not None:
            options.append(_option(head, body, section_name))

    for line in lines:
        if s := _SECTION.match(line.rstrip()):
            flush()
            head, body, section_name = None, [], s.group(1).removesuffix(" params")
        elif _HEAD.match(line):
            flush()
            head, body = line.rstrip(), []
        elif line[:1].isspace():
            if head is not None:
                body.append(line)
        elif line.strip():
            flush()
            head, body = None, []
    flush()
    return tuple(options)


class LlamaServerHelp(LlmtuneFact[LlamaServerHelpValue]):
    """The options the installed ``llama-server`` accepts, from its own ``--help``.

    Other llama.cpp tools subclass it with their binary and their help's line parser.
    """

    binary = SERVER_BINARY
    parse = staticmethod(parse_help)

    def command(self, binary: str | None = None) -> str:
        path = binary or self.binary
        return c_locale(tool(path, f"{shlex.quote(path)} --help"))

    def process(self, output: list[str]) -> LlamaServerHelpValue:
        return help_value(output, self.parse)


def help_value(
    output: list[str], parse: Callable[[Sequence[str]], tuple[LlamaOption, ...]]
) -> LlamaServerHelpValue:
    """A llama.cpp tool's ``--help`` (run through ``tool()``) parsed with ``parse``."""
    if not output:
        return LlamaServerHelpValue(reason="no output")
    run = parse_tool(output)
    if run.missing:
        return LlamaServerHelpValue(reason=run.brief())
    options = parse(run.lines) if run.ok else ()
    reason = "" if options else (run.brief() if not run.ok else "--help listed no options")
    return LlamaServerHelpValue(installed=True, rc=run.rc, reason=reason, options=options)


# "version: 0.5.0-dev (build 1, commit 0c1e570)" (0.4+); before: "version: 4200 (3c7fbcb)".
_VERSION_NEW = re.compile(r"^version: (\S+) \(build (\d+), commit (\S+)\)$")
_VERSION_OLD = re.compile(r"^version: (\d+) \((\S+)\)$")
_BUILT_WITH = re.compile(r"^built with (.+) for (.+)$")


@dataclass(frozen=True)
class LlamaVersionValue:
    """Example (a tarball build, no .git and no -DLLAMA_BUILD_COMMIT)::

    LlamaVersionValue(installed=True, rc=0, version="0.5.0-dev", build_number=0,
                      commit="unknown", compiler="GNU 13.3.0", target="Linux x86_64")
    """

    installed: bool = False
    rc: int | None = None
    reason: str = ""
    # The semantic version ("0.5.0-dev"); "" for builds that print only their build number.
    version: str = ""
    # LLAMA_BUILD_NUMBER: the commit count (release tag b<N>) when built from a full clone; 0 from
    # a tree without .git, 1 from a depth-1 clone. Only meaningful with a known commit.
    build_number: int | None = None
    # As built: short (from git) or as passed with -DLLAMA_BUILD_COMMIT; "unknown" without both.
    commit: str = ""
    compiler: str = ""
    target: str = ""

    @property
    def available(self) -> bool:
        return bool(self.commit)

    @property
    def commit_known(self) -> bool:
        return self.commit not in ("", "unknown")

    def is_commit(self, sha: str) -> bool:
        """Whether the binary was built from ``sha`` (either may be abbreviated)."""
        if not self.commit_known or len(sha) < 7:
            return False
        a, b = self.commit.lower(), sha.lower()
        return a.startswith(b) or b.startswith(a)


class LlamaVersion(LlmtuneFact[LlamaVersionValue]):
    """Which llama.cpp the installed ``llama-server`` is (``--version``)."""

    def command(self, binary: str = SERVER_BINARY) -> str:
        return c_locale(tool(binary, f"{shlex.quote(binary)} --version"))

    def process(self, output: list[str]) -> LlamaVersionValue:
        run = parse_tool(output)
        if not output or run.missing:
            return LlamaVersionValue(reason=run.brief() if output else "no output")
        fields: dict[str, Any] = {}
        for line in run.lines:  # CUDA builds print device lines on stderr first
            text = line.strip()
            if m := _VERSION_NEW.match(text):
                fields.update(version=m[1], build_number=int(m[2]), commit=m[3])
            elif m := _VERSION_OLD.match(text):
                fields.update(build_number=int(m[1]), commit=m[2])
            elif m := _BUILT_WITH.match(text):
                fields.update(compiler=m[1], target=m[2])
        reason = "" if fields.get("commit") else (run.brief() or "no version line")
        return LlamaVersionValue(installed=True, rc=run.rc, reason=reason, **fields)


@dataclass(frozen=True)
class LlamaBuild:
    """One directory ``builds/<dir>/``; ``info`` is its ``build-info.json`` as written.

    ``build-info.json`` (one JSON object; written last, after the smoke test, so its presence
    marks the build complete)::

        build_id            str        the directory's name: <ref>-<hash of the CMake flags>
        ref                 str        the pinned tag or commit from the settings ("b8149")
        commit              str        full SHA of the source tree built
        build_number        int        LLAMA_BUILD_NUMBER passed to CMake (0: unknown)
        cmake_flags         [str]      every -D flag of the configure step, in order
        cuda_architectures  [int]      CMAKE_CUDA_ARCHITECTURES ([] for a CPU build)
        targets             [str]      the CMake targets built
        cuda_version        str        nvcc's release ("13.0"); "" without nvcc
        driver              str        the NVIDIA driver at build time; "" without a GPU
        compiler            str        the first line of ``c++ --version``
        built_at            str        ISO 8601 UTC ("2026-11-23T12:00:00Z")
        source              str        where the tree came from ("pypi:llama-cpp-python==0.3.36",
                                       a git URL)

    Unknown keys are kept; missing ones read as empty.
    """

    dir: str
    info: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # build-info.json is absent (build unfinished or failed) or unreadable (``error`` says why).
    complete: bool = False
    error: str = ""

    def _str(self, key: str) -> str:
        value = self.info.get(key)
        return value if isinstance(value, str) else ""

    def _list(self, key: str) -> tuple[Any, ...]:
        value = self.info.get(key)
        return tuple(value) if isinstance(value, list) else ()

    @property
    def commit(self) -> str:
        return self._str("commit")

    @property
    def ref(self) -> str:
        return self._str("ref")

    @property
    def cmake_flags(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self._list("cmake_flags"))

    @property
    def cuda_architectures(self) -> tuple[int, ...]:
        return tuple(a for a in self._list("cuda_architectures") if isinstance(a, int))

    @property
    def build_number(self) -> int | None:
        """``build_number``, else the -DLLAMA_BUILD_NUMBER flag; None when neither says."""
        value = self.info.get("build_number")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        flag = next((f for f in self.cmake_flags if f.startswith("-DLLAMA_BUILD_NUMBER=")), "")
        number = flag.partition("=")[2]
        return int(number) if number.isdigit() else None

    @property
    def built_at(self) -> str:
        return self._str("built_at")


@dataclass(frozen=True)
class LlamaBuildsValue:
    """Example::

    LlamaBuildsValue(current_target="builds/b8149-1a2b3c4d5e",
                     builds=(LlamaBuild(dir="b8149-1a2b3c4d5e", info={...}, complete=True),))
    """

    # ``readlink current`` as is ("" when there is no symlink).
    current_target: str = ""
    # Every directory under builds/, complete or not, sorted by name.
    builds: tuple[LlamaBuild, ...] = ()

    @property
    def current(self) -> str:
        """The build directory's name ``current`` points at ("" when none)."""
        return self.current_target.rstrip("/").removeprefix("builds/")

    @property
    def current_build(self) -> LlamaBuild | None:
        return self.get(self.current) if self.current else None

    @property
    def complete(self) -> tuple[LlamaBuild, ...]:
        return tuple(b for b in self.builds if b.complete)

    def get(self, build_dir: str) -> LlamaBuild | None:
        return next((b for b in self.builds if b.dir == build_dir), None)


class LlamaBuilds(LlmtuneFact[LlamaBuildsValue]):
    """The llama.cpp builds on the host and the one ``current`` points at."""

    def command(self, root_dir: str = ROOT_DIR, root: str = "") -> str:
        base = shlex.quote(sysroot(root, root_dir))
        return c_locale(
            join(
                section("current", f"readlink {base}/current 2>/dev/null; true"),
                # Directories only, each printed as "name/".
                section(
                    "dirs", f"(cd {base}/builds 2>/dev/null && ls -1d -- */ 2>/dev/null); true"
                ),
                # grep -H prints PATH:LINE for each line of every build-info.json (the glob stays
                # unquoted to expand; the quoted part cannot).
                section("info", read_files([f"{base}/builds/*/build-info.json"])),
            )
        )

    def process(self, output: list[str]) -> LlamaBuildsValue:
        parts = split_sections(output)
        current = next((ln.strip() for ln in parts.get("current", []) if ln.strip()), "")
        names = {ln.strip().rstrip("/") for ln in parts.get("dirs", []) if ln.strip()}
        infos: dict[str, tuple[dict[str, Any], str]] = {}
        for path, lines in parse_grep_h(parts.get("info", [])).values.items():
            name = path.rsplit("/", 2)[-2]
            names.add(name)
            try:
                data = json.loads("\n".join(lines))
            except ValueError as exc:
                infos[name] = ({}, f"build-info.json is not JSON: {exc}")
                continue
            infos[name] = (data, "") if isinstance(data, dict) else ({}, "not a JSON object")
        builds = tuple(
            LlamaBuild(
                dir=name,
                info=infos.get(name, ({}, ""))[0],
                complete=name in infos and not infos[name][1],
                error=infos.get(name, ({}, ""))[1],
            )
            for name in sorted(names)
        )
        return LlamaBuildsValue(current_target=current, builds=builds)
