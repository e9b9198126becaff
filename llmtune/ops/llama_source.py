"""Reading a llama.cpp source tarball on the machine that runs the deploy (before any host).

The tarball comes with ``<name>.json`` beside it (scripts/llama_cpp_source.py writes both): the
commit and build number the tree was taken at, which a tree without .git cannot tell CMake.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from llmtune.facts.llama_source import cmake_options


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class TarballSource:
    path: Path
    commit: str
    build_number: int
    sha256: str
    options: frozenset[str]


def read_tarball(path: Path, ref: str) -> TarballSource:
    meta_path = path.with_name(path.name.removesuffix(".tar.gz") + ".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{meta_path}: cannot read the tarball's record ({exc})") from exc
    commit = str(meta.get("commit", ""))
    if not commit.startswith(ref) and not meta.get("ref") == ref:
        raise SourceError(
            f"{path}: holds commit {commit[:12] or 'unknown'}, but llama_cpp_ref pins {ref}"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if meta.get("sha256") and meta["sha256"] != digest:
        raise SourceError(f"{path}: sha256 {digest[:12]} differs from its record's")
    options: set[str] = set()
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith(("/CMakeLists.txt", "ggml/CMakeLists.txt")) and (
                member.name.count("/") <= 2
            ):
                handle = tar.extractfile(member)
                if handle:
                    options |= cmake_options(handle.read().decode(errors="replace"))
    return TarballSource(
        path, commit, int(meta.get("build_number") or 0), digest, frozenset(options)
    )
