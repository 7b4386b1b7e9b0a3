"""Unified harness: discover the paper members of the workspace from the root pyproject."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Member:
    folder: Path          # e.g. <root>/raceDiT
    dist: str             # distribution name, also the console script
    package: str          # import name
    cli_module: str       # module holding the console script's main
    bad_input: dict       # [tool.reprokit.bad-input] of the member's pyproject

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def src(self) -> Path:
        return self.folder / "src" / self.package


def paper_members() -> list[Member]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = []
    for rel in root["tool"]["uv"]["workspace"]["members"]:
        if rel == "shared":
            continue
        folder = ROOT / rel
        pyproject = tomllib.loads((folder / "pyproject.toml").read_text())
        proj = pyproject["project"]
        scripts = proj.get("scripts", {})
        target = scripts.get(proj["name"])
        if target is None:
            raise AssertionError(f"{rel}: console script named after the distribution ({proj['name']}) is missing")
        module = target.split(":")[0]
        bad = pyproject.get("tool", {}).get("reprokit", {}).get("bad-input", {})
        out.append(Member(folder=folder, dist=proj["name"], package=module.split(".")[0], cli_module=module,
                          bad_input=bad))
    return out


MEMBERS = paper_members()


def pytest_generate_tests(metafunc):
    if "member" in metafunc.fixturenames:
        metafunc.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS], scope="module")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def members() -> list[Member]:
    return MEMBERS
