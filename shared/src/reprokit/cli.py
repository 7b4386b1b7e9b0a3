"""``repro``: the root command. ``repro list | run <paper> | all --scale smoke|small``.

Papers register a callable ``run_reproduce(scale, out_dir=None, workers=1) -> Path`` in the entry-point
group ``reprokit.papers``; this module discovers them there and never imports a paper by name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from .results import markdown_table

__all__ = ["main", "discover_papers", "GROUP"]

GROUP = "reprokit.papers"


def discover_papers() -> dict[str, metadata.EntryPoint]:
    """Registered papers: name -> entry point (loaded lazily)."""
    return {ep.name: ep for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)}


def _summary(name: str, path: Path | None, wall: float, error: str | None) -> list:
    if error is not None:
        return [name, "FAILED", f"{wall:.0f}s", error]
    try:
        res = json.loads(Path(path).read_text())
        claims = res.get("claims", [])
        n_rep = sum(c.get("status") == "reproduced" for c in claims)
        return [name, f"{n_rep}/{len(claims)}", f"{wall:.0f}s", str(path)]
    except (OSError, ValueError, TypeError) as e:
        return [name, "?", f"{wall:.0f}s", f"{path} (unreadable: {e})"]


def _run(names: list[str], scale: str, out_root: str | None, workers: int = 1) -> int:
    papers = discover_papers()
    rows, failed = [], 0
    for name in names:
        t0 = time.time()
        out = str(Path(out_root) / name) if out_root else None
        try:
            fn = papers[name].load()
            path, err = fn(scale, out, workers=workers), None
        except Exception as e:  # report every paper, then fail at the end
            path, err = None, f"{type(e).__name__}: {e}"
            failed += 1
        rows.append(_summary(name, path, time.time() - t0, err))
    print()
    print(markdown_table(["paper", "claims reproduced", "wall time", "results"], rows))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="repro", description="Run the papers' reproductions.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered papers")
    pr = sub.add_parser("run", help="run one paper's reproduce")
    pr.add_argument("paper")
    pa = sub.add_parser("all", help="run every paper's reproduce")
    for p in (pr, pa):
        p.add_argument("--scale", default="smoke", choices=["smoke", "small"])
        p.add_argument("--out-dir", default=None,
                       help="write results under this folder instead of each paper's default "
                            "(runs/smoke/ for smoke, results/small/ for small)")
        p.add_argument("--workers", type=int, default=1, help="parallel training processes per paper")
    args = parser.parse_args(argv)
    papers = discover_papers()
    if args.command == "list":
        if not papers:
            print("no papers registered (entry-point group 'reprokit.papers')")
        for name, ep in papers.items():
            dist = ep.dist.name if ep.dist else "?"
            print(f"{name}\t{dist}\t{ep.value}")
        return 0
    if args.command == "run":
        if args.paper not in papers:
            print(f"repro: unknown paper {args.paper!r}; registered: {', '.join(papers) or 'none'}",
                  file=sys.stderr)
            return 2
        return _run([args.paper], args.scale, args.out_dir, args.workers)
    return _run(list(papers), args.scale, args.out_dir, args.workers)


if __name__ == "__main__":
    sys.exit(main())
