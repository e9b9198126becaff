"""llama-server as a hardened systemd service, with flags planned for this host and its model.

Needs ``model_path`` in the settings (no model: nothing to do) and a llama.cpp build
(deploys/llama_cpp.py, run before this one in deploys/all.py). Creates the dedicated system user,
generates the API key once (0600, owned by that user, never printed), loads nvidia_uvm at boot on
GPU hosts, then plans, writes the unit and proves it serves (llmtune/ops/llama_service.py);
a configuration that does not serve is rolled back. Verified by SRV001-SRV008 and GPU007.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, python, server

from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.systemd import SystemdState
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.llama_build import DEFAULT_PREFIX
from llmtune.ops.llama_service import install_service
from llmtune.planner.unit import DEFAULT_API_KEY_FILE, DEFAULT_ENV_FILE

UVM_CONF = "/etc/modules-load.d/nvidia-uvm.conf"
STATE_DIR = "/var/lib/llama-server"
ENV_TEXT = """\
# Environment for llama-server (EnvironmentFile= of its unit). llmtune writes this file once and
# never overwrites it: variables set here (e.g. CUDA_VISIBLE_DEVICES=0) survive deploys.
"""


@deploy("llmtune llama-server")
def llama_server() -> None:
    settings = settings_of(host.data)
    if not settings.model_path:
        host.noop("no model_path in the settings: no llama-server service")
        return
    systemd_state = host.get_fact(SystemdState)
    if not systemd_state.running:
        fail_host(
            "llama-server needs systemd",
            f"systemd is not running here ({systemd_state.reason}); run the planned command "
            "line by hand (llmtune plan) instead",
        )
        return
    user = settings.server_user
    server.group(name=f"Group {user}", group=user, system=True)
    server.user(
        name=f"System user {user} for llama-server",
        user=user,
        group=user,
        system=True,
        home=STATE_DIR,
        create_home=False,
        shell="/usr/sbin/nologin",
    )
    files.directory(name="/etc/llmtune", path="/etc/llmtune", mode="755")
    if host.get_fact(NvidiaGpus).available:
        # CUDA can lose the race with nvidia_uvm at boot; the server then runs on the CPU.
        files.put(
            name="Load nvidia_uvm at boot",
            src=StringIO("nvidia_uvm\n"),
            dest=UVM_CONF,
            mode="644",
        )
    if not host.get_fact(File, path=DEFAULT_ENV_FILE):
        files.put(
            name="llama-server environment file", src=StringIO(ENV_TEXT), dest=DEFAULT_ENV_FILE
        )
    if settings.server_api_key == "file":
        key = shlex.quote(DEFAULT_API_KEY_FILE)
        if not host.get_fact(File, path=DEFAULT_API_KEY_FILE):
            # Generated on the host, once: the key never travels or reaches a log.
            server.shell(
                name="Generate the API key",
                commands=[
                    f"umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' "
                    f"> {key}.new && mv -f {key}.new {key}"
                ],
            )
        files.file(
            name="API key file: 0600, owned by the service user",
            path=DEFAULT_API_KEY_FILE,
            user=user,
            group=user,
            mode="600",
        )
    python.call(
        name="Install llama-server and prove it serves",
        function=install_service,
        settings=settings,
        binary=f"{DEFAULT_PREFIX}/current/bin/llama-server",
    )


run_if_deploy_file(__file__, llama_server)
