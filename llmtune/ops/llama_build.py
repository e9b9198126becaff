"""The shell script that builds one llama.cpp build directory on a host and switches to it.

Layout under the prefix (default /opt/llmtune/llama.cpp)::

    src/<ref>/                source tree (a git checkout, or an unpacked tarball)
    builds/<build id>/        build/ (CMake tree), bin -> build/bin, build.log, build-info.json
    current -> builds/<id>    what the service runs; switched atomically (rename of a symlink)

A build directory counts as complete only once its ``build-info.json`` exists: the script writes
it last, after the smoke test. A failed or interrupted build never touches ``current``; the next
run starts that directory over. The same build id (ref + flags hash) is never built twice.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from llmtune.planner.build import BuildPlan

DEFAULT_PREFIX = "/opt/llmtune/llama.cpp"


@dataclass(frozen=True)
class BuildJob:
    prefix: str
    source_dir: str
    plan: BuildPlan
    commit: str = ""
    build_number: int = 0
    source: str = ""
    keep: int = 2

    @property
    def build_dir(self) -> str:
        return f"{self.prefix}/builds/{self.plan.build_id}"


def build_script(job: BuildJob) -> str:
    """A bash script: build (unless complete), smoke-test, record, switch ``current``, prune."""
    q = shlex.quote
    plan = job.plan
    info_static = {
        "build_id": plan.build_id,
        "ref": plan.ref,
        "commit": job.commit,
        "build_number": job.build_number,
        "cmake_flags": list(plan.cmake_flags),
        "cuda_architectures": list(plan.cuda_architectures),
        "targets": list(plan.targets),
        "source": job.source,
    }
    flags = " ".join(q(f) for f in plan.cmake_flags)
    targets = " ".join(q(t) for t in plan.targets)
    return f"""#!/bin/bash
# Written by llmtune: builds llama.cpp {plan.build_id}. Safe to run again.
set -euo pipefail
prefix={q(job.prefix)}
src={q(job.source_dir)}
dir={q(job.build_dir)}
id={q(plan.build_id)}
keep={int(job.keep)}
# Builds of one ref differ only in flags: with paths made relative to the prefix, ccache (which
# llama.cpp's CMake uses when installed) serves the objects the flags do not change.
export CCACHE_BASEDIR="$prefix"

if [ -f "$dir/build-info.json" ]; then
    echo "llmtune: build $id is complete already"
else
    rm -rf "$dir"
    mkdir -p "$dir"
    log="$dir/build.log"
    echo "llmtune: configuring $id"
    if ! cmake -S "$src" -B "$dir/build" -G Ninja {flags} >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "llmtune: configure failed; current build unchanged (log: $log)" >&2
        exit 1
    fi
    echo "llmtune: building {targets} with $(nproc) jobs (log: $log)"
    # ninja prints [n/total] per step: show every 10th so a long build shows its progress.
    if ! cmake --build "$dir/build" --target {targets} -j "$(nproc)" 2>&1 \\
            | tee -a "$log" \\
            | awk '/^\\[[0-9]+\\/[0-9]+\\]/ {{ if (++n % 10 == 1) print "llmtune: " $1; fflush() }}'
    then
        tail -n 40 "$log" >&2
        echo "llmtune: build failed; current build unchanged (log: $log)" >&2
        exit 1
    fi
    ln -sfn build/bin "$dir/bin"
    # Smoke test before anything points at the new binaries.
    "$dir/bin/llama-server" --version >"$dir/version.txt" 2>&1
    "$dir/bin/llama-server" --help >"$dir/help.txt" 2>&1
    if ! grep -q -- '--port' "$dir/help.txt"; then
        echo "llmtune: llama-server --help lists no --port" >&2
        exit 1
    fi
    cuda=$(nvcc --version 2>/dev/null | sed -n 's/.*release \\([0-9.]*\\).*/\\1/p' || true)
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null \\
        | head -n1 || true)
    compiler=$(c++ --version 2>/dev/null | head -n1 || true)
    python3 - "$dir/build-info.json.tmp" "$cuda" "$driver" "$compiler" <<'PY'
import json, sys, time
path, cuda, driver, compiler = sys.argv[1:5]
info = json.loads({json.dumps(json.dumps(info_static))})
info.update(cuda_version=cuda, driver=driver, compiler=compiler,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
with open(path, "w") as f:
    json.dump(info, f, indent=2)
PY
    mv "$dir/build-info.json.tmp" "$dir/build-info.json"
    echo "llmtune: build $id complete"
fi

# Atomic switch: a new symlink renamed over the old one.
if [ "$(readlink "$prefix/current" 2>/dev/null || true)" != "builds/$id" ]; then
    ln -sfn "builds/$id" "$prefix/current.new"
    mv -T "$prefix/current.new" "$prefix/current"
    echo "llmtune: current -> builds/$id"
fi

# Keep the newest $keep complete builds besides the current one; incomplete ones go.
cd "$prefix/builds"
n=0
for b in $(ls -1td -- */ 2>/dev/null | sed 's#/$##'); do
    [ "$b" = "$id" ] && continue
    if [ ! -f "$b/build-info.json" ]; then rm -rf -- "$b"; continue; fi
    n=$((n + 1))
    if [ "$n" -gt "$keep" ]; then rm -rf -- "$b"; echo "llmtune: pruned build $b"; fi
done
"""


def rollback_script(prefix: str) -> str:
    """Switch ``current`` to the newest other complete build; fail if there is none."""
    q = shlex.quote
    return f"""#!/bin/bash
set -euo pipefail
prefix={q(prefix)}
now=$(readlink "$prefix/current" 2>/dev/null | sed 's#^builds/##' || true)
cd "$prefix/builds"
for b in $(ls -1td -- */ | sed 's#/$##'); do
    [ "$b" = "$now" ] && continue
    [ -f "$b/build-info.json" ] || continue
    ln -sfn "builds/$b" "$prefix/current.new"
    mv -T "$prefix/current.new" "$prefix/current"
    echo "llmtune: rolled back: current -> builds/$b (was $now)"
    exit 0
done
echo "llmtune: no other complete build to roll back to" >&2
exit 1
"""


def build_info_fields() -> tuple[str, ...]:
    """The keys every build-info.json holds (the doctor's build checks read them)."""
    return tuple(
        sorted(
            {
                "build_id",
                "ref",
                "commit",
                "cmake_flags",
                "cuda_architectures",
                "targets",
                "source",
                "cuda_version",
                "driver",
                "compiler",
                "built_at",
            }
        )
    )


def parse_build_info(text: str) -> dict[str, object]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("build-info.json is not an object")
    return data
