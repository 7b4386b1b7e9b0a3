"""The checkable parts of shared/TEMPLATE.md, applied to every member."""

from __future__ import annotations

import ast
import json
from pathlib import Path

REQUIRED_TESTS = ("test_configs.py", "test_kernels.py", "test_train.py")


def _modules(member) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the member's package."""
    out = {}
    for p in sorted(member.src.rglob("*.py")):
        rel = p.relative_to(member.src.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(member) -> dict[str, set[str]]:
    """Intra-package imports at any level (module top or inside functions)."""
    mods = _modules(member)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # a.b.c -> the closest module that exists
                    t = t.rpartition(".")[0]
                if t and t != mod and t.split(".")[0] == member.package:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            # a submodule importing its own package's __init__ is how packages work, not a cycle of ours
            if n.startswith(m + "."):
                continue
            if colour.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if colour.get(m) is None:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        colour[n] = 2
        return None

    for n in sorted(graph):
        if colour.get(n) is None:
            c = visit(n)
            if c:
                return c
    return None


def handler_violations(member) -> list[str]:
    bad = []
    for mod, path in _modules(member).items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_cli = mod == f"{member.package}.cli"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names) and not is_cli:
                bad.append(f"{path.name}: imports argparse (only cli.py builds the command line)")
            if isinstance(node, ast.ImportFrom) and node.module == "argparse" and not is_cli:
                bad.append(f"{path.name}: imports from argparse")
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_") and not is_cli:
                bad.append(f"{path.name}: defines the handler {node.name} (handlers live in cli.py)")
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
                    == "build_cli" and not is_cli):
                bad.append(f"{path.name}: calls build_cli")
    return bad


def test_handlers_and_parsers_only_in_cli(member):
    bad = handler_violations(member)
    assert not bad, f"{member.name}: " + "; ".join(bad)


def test_handler_rule_catches_a_second_parser(tmp_path):
    from types import SimpleNamespace

    pkg = tmp_path / "src" / "pkgy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from reprokit.papercli import build_cli\nmain = build_cli('p', {})\n")
    fake = SimpleNamespace(src=pkg, package="pkgy", name="pkgy")
    assert handler_violations(fake) == []
    (pkg / "bench.py").write_text("import argparse\n\ndef cmd_bench(args):\n    pass\n")
    bad = handler_violations(fake)
    assert any("argparse" in b for b in bad) and any("cmd_bench" in b for b in bad)


def test_no_import_cycles_inside_the_member(member):
    cycle = find_cycle(import_graph(member))
    assert cycle is None, f"{member.name}: import cycle {' -> '.join(cycle)}"


def test_import_cycle_detector_finds_one(tmp_path):
    """The rule above can fail: a package whose train imports evaluate and evaluate imports train."""
    from types import SimpleNamespace

    pkg = tmp_path / "src" / "pkgx"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text("from .evaluate import ev\n")
    (pkg / "evaluate.py").write_text("def ev():\n    from .train import x\n")
    (pkg / "data.py").write_text("from . import train\n")
    fake = SimpleNamespace(src=pkg, package="pkgx")
    assert find_cycle(import_graph(fake)) in (["pkgx.train", "pkgx.evaluate", "pkgx.train"],
                                              ["pkgx.evaluate", "pkgx.train", "pkgx.evaluate"])
    (pkg / "evaluate.py").write_text("def ev():\n    pass\n")
    assert find_cycle(import_graph(fake)) is None


def test_test_file_names_and_golden_loss(member):
    tests = member.folder / "tests"
    missing = [n for n in REQUIRED_TESTS if not (tests / n).is_file()]
    assert not missing, f"{member.name}/tests lacks {missing} (template: {REQUIRED_TESTS} + test_<concept>.py)"
    golden = tests / "golden" / "smoke_loss.json"
    assert golden.is_file(), f"{golden} missing (reprokit.testing.check_golden with REPROKIT_UPDATE_GOLDEN=1)"
    vals = json.loads(golden.read_text())["values"]
    assert len(vals) >= 2 and all(isinstance(v, float) for v in vals)
    assert "check_golden" in (tests / "test_train.py").read_text(), "test_train.py must check the golden losses"


def hygiene_violations(folder: Path) -> list[str]:
    res = folder / "results"
    bad = []
    if (res / "smoke").exists():
        bad.append("results/smoke exists: smoke results belong in the ignored runs/smoke/")
    small = res / "small"
    if small.is_dir():
        dirs = [p.name for p in small.iterdir() if p.is_dir()]
        if dirs:
            bad.append(f"results/small holds folders {dirs}: fold runs into runs.jsonl")
        if not (small / "runs.jsonl").is_file():
            bad.append("results/small/runs.jsonl missing")
    return bad


def test_results_hygiene(member):
    """Only results/small/ (and bench json) is committed; no per-run folders, no smoke results."""
    bad = hygiene_violations(member.folder)
    assert not bad, f"{member.name}: " + "; ".join(bad)


def test_hygiene_rule_catches_run_folders(tmp_path):
    (tmp_path / "results" / "small" / "arms" / "x").mkdir(parents=True)
    (tmp_path / "results" / "smoke").mkdir()
    bad = hygiene_violations(tmp_path)
    assert len(bad) == 3


def test_bad_input_declared(member):
    md = member.bad_input.get("missing-data")
    assert md and any("{missing}" in o for o in md), (
        f"{member.name}/pyproject.toml needs [tool.reprokit.bad-input] missing-data = [overrides with '{{missing}}']")
