"""Every package of llmtune is in the wheel: setuptools installs only the listed packages."""

from __future__ import annotations

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent


def test_every_llmtune_package_is_listed_in_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "llmtune").rglob("__init__.py")
        # checks/, deploys/ are symlinks to top-level folders and are listed themselves
    }
    assert found - listed == set(), f"packages missing from pyproject.toml: {found - listed}"
