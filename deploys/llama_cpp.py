"""llama.cpp from source at a pinned ref, for the GPUs this host actually has.

Builds in a versioned directory (ref + hash of the flags), smoke-tests the binaries, then
switches the ``current`` symlink atomically; a failed or interrupted build never touches
``current``. Same ref and flags: no rebuild. See llmtune/ops/llama_build.py for the layout and
deploys/llama_cpp_rollback.py for going back.
"""

from __future__ import annotations

import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.server import Which
from pyinfra.operations import files, python, server

from llmtune.facts.cuda import CudaToolkit
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.host import HostInfo
from llmtune.facts.llama import LlamaBuilds
from llmtune.facts.llama_source import LlamaSource
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.llama_build import DEFAULT_PREFIX, BuildJob, build_script
from llmtune.ops.llama_source import SourceError, read_tarball
from llmtune.ops.packages import packages
from llmtune.planner.build import BuildPlanError, plan_build
from llmtune.platform import platform_for

# A llama.cpp build takes minutes (a CUDA one on few cores, an hour): no short SSH timeout.
BUILD_TIMEOUT_S = 4 * 3600
# What the build script runs (ccache is optional: CMake uses it when present).
BUILD_COMMANDS = ("cmake", "ninja", "c++", "python3", "tar")


def run_build(script: str) -> None:
    """Run the build script with its output shown as it comes (the build's progress)."""
    status, output = host.run_shell_command(
        f"bash {shlex.quote(script)}", print_output=True, _timeout=BUILD_TIMEOUT_S
    )
    if not status:
        tail = "\n".join(output.stderr_lines[-15:])
        raise OperationError(f"llama.cpp build failed, current build unchanged:\n{tail}")


@deploy("llmtune llama.cpp")
def llama_cpp() -> None:
    settings = settings_of(host.data)
    if not settings.llama_cpp_build:
        host.noop("llama_cpp_build: false in settings")
        return
    platform = platform_for(host.get_fact(HostInfo))
    gpus = host.get_fact(NvidiaGpus)
    ref = settings.llama_cpp_ref
    prefix = DEFAULT_PREFIX
    src = f"{prefix}/src/{ref}"
    tree = host.get_fact(LlamaSource, path=src)

    tarball = None
    if settings.llama_cpp_source_tarball:
        try:
            tarball = read_tarball(Path(settings.llama_cpp_source_tarball), ref)
        except SourceError as exc:
            fail_host("llama.cpp source tarball", str(exc))
            return
    options = tarball.options if tarball else tree.options
    try:
        plan = plan_build(
            ref=ref,
            gpus=gpus,
            cmake_options=options,
            cuda=settings.llama_cpp_cuda,
            lto=settings.llama_cpp_lto,
            commit=tarball.commit if tarball else None,
            build_number=tarball.build_number if tarball else None,
            extra=settings.llama_cpp_cmake_extra,
        )
    except BuildPlanError as exc:
        fail_host("llama.cpp build plan", str(exc))
        return
    if host.get_fact(LlamaBuilds, root_dir=prefix).current == plan.build_id:
        host.noop(f"llama.cpp {plan.build_id} is the current build")
        return

    if plan.cuda_architectures and not host.get_fact(CudaToolkit).available:
        if not settings.cuda_toolkit_install:
            fail_host(
                "CUDA toolkit",
                "a CUDA build for this host's GPUs needs nvcc, and none is installed: install "
                "the CUDA toolkit, or set cuda_toolkit_install: true (or llama_cpp_cuda: off)",
            )
            return
        packages("Install the CUDA toolkit", platform, list(platform.cuda_toolkit_packages))
    if settings.llama_cpp_install_build_tools:
        packages("Install build tools", platform, list(platform.build_packages))
    else:
        # The owner provides the tools (an offline host): say which one is missing, before the
        # build would fail on it minutes in.
        missing = [c for c in BUILD_COMMANDS if not host.get_fact(Which, command=c)]
        if missing:
            fail_host(
                "llama.cpp build tools",
                f"llama_cpp_install_build_tools is false and {', '.join(missing)} is not on "
                "PATH: install it, or set llama_cpp_install_build_tools: true",
            )
            return

    if not tree.present:
        if tarball:
            remote = f"{prefix}/src/{ref}.tar.gz"
            files.put(
                name="Upload the llama.cpp source",
                src=str(tarball.path),
                dest=remote,
                create_remote_dir=True,
            )
            server.shell(
                name="Unpack the llama.cpp source",
                commands=[
                    f"mkdir -p {src}.new && tar -xzf {remote} -C {src}.new "
                    f"--strip-components=1 && mv -T {src}.new {src}"
                ],
            )
        else:
            url = shlex.quote(settings.llama_cpp_git_url)
            server.shell(
                name=f"Fetch llama.cpp {ref}",
                commands=[
                    f"rm -rf {src}.new && git clone --quiet {url} {src}.new && "
                    f"git -C {src}.new checkout --quiet --detach {shlex.quote(ref)} && "
                    f"mv -T {src}.new {src}"
                ],
            )

    job = BuildJob(
        prefix=prefix,
        source_dir=src,
        plan=plan,
        commit=tarball.commit if tarball else "",
        source=f"tarball {tarball.path.name}" if tarball else settings.llama_cpp_git_url,
        keep=settings.llama_cpp_keep_builds,
    )
    script = f"{prefix}/build-{plan.build_id}.sh"
    files.put(
        name="Write the build script",
        src=StringIO(build_script(job)),
        dest=script,
        mode="755",
        create_remote_dir=True,
    )
    python.call(
        name=f"Build llama.cpp {plan.build_id} and switch to it", function=run_build, script=script
    )


run_if_deploy_file(__file__, llama_cpp)
