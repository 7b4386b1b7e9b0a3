"""results.json, reported.yaml, and the README tables rendered from them.

``results.json`` (one per paper and scale) holds everything needed to judge a number: the arms'
metrics, the tables shown in the README, the claims with their status, the protocol, the full
resolved config, seeds, package versions, hardware and wall time.

``reported.yaml`` holds the paper's own numbers with their table ids, the paper version they were
read from and flags such as ``unverified``. A table taken from another paper (a follow-up's table quoted
for comparison) sets its own ``paper`` and ``arxiv`` (and ``version``, empty if unknown), which then name
the source in its caption instead of the file's top-level ones.

README tables live between markers and are always generated::

    <!-- BEGIN reported:Table 6 -->      the paper's table from reported.yaml
    <!-- BEGIN results:small/main -->    table "main" of results/small/results.json
    <!-- BEGIN claims:small -->          the claims of results/small/results.json
    <!-- BEGIN bench -->                 results/bench.json (reprokit.bench.write_bench)

``render_readme(paper_dir)`` returns the README with every block re-rendered (and writes it
with ``write=True``); the harness checks that the committed README equals that output.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .claims import STATUSES

__all__ = [
    "CLAIM_STATUSES", "ResultsError", "write_results", "load_results", "validate_results",
    "load_reported", "render_reported_table", "render_results_table", "render_claims",
    "render_bench", "render_floors", "render_readme", "environment_info", "markdown_table",
    "NOT_YET_RUN", "install_result_blocks", "record_wall_time",
]

CLAIM_STATUSES = STATUSES  # reprokit.claims: reproduced / not reproduced / inconclusive / not testable at this budget
_MARKER = re.compile(r"<!-- BEGIN (?P<key>[^>]+?) -->\n(?P<body>.*?)<!-- END (?P=key) -->", re.S)


class ResultsError(ValueError):
    """A results.json / reported.yaml / README marker problem."""


# The line a README carries while its small reproduction has no results.json (the harness checks it).
NOT_YET_RUN = "<!-- small reproduction: not yet run -->"
_PENDING_INTRO = "**Our small reproduction"


def install_result_blocks(paper_dir: str | Path, blocks: list[str]) -> bool:
    """On a member's first committed small results: replace its README's pending paragraph -- from the last
    line opening with "**Our small reproduction" before the ``NOT_YET_RUN`` line (an intro saying "has not
    been run yet" or "is in progress"), or the marker line alone when there is none -- with ``blocks``
    joined by blank lines (typically empty marker blocks that ``render_readme`` then fills). Returns whether
    the README changed (False: no pending paragraph, the blocks are in already)."""
    readme = Path(paper_dir) / "README.md"
    text = readme.read_text()
    if NOT_YET_RUN not in text:
        return False
    marker = text.index(NOT_YET_RUN)
    end = marker + len(NOT_YET_RUN)
    start = marker
    intro = text.rfind("\n" + _PENDING_INTRO, 0, marker)
    if intro >= 0 and "\n#" not in text[intro:marker]:      # the intro belongs to the same section
        start = intro + 1
    readme.write_text(text[:start] + "\n\n".join(blocks) + text[end:])
    return True


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment_info(packages: tuple[str, ...] = ()) -> dict:
    """Package versions, hardware and date for a results file."""
    import torch

    pk = {p: _version(p) for p in ("torch", "numpy", "triton", "reprokit", *packages)}
    hw = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "packages": pk, "hardware": hw,
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"), "git_commit": commit}


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and not isinstance(v, str):
        try:
            return _clean(v.item())
        except (ValueError, RuntimeError):
            return _clean(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def validate_results(res: dict) -> None:
    """Raise ResultsError unless ``res`` follows the results.json schema."""
    required = ("paper", "scale", "arms", "tables", "claims", "protocol", "config", "seeds",
                "environment", "wall_time_s")
    missing = [k for k in required if k not in res]
    if missing:
        raise ResultsError(f"results.json lacks keys: {missing}")
    if not isinstance(res["arms"], dict):
        raise ResultsError("results.json 'arms' must map arm name -> metrics")
    for name, t in res["tables"].items():
        if not isinstance(t, dict) or "columns" not in t or "rows" not in t:
            raise ResultsError(f"table {name!r} needs 'columns' and 'rows'")
        for row in t["rows"]:
            if len(row) != len(t["columns"]):
                raise ResultsError(f"table {name!r}: row {row} has {len(row)} cells, "
                                   f"expected {len(t['columns'])}")
    for c in res["claims"]:
        for k in ("id", "claim", "status", "evidence"):
            if k not in c:
                raise ResultsError(f"claim {c} lacks {k!r}")
        if c["status"] not in CLAIM_STATUSES:
            raise ResultsError(f"claim {c['id']!r}: status {c['status']!r} not in {CLAIM_STATUSES}")


def write_results(path: str | Path, *, paper: str, scale: str, arms: dict, tables: dict | None = None,
                  claims: list | None = None, protocol: dict | None = None, config: dict | None = None,
                  seeds: list | None = None, wall_time_s: float = 0.0, packages: tuple[str, ...] = (),
                  floors: list | None = None, extra: dict | None = None) -> Path:
    """Validate and write results.json (atomically); returns its path. ``floors``: the baselines'
    quality checks (``reprokit.claims.floor_check`` records), rendered by the ``floors:<scale>`` marker."""
    res = _clean({"paper": paper, "scale": scale, "arms": arms, "tables": tables or {},
                  "claims": claims or [], "floors": floors or [], "protocol": protocol or {}, "config": config or {},
                  "seeds": seeds or [], "environment": environment_info((paper, *packages)),
                  "wall_time_s": round(float(wall_time_s), 1), **(extra or {})})
    validate_results(res)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(p)
    return p


def record_wall_time(out: str | Path, elapsed_s: float, *, tag: str, runs_recorded: int, from_scratch: bool,
                     keep: bool = True, interrupted: bool = False) -> float:
    """Append this invocation of a reproduction to ``out/wall_time.json`` and return the plan's wall time:
    the sum over the invocations of the same budget ``tag`` (a reproduction resumed across sessions adds up;
    an earlier plan's invocations are kept in the file but never summed). ``from_scratch``: none of the plan's
    runs was finished when this invocation started; ``interrupted``: it was stopped before the plan finished
    (its seconds count all the same: the runs it left half-done resume from their checkpoints). ``keep=False``
    (a smoke run, always from scratch) starts the file afresh."""
    path = Path(out) / "wall_time.json"
    inv = json.loads(path.read_text())["invocations"] if (keep and path.is_file()) else []
    inv.append({"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": round(float(elapsed_s), 1),
                "runs_recorded": int(runs_recorded), "from_scratch": bool(from_scratch), "tag": tag,
                **({"interrupted": True} if interrupted else {})})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"invocations": inv}, indent=1) + "\n")
    tmp.replace(path)
    return round(sum(i["elapsed_s"] for i in inv if i.get("tag") == tag), 1)


def load_results(path: str | Path) -> dict:
    res = json.loads(Path(path).read_text())
    validate_results(res)
    return res


def load_reported(path: str | Path) -> dict:
    """Read and check a paper's reported.yaml (see the module docstring for the schema)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ResultsError(f"{p}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ResultsError(f"{p}: top level must be a mapping")
    for k in ("paper", "arxiv", "version", "tables"):
        if k not in data:
            raise ResultsError(f"{p}: missing top-level key {k!r}")
    ids = set()
    for t in data["tables"]:
        for k in ("id", "columns", "rows"):
            if k not in t:
                raise ResultsError(f"{p}: table {t.get('id', '?')!r} lacks {k!r}")
        if t["id"] in ids:
            raise ResultsError(f"{p}: duplicate table id {t['id']!r}")
        ids.add(t["id"])
        t.setdefault("version", data["version"])
        t.setdefault("flags", [])
        for r in t["rows"]:
            if "label" not in r or "values" not in r:
                raise ResultsError(f"{p}: table {t['id']!r} row {r} needs 'label' and 'values'")
            unknown = set(r["values"]) - set(t["columns"])
            if unknown:
                raise ResultsError(f"{p}: table {t['id']!r} row {r['label']!r} has values for "
                                   f"unknown columns {sorted(unknown)}; columns: {t['columns']}")
    return data


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3g}" if a < 1 else f"{v:.2f}"
        return f"{v:.2e}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "| " + " | ".join(_fmt(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _exact(v: Any) -> Any:
    """Paper numbers are shown exactly as written in reported.yaml (no rounding)."""
    return repr(v) if isinstance(v, float) else v


def render_reported_table(reported: dict, table_id: str) -> str:
    tables = {t["id"]: t for t in reported["tables"]}
    if table_id not in tables:
        raise ResultsError(f"reported.yaml has no table {table_id!r}; tables: {sorted(tables)}")
    t = tables[table_id]
    rows = [[r["label"], *(_exact(r["values"].get(c)) for c in t["columns"])] for r in t["rows"]]
    flags = f" Flags: {', '.join(t['flags'])}." if t["flags"] else ""
    title = f" {t['title']}." if t.get("title") else ""
    note = f" {t['note']}" if t.get("note") else ""
    paper, arxiv = t.get("paper", reported["paper"]), t.get("arxiv", reported["arxiv"])
    cap = f"*{paper} (arXiv {arxiv}{t['version']}), {table_id}.{title}{flags}{note}*"
    return cap + "\n\n" + markdown_table(["", *t["columns"]], rows)


def render_results_table(res: dict, name: str) -> str:
    if name not in res["tables"]:
        raise ResultsError(f"results ({res['scale']}) have no table {name!r}; tables: {sorted(res['tables'])}")
    t = res["tables"][name]
    out = markdown_table(t["columns"], t["rows"])
    if t.get("caption"):
        out = f"*{t['caption']}*\n\n" + out
    return out


def render_claims(res: dict) -> str:
    rows = [[c["claim"], c.get("paper_ref", ""), f"**{c['status']}**", c["evidence"]] for c in res["claims"]]
    return markdown_table(["Claim", "Paper", "Status", "Evidence (ours)"], rows)


def render_floors(res: dict) -> str:
    rows = [[f.get("arm", ""), f["metric"], f["value"] if f["value"] is None else round(float(f["value"]), 4),
             f"{f['direction']} {f['floor']}", "**met**" if f["ok"] else "**missed**"] for f in res.get("floors", [])]
    if not rows:
        return "*no quality floor recorded for this scale*"
    return markdown_table(["baseline", "metric", "value", "floor", "status"], rows)


def render_bench(bench: dict) -> str:
    parts = []
    for case, rows in bench["cases"].items():
        saved = any(r.get("saved_mb") is not None for r in rows)
        cols = ["impl", "median ms", "p25 ms", "p75 ms", "peak MB", *(["saved MB"] if saved else []), "ratio"]
        body = [[r["name"], r["median_ms"], r.get("p25_ms"), r.get("p75_ms"), r.get("peak_mem_mb"),
                 *([r.get("saved_mb")] if saved else []),
                 f"{r['ratio']:.2f}x" if r.get("ratio") is not None else None] for r in rows]
        parts.append(f"**{case}**\n\n" + markdown_table(cols, body))
    hw = bench.get("hardware", {})
    ver = bench.get("versions", {})
    machine = hw.get("gpu") or hw.get("cpu", "?")
    extra_versions = ", ".join(f"{k} {v}" for k, v in ver.items() if k not in ("python", "torch", "numpy"))
    footer = (f"Command: `{bench.get('command', '?')}` — {machine}, {hw.get('torch_threads', '?')} threads, "
              f"torch {ver.get('torch', '?')}{', ' + extra_versions if extra_versions else ''}, "
              f"{str(bench.get('date', '?'))[:10]}.")
    return "\n\n".join([*parts, footer])


def _render_block(key: str, paper_dir: Path) -> str:
    kind, _, arg = key.partition(":")
    if kind == "reported":
        return render_reported_table(load_reported(paper_dir / "reported.yaml"), arg)
    if kind == "results":
        scale, _, name = arg.partition("/")
        return render_results_table(load_results(paper_dir / "results" / scale / "results.json"), name)
    if kind == "claims":
        return render_claims(load_results(paper_dir / "results" / arg / "results.json"))
    if kind == "floors":
        return render_floors(load_results(paper_dir / "results" / arg / "results.json"))
    if kind == "bench":
        path = paper_dir / "results" / (f"{arg}.json" if arg else "bench.json")
        return render_bench(json.loads(path.read_text()))
    raise ResultsError(f"unknown README marker kind {kind!r} in {key!r}; "
                       "valid: reported:<id>, results:<scale>/<table>, claims:<scale>, floors:<scale>, bench[:name]")


def render_readme(paper_dir: str | Path, write: bool = False) -> str:
    """README.md of ``paper_dir`` with every marker block re-rendered from the committed files."""
    paper_dir = Path(paper_dir)
    readme = paper_dir / "README.md"
    text = readme.read_text()

    def sub(m: re.Match) -> str:
        key = m.group("key").strip()
        return f"<!-- BEGIN {key} -->\n{_render_block(key, paper_dir)}\n<!-- END {key} -->"

    begins = re.findall(r"<!-- BEGIN ([^>]+?) -->", text)
    matched = [m.group("key") for m in _MARKER.finditer(text)]
    if begins != matched:
        raise ResultsError(f"{readme}: unbalanced README markers: BEGIN {begins} but complete blocks {matched} "
                           "(each '<!-- BEGIN k -->' needs a line '<!-- END k -->')")
    new = _MARKER.sub(sub, text)
    if write and new != text:
        readme.write_text(new)
    return new
