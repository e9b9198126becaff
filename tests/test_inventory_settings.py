"""Inventory settings: layered YAML, validated before pyinfra contacts any host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmtune.inventory import SETTINGS_KEY, group, layer_files, merged_settings

REPO = Path(__file__).resolve().parent.parent
PYINFRA = [sys.executable, "-m", "pyinfra"]


def write_inventory(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "inv.py"


INVENTORY = (
    "from llmtune.inventory import group\n"
    # Port 1 on loopback: nothing listens there, and nothing is ever sent anywhere else.
    'gpus = group(__file__, "gpus", [("box1", {"ssh_hostname": "127.0.0.1", "ssh_port": 1})])\n'
)


def test_layers_merge_key_by_key_host_wins(tmp_path: Path) -> None:
    write_inventory(
        tmp_path,
        {
            "inv.py": INVENTORY,
            "group_vars/all.yaml": "thp: madvise\ncpu_epp: balance_performance\n",
            "group_vars/gpus.yaml": "thp: always\nheadless: false\n",
            "host_vars/box1.yaml": "headless: true\nram_rated_mts: 6000\n",
        },
    )
    files = layer_files(tmp_path, "gpus", "box1")
    assert [f.name for f in files] == ["all.yaml", "gpus.yaml", "box1.yaml"]
    merged, settings = merged_settings(files)
    assert (settings.thp, settings.cpu_epp, settings.headless) == (
        "always",
        "balance_performance",
        True,
    )
    assert settings.ram_rated_mts == 6000 and merged["thp"] == "always"
    [(name, data)] = group(str(tmp_path / "inv.py"), "gpus", [("box1", {"ssh_port": 1})])
    assert name == "box1" and data["ssh_port"] == 1 and data[SETTINGS_KEY] == merged


@pytest.mark.parametrize(
    ("file", "text", "key", "allowed"),
    [
        ("group_vars/all.yaml", "thp: sometimes\n", "thp", "always, madvise, never"),
        ("group_vars/gpus.yaml", "headless: yes please\n", "headless", "true or false"),
        ("host_vars/box1.yaml", "tuned_profil: x\n", "tuned_profil", "allowed keys"),
    ],
)
def test_bad_settings_stop_pyinfra_before_any_host(
    tmp_path: Path, file: str, text: str, key: str, allowed: str
) -> None:
    inventory = write_inventory(tmp_path, {"inv.py": INVENTORY, file: text})
    proc = subprocess.run(
        [*PYINFRA, str(inventory), str(REPO / "deploys" / "all.py"), "-y"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert str(tmp_path / file) in output and key in output and allowed in output
    assert "Connecting" not in output and "box1" not in proc.stdout
