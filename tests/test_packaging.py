"""The installed package holds every module: `pip install .` (the Docker image) ships only the
packages pyproject.toml lists, while the editable install of development maps whole directories."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    directories = {name: ROOT / path for name, path in {"fluxmix": "fluxmix", **setuptools["package-dir"]}.items()}
    found = set()
    for package, directory in directories.items():
        for init in directory.rglob("__init__.py"):
            relative = init.parent.relative_to(directory)
            found.add(".".join([package, *relative.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
