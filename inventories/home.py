"""This machine: ``pyinfra inventories/home.py deploys/all.py`` (run as root, or add --sudo).

Settings: group_vars/all.yaml < group_vars/home.yaml < host_vars/local.yaml.
"""

from llmtune.inventory import group

home = group(__file__, "home", ["@local"])
