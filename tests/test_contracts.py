"""Contracts every paper member must meet. They apply automatically to each workspace member."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from reprokit.cli import discover_papers
from reprokit.results import NOT_YET_RUN, load_reported, load_results, render_readme

README_SECTIONS = ["## Quickstart", "## Method", "## Reported vs reproduced", "## Performance",
                   "## Scaling out", "## Citation"]
COMMANDS = ["train", "evaluate", "reproduce", "bench"]
ROOT = Path(__file__).resolve().parents[1]


def test_workspace_lists_every_paper_folder():
    """A folder with a pyproject next to the root must be a workspace member (nothing silently untested)."""
    members = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"])
    folders = {p.parent.name for p in ROOT.glob("*/pyproject.toml")}
    assert folders == members, f"folders {sorted(folders)} vs workspace members {sorted(members)}"


def test_readme_sections(member):
    text = (member.folder / "README.md").read_text()
    positions = []
    for s in README_SECTIONS:
        lines = [i for i, line in enumerate(text.splitlines()) if line.strip() == s]
        assert lines, f"{member.name}/README.md lacks the section '{s}'"
        positions.append(lines[0])
    assert positions == sorted(positions), f"{member.name}/README.md sections out of order"
    assert text.lstrip().startswith("# "), "README starts with a title"


def test_configs_exist_and_parse(member):
    for name in ("smoke.yaml", "small.yaml"):
        p = member.folder / "configs" / name
        assert p.is_file(), f"{p} missing"
        assert isinstance(yaml.safe_load(p.read_text()), dict)


def test_reported_yaml_parses(member):
    rep = load_reported(member.folder / "reported.yaml")
    assert rep["tables"], "reported.yaml holds no table"


def test_console_script_has_the_commands(member):
    r = subprocess.run([sys.executable, "-m", member.cli_module, "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for c in COMMANDS:
        assert c in r.stdout, f"{member.dist} --help lacks the '{c}' command"


def test_registered_for_repro(member):
    assert member.dist in {ep.dist.name for ep in discover_papers().values() if ep.dist}, \
        f"{member.dist} has no entry point in the 'reprokit.papers' group"


def test_readme_tables_are_rendered_from_results(member):
    text = (member.folder / "README.md").read_text()
    assert render_readme(member.folder) == text, (
        f"{member.name}/README.md differs from what reprokit.results.render_readme produces from the committed "
        "results; re-render it (the paper's reproduce does this)")
    assert "<!-- BEGIN" in text, "README has no generated table"


def test_committed_results_are_valid(member):
    """results/small/results.json is committed, or the README says plainly that the small reproduction
    has not been run yet (a member may land before its hours-long CPU run) and shows no result table."""
    files = sorted((member.folder / "results").glob("*/results.json"))
    text = (member.folder / "README.md").read_text()
    if not files:
        assert NOT_YET_RUN in text, (f"{member.name}: no results/small/results.json committed and the README "
                                     f"does not say '{NOT_YET_RUN}'")
        assert not any(f"<!-- BEGIN {k}" in text for k in ("results:", "claims:", "floors:")), \
            "a README without committed results cannot show result tables"
        return
    assert NOT_YET_RUN not in text, f"{member.name}: results are committed but the README says not yet run"
    for f in files:
        res = load_results(f)
        assert res["scale"] == f.parent.name


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


def test_no_paper_imports_another(member, members):
    others = {m.package for m in members} - {member.package}
    bad = [(str(p.relative_to(ROOT)), sorted(_imports(p) & others)) for p in member.folder.rglob("*.py")
           if ".venv" not in p.parts and _imports(p) & others]
    assert not bad, f"papers never import each other: {bad}"


def test_shared_imports_no_paper(members):
    papers = {m.package for m in members}
    bad = [(str(p.relative_to(ROOT)), sorted(_imports(p) & papers)) for p in (ROOT / "shared").rglob("*.py")
           if _imports(p) & papers]
    assert not bad, f"shared imports a paper: {bad}"
