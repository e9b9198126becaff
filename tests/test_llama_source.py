"""scripts/llama_cpp_source.py without the 77 MB download: commit discovery on real git metadata
(a submodule made with git here, the sdist's layout), the trimming rules, reproducible packs, and
the whole run on a small sdist of the same layout."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "llama_cpp_source.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_cpp_source", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


src = _load()


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_AUTHOR_DATE": "2026-10-01T02:11:48Z",
        "GIT_COMMITTER_DATE": "2026-10-01T02:11:48Z",
    }
    # Submodules from a local path need file:// allowed (git >= 2.38.1 refuses it by default).
    cmd = ["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=master", *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def make_upstream(path: Path) -> str:
    """A tiny llama.cpp-shaped repository with two commits; returns HEAD's SHA."""
    files = {
        "CMakeLists.txt": "project(llama.cpp C CXX)\n",
        "src/models/llama.cpp": "// model code, not the models/ directory\n",
        "models/ggml-vocab-llama-spm.gguf": "GGUF" + "x" * 4096,
        "docs/build.md": "# Build\n",
        ".github/workflows/build.yml": "on: push\n",
        "convert_hf_to_gguf.py": "print('convert')\n",
        "scripts/ui-assets.cmake": "message(STATUS ui)\n",
        "tools/server/server.cpp": "int main() {}\n",
        "tools/server/tests/test_basic.py": "def test(): pass\n",
        ".gitignore": "build/\n",
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    (path / "build-xcframework.sh").write_text("#!/bin/sh\n")
    (path / "build-xcframework.sh").chmod(0o755)
    path.mkdir(exist_ok=True)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    (path / "src" / "llama.h").write_text("#pragma once\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "webgpu: fix SSM_SCAN binding aliasing (#29750)")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def sdist_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``llama_cpp_python-<v>/`` with vendor/llama.cpp as a real submodule, as in the sdist."""
    base = tmp_path_factory.mktemp("sdist")
    upstream = base / "upstream"
    upstream.mkdir()
    sha = make_upstream(upstream)
    top = base / f"llama_cpp_python-{src.VERSION}"
    top.mkdir()
    git(top, "init", "-q")
    git(top, "submodule", "add", "-q", str(upstream), "vendor/llama.cpp")
    git(top / "vendor" / "llama.cpp", "checkout", "-q", "--detach", sha)
    return top, sha


def test_commit_of_the_sdist_submodule_layout(sdist_tree: tuple[Path, str]) -> None:
    top, sha = sdist_tree
    git_dir = top / ".git" / "modules" / "vendor" / "llama.cpp"
    assert (top / "vendor" / "llama.cpp" / ".git").read_text().startswith("gitdir: ")
    # Detached HEAD, as in the sdist.
    assert src.read_commit(git_dir) == sha
    expected = int(git(top / "vendor" / "llama.cpp", "log", "-1", "--format=%ct"))
    assert src.commit_time(git_dir, sha) == expected == 1790820708


def test_commit_through_loose_and_packed_refs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    sha = make_upstream(repo)
    git_dir = repo / ".git"
    assert (git_dir / "HEAD").read_text() == "ref: refs/heads/master\n"
    assert src.read_commit(git_dir) == sha  # refs/heads/master, a loose ref
    git(repo, "pack-refs", "--all")
    assert not (git_dir / "refs" / "heads" / "master").exists()
    assert src.read_commit(git_dir) == sha  # now only in packed-refs
    git(repo, "gc", "-q")  # objects packed too: the commit time is no longer readable here
    assert src.commit_time(git_dir, sha) == 0
    (git_dir / "HEAD").write_text("ref: refs/heads/gone\n")
    with pytest.raises(ValueError, match="does not resolve"):
        src.read_commit(git_dir)


@pytest.mark.parametrize(
    ("path", "dropped"),
    [
        ("docs", True),
        ("docs/build.md", True),
        ("models/ggml-vocab-llama-spm.gguf", True),
        (".github/workflows/build.yml", True),
        ("media/llama0-logo.png", True),
        ("benches/dgx-spark/run.sh", True),
        ("gguf-py/gguf/gguf_writer.py", True),
        ("convert_hf_to_gguf.py", True),
        ("tools/server/tests/unit/test_basic.py", True),
        ("tools/ui/tests/e2e/a.spec.ts", True),
        (".git", True),
        # Sources under a "models" directory deeper in the tree stay: the prefix is anchored.
        ("src/models/llama.cpp", False),
        ("tools/mtmd/models/cogvlm.cpp", False),
        (".gitignore", False),
        ("CMakeLists.txt", False),
        ("scripts/ui-assets.cmake", False),
        ("examples/CMakeLists.txt", False),
        ("tests/CMakeLists.txt", False),
        ("tools/server/server.cpp", False),
        ("tools/llama-bench/llama-bench.cpp", False),
        ("tools/quantize/quantize.cpp", False),
        ("tools/fit-params/fit-params.cpp", False),
        ("ggml/src/ggml-cuda/fattn.cu", False),
        ("tools/ui/src/app.html", False),
        ("examples/convert_legacy_llama.py", False),
    ],
)
def test_trimming_rules(path: str, dropped: bool) -> None:
    assert src.trimmed(path) is dropped


def _tree(root: Path) -> Path:
    for name, text in {
        "b/z.c": "z\n",
        "a.txt": "a\n",
        "b/a.h": "h\n",
        "c/d/e.cmake": "e\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    return root


def test_packs_of_the_same_tree_are_identical(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    one, two = tmp_path / "one.tar.gz", tmp_path / "two.tar.gz"
    src.pack(tree, one, "llama.cpp-abc1234", 1790820708)
    # What differs between two machines or two runs: file times, group/other bits.
    for path in tree.rglob("*"):
        os.utime(path, (1, 1))
    (tree / "a.txt").chmod(0o664)
    src.pack(tree, two, "llama.cpp-abc1234", 1790820708)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "llama.cpp-abc1234"
    assert all(n == names[0] or n.startswith(names[0] + "/") for n in names)
    assert names == [
        "llama.cpp-abc1234",
        "llama.cpp-abc1234/a.txt",
        "llama.cpp-abc1234/b",
        "llama.cpp-abc1234/b/a.h",
        "llama.cpp-abc1234/b/z.c",
        "llama.cpp-abc1234/c",
        "llama.cpp-abc1234/c/d",
        "llama.cpp-abc1234/c/d/e.cmake",
        "llama.cpp-abc1234/run.sh",
    ]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (0, 0, "", "", 1790820708)
    }
    modes = {m.name.rsplit("/", 1)[-1]: m.mode for m in members}
    assert (modes["run.sh"], modes["a.txt"], modes["b"]) == (0o755, 0o644, 0o755)


def _sdist(top: Path, out: Path) -> Path:
    """Tar the sdist tree the way PyPI's is laid out (one top directory)."""
    sdist = out / src.SDIST
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return sdist


def test_whole_run_on_a_small_sdist_then_nothing_to_do(
    sdist_tree: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top, sha = sdist_tree
    sdist = _sdist(top, tmp_path / "cache")
    monkeypatch.setattr(src, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    out = tmp_path / "out"
    assert src.main([str(out), "--cache", str(tmp_path / "cache")]) == 0
    tarball = out / f"llama.cpp-{sha[:7]}.tar.gz"
    info = json.loads((out / f"llama.cpp-{sha[:7]}.json").read_text())
    assert info == {
        "commit": sha,
        "build_number": 0,
        "source": "pypi:llama-cpp-python==0.3.36",
        "sha256": hashlib.sha256(tarball.read_bytes()).hexdigest(),
        "bytes": tarball.stat().st_size,
        "committed_at": "2026-10-01T02:11:48Z",
    }
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    prefix = f"llama.cpp-{sha[:7]}"
    kept = {"CMakeLists.txt", "src/models/llama.cpp", "src/llama.h", "scripts/ui-assets.cmake"}
    kept |= {"tools/server/server.cpp", ".gitignore", "build-xcframework.sh"}
    assert {f"{prefix}/{k}" for k in kept} <= names
    assert not any(
        n.startswith(f"{prefix}/{d}")
        for n in names
        for d in ("docs", "models", ".github", "convert_", "tools/server/tests")
    )
    assert f"{prefix}/.git" not in names
    assert [p.name for p in out.iterdir() if p.name.startswith("tmp")] == []

    # A second run finds the outputs intact and neither downloads nor packs.
    def no_fetch(cache: Path) -> Path:
        raise AssertionError("the sdist was fetched although the outputs are up to date")

    monkeypatch.setattr(src, "fetch_sdist", no_fetch)
    before = tarball.stat().st_mtime_ns
    assert src.main([str(out)]) == 0
    assert tarball.stat().st_mtime_ns == before
    # A damaged tarball is not "up to date".
    tarball.write_bytes(b"damaged")
    assert src.up_to_date(out) is None


def test_a_download_with_another_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for "python -m pip download": records its arguments and saves a file that is not
    # the pinned sdist, as a tampered mirror would.
    pip = tmp_path / "python"
    pip.write_text(
        '#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
        'while [ "$1" != "-d" ]; do shift; done\n'
        f'echo tampered > "$2/{src.SDIST}"\n'
    )
    pip.chmod(0o755)
    monkeypatch.setattr(src.sys, "executable", str(pip))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / src.SDIST).write_bytes(b"a stale partial download")
    with pytest.raises(SystemExit, match="sha256 is not"):
        src.fetch_sdist(cache)
    args = (tmp_path / "args").read_text().split()
    assert args[:6] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    assert args[6:] == ["llama-cpp-python==0.3.36", "-d", str(cache)]
