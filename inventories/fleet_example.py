"""An example fleet: copy it, list your hosts, then run it with deploys/all.py.

Settings: group_vars/all.yaml < group_vars/<group>.yaml < host_vars/<host>.yaml. The first
group's hosts are the canaries of a rollout.
"""

from llmtune.inventory import group

canary = group(__file__, "canary", [("gpu-box-1.lan", {"ssh_user": "root"})])
inference = group(
    __file__,
    "inference",
    [
        ("gpu-box-2.lan", {"ssh_user": "root"}),
        ("gpu-box-3.lan", {"ssh_user": "admin", "_sudo": True}),
    ],
)
