"""Plots without a display: training curves from JSONL metric files and image grids as PNG.

Everything uses matplotlib's object API with the Agg canvas (``matplotlib.figure.Figure``), so no
pyplot global state and no GUI backend is involved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "read_records", "save_image_grid", "make_image_grid"]

Records = list[dict[str, Any]]


def read_records(path: str | Path) -> Records:
    """Read a JSONL file (one JSON object per line; blank lines skipped)."""
    out: Records = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e})") from e
    return out


def _normalise_runs(records_or_paths: Any) -> list[tuple[str, Records]]:
    """-> [(default label, records)] for: a path, a list of dicts (one run), a list of paths /
    lists of dicts (several runs) or a mapping label -> path/records."""
    if isinstance(records_or_paths, (str, Path)):
        return [(Path(records_or_paths).parent.name or str(records_or_paths), read_records(records_or_paths))]
    if isinstance(records_or_paths, Mapping):
        return [(str(k), _normalise_runs(v)[0][1]) for k, v in records_or_paths.items()]
    items = list(records_or_paths)
    if not items or all(isinstance(r, Mapping) for r in items):
        return [("run", [dict(r) for r in items])]
    runs: list[tuple[str, Records]] = []
    for i, item in enumerate(items):
        label, recs = _normalise_runs(item)[0]
        runs.append((label if isinstance(item, (str, Path)) else f"run {i}", recs))
    return runs


def _matches(rec: Mapping[str, Any], flt: Mapping[str, Any] | Callable[[Mapping[str, Any]], bool] | None) -> bool:
    if flt is None:
        return True
    if callable(flt):
        return bool(flt(rec))
    return all(rec.get(k) == v for k, v in flt.items())


def plot_curves(
    records_or_paths: Any,
    x: str = "step",
    ys: Sequence[str] | str = ("loss",),
    out: str | Path = "curves.png",
    labels: Sequence[str] | None = None,
    title: str = "",
    filter: Mapping[str, Any] | Callable[[Mapping[str, Any]], bool] | None = None,
    logy: bool = False,
    dpi: int = 100,
) -> Path:
    """Plot metric curves of one or several runs, one subplot per metric in ``ys``.

    Args:
        records_or_paths: a JSONL path, a list of dicts (one run), a list of paths or record lists
            (several runs, all on the same axes) or a mapping ``label -> path/records``.
        x: the x-axis key. Records lacking ``x`` or a given y (or with a non-finite value) are skipped.
        ys: metric keys to plot.
        out: PNG path (parent directories are created).
        labels: legend labels, one per run (defaults: mapping keys, parent directory names, run i).
        title: figure title.
        filter: keep only records matching this dict (e.g. ``{"split": "val"}``) or predicate.
        logy: log-scale y axes.
    Returns the output path.
    """
    from matplotlib.figure import Figure

    ys = [ys] if isinstance(ys, str) else list(ys)
    runs = _normalise_runs(records_or_paths)
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        runs = [(str(lab), recs) for lab, (_, recs) in zip(labels, runs, strict=True)]
    fig = Figure(figsize=(5.0 * len(ys), 3.6), dpi=dpi)
    axes = fig.subplots(1, len(ys), squeeze=False)[0]
    for ax, y in zip(axes, ys, strict=True):
        for label, recs in runs:
            pts = [
                (float(r[x]), float(r[y]))
                for r in recs
                if _matches(r, filter) and isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))
                and math.isfinite(float(r[y]))
            ]
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            xs, vs = zip(*pts, strict=True)
            ax.plot(xs, vs, label=label, marker="o" if len(pts) < 3 else None)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if len(runs) > 1 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def make_image_grid(
    images: Any,
    nrow: int = 8,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    padding: int = 2,
    pad_value: float = 1.0,
) -> np.ndarray:
    """Tile ``images`` ``(N, C, H, W)`` (C = 1 or 3; tensor or array) into a uint8 RGB array.

    ``nrow`` images per row; the grid is ``rows*(H+padding)+padding`` by ``ncol*(W+padding)+padding``
    pixels, ``ncol = min(nrow, N)``. ``value_range`` maps to [0, 255] (values are clipped); None
    uses the min/max of the images. ``pad_value`` in [0, 1].
    """
    try:
        import torch

        if isinstance(images, torch.Tensor):
            images = images.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, C, H, W) with C in (1, 3), got shape {arr.shape}")
    n, c, h, w = arr.shape
    if n == 0:
        raise ValueError("no images")
    lo, hi = value_range if value_range is not None else (float(arr.min()), float(arr.max()))
    arr = np.clip((arr - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if c == 1:
        arr = np.repeat(arr, 3, axis=1)
    ncol = min(nrow, n)
    rows = (n + ncol - 1) // ncol
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, 3), pad_value)
    for i in range(n):
        r, cc = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + cc * (w + padding)
        grid[y0 : y0 + h, x0 : x0 + w] = arr[i].transpose(1, 2, 0)
    return np.round(grid * 255.0).astype(np.uint8)


def save_image_grid(
    images: Any,
    path: str | Path,
    nrow: int = 8,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    padding: int = 2,
    pad_value: float = 1.0,
) -> Path:
    """Write ``images`` ``(N, C, H, W)`` as one PNG grid (see :func:`make_image_grid`); images in
    [-1, 1] by default, pass ``value_range=(0, 1)`` for [0, 1]. Returns the path."""
    import matplotlib.image

    grid = make_image_grid(images, nrow=nrow, value_range=value_range, padding=padding, pad_value=pad_value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, grid, format="png")
    return path

