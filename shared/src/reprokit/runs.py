"""Run directories, JSONL metric logging and a rank-0 progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .config import save_config
from .dist import barrier, is_main

T = TypeVar("T")

__all__ = ["RunDir", "MetricLogger", "progress", "read_jsonl", "exclusive"]


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


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def _periodic(iterable: Iterable[T], total: int | None, desc: str, every_s: float) -> Iterator[T]:
    """Plain-text progress for logs: one line every ``every_s`` seconds with the rate and an ETA."""
    t0 = last = time.time()
    i = 0
    for i, x in enumerate(iterable, 1):
        yield x
        now = time.time()
        if now - last >= every_s:
            last = now
            el = now - t0
            if total:
                eta = el / i * (total - i)
                print(f"{desc}: {i}/{total} ({100 * i / total:.0f}%) elapsed {_fmt_s(el)} ETA {_fmt_s(eta)}",
                      file=sys.stderr, flush=True)
            else:
                print(f"{desc}: {i} done, elapsed {_fmt_s(el)}", file=sys.stderr, flush=True)
    if i and time.time() - t0 >= every_s:
        print(f"{desc}: {i}{f'/{total}' if total else ''} done in {_fmt_s(time.time() - t0)}",
              file=sys.stderr, flush=True)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "",
             disable: bool | None = None, every_s: float = 30.0, **kwargs: Any) -> Iterator[T]:
    """Progress of a long loop on rank 0: a tqdm bar (with ETA) when stderr is a terminal, otherwise a
    plain line every ``every_s`` seconds (elapsed, ETA) so logs show it too; silent on other ranks."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable is None:
        disable = not is_main()
    if disable:
        return iter(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return iter(tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **kwargs))
    return _periodic(iterable, total, desc or "progress", every_s)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def exclusive(lock_path: str | Path, what: str, every_s: float = 30.0, poll_s: float = 2.0) -> Iterator[None]:
    """Hold ``lock_path`` (created atomically, holding our pid) for the duration of the block.

    While another live process holds it, says so on stderr now and every ``every_s`` seconds (who,
    for how long); a lock left by a dead process is taken over."""
    lock = Path(lock_path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    last = 0.0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale: its holder died
                continue
            now = time.time()
            if now - last >= every_s or last == 0.0:
                last = now
                print(f"waiting for {what}: {lock} is held by pid {pid or '?'} "
                      f"(waited {_fmt_s(now - t0)})", file=sys.stderr, flush=True)
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
