"""Run directories, JSONL metric logging and a rank-0 progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .config import save_config
from .dist import barrier, is_main

T = TypeVar("T")

__all__ = ["RunDir", "MetricLogger", "progress", "read_jsonl"]


class RunDir:
    """A run's output folder; rank 0 creates it and writes the resolved ``config.yaml``."""

    def __init__(self, path: str | Path, config: Any | None = None):
        self.path = Path(path)
        if is_main():
            self.path.mkdir(parents=True, exist_ok=True)
            if config is not None:
                save_config(config, self.path / "config.yaml")
        barrier()

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def __fspath__(self) -> str:
        return str(self.path)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible as strings
    return v


class MetricLogger:
    """Append one JSON object per ``log`` call to ``<run>/metrics.jsonl`` (rank 0 only).

    ``tensorboard=True`` also writes scalars to TensorBoard (needs the ``tensorboard`` extra).
    """

    def __init__(self, run_dir: str | Path, filename: str = "metrics.jsonl", tensorboard: bool = False):
        self.path = Path(run_dir) / filename
        self._fh = None
        self._tb = None
        self._t0 = time.time()
        if is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:  # pragma: no cover - depends on the optional extra
                    raise RuntimeError("tensorboard=True needs the 'tensorboard' extra: "
                                       "uv sync --extra tensorboard") from e
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, step: int, **metrics: Any) -> None:
        if self._fh is None:
            return
        rec = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()},
               "time": round(time.time() - self._t0, 3)}
        self._fh.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            prefix = f"{metrics['split']}/" if isinstance(metrics.get("split"), str) else ""
            for k, v in rec.items():
                if k not in ("step", "split") and isinstance(v, int | float):
                    self._tb.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file (blank lines ignored)."""
    out = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "",
             disable: bool | None = None, **kwargs: Any) -> Iterator[T]:
    """A tqdm bar on rank 0 when stderr is a terminal; silent elsewhere (logs, CI, other ranks)."""
    if disable is None:
        disable = not (is_main() and sys.stderr.isatty())
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, **kwargs))
