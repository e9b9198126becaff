"""Pack the llama.cpp tree vendored in PyPI's llama-cpp-python sdist, for hosts without GitHub.

    python scripts/llama_cpp_source.py OUT_DIR [--cache DIR]

Writes OUT_DIR/llama.cpp-<short sha>.tar.gz (top directory llama.cpp-<short sha>/, reproducible)
and OUT_DIR/llama.cpp-<short sha>.json (commit, build_number, source, sha256, bytes). Stdlib only;
does nothing while the outputs match their JSON.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

VERSION = "0.3.36"
SOURCE = f"pypi:llama-cpp-python=={VERSION}"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
# Pinned: pip download checks no hash by itself, and the pack must be the source we measured.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TOP = f"llama_cpp_python-{VERSION}/"
TREE, GIT_DIR = TOP + "vendor/llama.cpp/", TOP + ".git/modules/vendor/llama.cpp/"
# What no configure or build step of llama-server/-bench/-quantize/-fit-params reads, relative to
# the llama.cpp root and anchored there (src/models/ is source). examples/, tests/, pocs/ stay:
# CMake adds them by default; scripts/ stays: tools/ui runs scripts/ui-assets.cmake.
TRIM = (
    "docs/", "models/", ".github/", "media/", "benches/",  # docs, vocab GGUFs, CI, images
    "gguf-py/", "conversion/", "requirements/", "requirements.txt",  # Python model conversion
    ".devops/", "ci/", "skills/", ".gemini/", ".pi/", ".git",  # containers, CI, agents, gitlink
    "tools/server/tests/", "tools/server/bench/", "tools/ui/tests/",  # Python/JS test suites
)  # fmt: skip


def trimmed(rel: str) -> bool:
    """True for a path (relative to the llama.cpp root) that the pack leaves out."""
    if "/" not in rel and rel.startswith("convert_") and rel.endswith(".py"):
        return True
    # "docs/" takes the directory and all below it; ".git" only itself, not ".gitignore".
    return any(rel == t.rstrip("/") or (t[-1] == "/" and rel.startswith(t)) for t in TRIM)


def read_commit(git_dir: Path) -> str:
    """The full SHA that HEAD names: detached (the sdist's case), via a loose or a packed ref."""
    head = (git_dir / "HEAD").read_text().strip()
    for _ in range(5):  # a symbolic ref may name another one
        if not head.startswith("ref: "):
            break
        ref = head[5:].strip()
        if (git_dir / ref).is_file():
            head = (git_dir / ref).read_text().strip()
        else:  # `git pack-refs` moved it into "<sha> <ref>" lines
            packed = git_dir / "packed-refs"
            lines = packed.read_text().splitlines() if packed.is_file() else []
            head = next((ln.split()[0] for ln in lines if ln.endswith(" " + ref)), "")
    if len(head) != 40 or not all(c in "0123456789abcdef" for c in head):
        raise ValueError(f"{git_dir}/HEAD does not resolve to a commit SHA (got {head!r})")
    return head


def commit_time(git_dir: Path, sha: str) -> int:
    """The committer time of a loose commit object (the sdist has one), or 0."""
    path = git_dir / "objects" / sha[:2] / sha[2:]
    raw = zlib.decompress(path.read_bytes()) if path.is_file() else b""
    if raw and hashlib.sha1(raw).hexdigest() != sha:  # an object is named by its own hash
        raise ValueError(f"corrupt git object {path}")
    lines = raw.partition(b"\0")[2].decode(errors="replace").splitlines()
    return next((int(ln.split()[-2]) for ln in lines if ln.startswith("committer ")), 0)


def _normalise(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    info.uid, info.gid, info.uname, info.gname, info.mtime = 0, 0, "", "", mtime
    # Only the executable bit survives: umask and owners differ between machines.
    info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
    return info


def pack(tree: Path, out: Path, prefix: str, mtime: int) -> None:
    """Tar + gzip ``tree`` as ``prefix/``; the same tree gives the same bytes.

    ``tar.add`` recurses in sorted order (Python 3.7+); the gzip header gets no name and mtime 0.
    """
    with (
        out.open("wb") as raw,
        gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.add(tree, arcname=prefix, filter=lambda info: _normalise(info, mtime))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def up_to_date(out_dir: Path) -> Path | None:
    """The tarball of this source whose JSON still matches it, if any."""
    for meta in sorted(out_dir.glob("llama.cpp-*.json")):
        tarball = meta.with_name(meta.name.replace(".json", ".tar.gz"))
        try:
            info = json.loads(meta.read_text())
            if info["source"] == SOURCE and sha256(tarball) == info["sha256"]:
                return tarball
        except (OSError, ValueError, KeyError):  # damaged or half-deleted: pack again
            continue
    return None


def fetch_sdist(cache: Path) -> Path:
    sdist = cache / SDIST
    if not (sdist.is_file() and sha256(sdist) == SDIST_SHA256):
        print(f"llama_cpp_source: downloading {SOURCE} (77 MB) with pip into {cache}")
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, f"llama-cpp-python=={VERSION}", "-d", str(cache)], check=True)
        if sha256(sdist) != SDIST_SHA256:
            raise SystemExit(f"llama_cpp_source: {sdist}: sha256 is not {SDIST_SHA256}")
    return sdist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache", type=Path, help="where the sdist is kept (OUT_DIR/sdist)")
    args = parser.parse_args(argv)
    out_dir, started = args.out_dir, time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    if done := up_to_date(out_dir):
        print(f"llama_cpp_source: {done} is up to date")
        return 0
    sdist = fetch_sdist(args.cache or out_dir / "sdist")
    print(f"llama_cpp_source: extracting vendor/llama.cpp from {sdist}")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp, tarfile.open(sdist) as tar:
        keep = [
            m
            for m in tar
            if (m.name.startswith(TREE) and not trimmed(m.name[len(TREE) :]))
            or (m.name.startswith(GIT_DIR) and "/objects/pack/" not in m.name)
        ]
        # The "data" filter (3.12, backported to 3.10.12) refuses links leaving the directory.
        tar.extractall(tmp, keep, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        git_dir = Path(tmp, GIT_DIR)
        commit = read_commit(git_dir)
        when = commit_time(git_dir, commit)
        name = f"llama.cpp-{commit[:7]}"
        print(f"llama_cpp_source: commit {commit} (HEAD of the sdist's {GIT_DIR[len(TOP) :]})")
        tarball = out_dir / f"{name}.tar.gz"
        # The commit's own time as every mtime: fixed, and still a meaningful date.
        pack(Path(tmp, TREE), Path(tmp, "pack.tar.gz"), name, when)
        os.replace(Path(tmp, "pack.tar.gz"), tarball)
    info = {
        "commit": commit,
        # llama.cpp's cmake counts `git rev-list --count HEAD`; the sdist's clone is shallow
        # (depth 1, no tags): the count there is 1, not the release number. Unknown offline.
        "build_number": 0,
        "source": SOURCE,
        "sha256": sha256(tarball),
        "bytes": tarball.stat().st_size,
        "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) if when else "",
    }
    # Written last: the JSON marks the pair complete.
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    seconds = time.monotonic() - started
    print(f"llama_cpp_source: wrote {tarball} ({info['bytes'] / 1e6:.1f} MB) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
