"""Micro-benchmarks of alternative implementations, run interleaved in one process.

:func:`compare` times every candidate round-robin (the order rotated each repeat, so drift in clock
speed or cache state hits all candidates alike) and reports, per candidate:

* **time** -- median / 25th / 75th percentile wall time of one call, in ms. When CUDA is in use
  (``torch.cuda.is_initialized()``) the device is synchronised before and after each call, so
  asynchronous kernels are counted.
* **peak memory** -- the largest, over the timed calls, increase of memory during one call:

  - CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` measured around the call
    (peak stats reset before each call) -- tensors allocated through PyTorch's caching allocator.
  - CPU (Linux): the increase of the process's resident set size high-water mark (``VmHWM`` in
    ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before each call) over the RSS
    just before the call. This counts all process memory, not only tensors; memory that the C
    allocator reuses without returning to the OS can make it an underestimate for small
    allocations, but large tensors (mmap-backed) are counted accurately.
  - otherwise (no /proc): ``None``.

* **saved MB** -- the tensors autograd keeps for the backward pass during one call (measured once,
  after the warmup, through :func:`torch.autograd.graph.saved_tensors_hooks`): the bytes of the
  distinct storages packed by the call, leaf tensors (parameters and the benchmark's inputs) excluded.
  Deterministic, unlike the RSS peak, and the quantity that bounds the batch size in training.

Candidates should include everything to be compared (e.g. forward + backward) and return something
(a tensor) so the work is not optimised away.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BenchRow", "compare", "format_bench", "format_table", "hardware_info", "load_bench",
           "saved_activation_mb", "write_bench"]


@dataclass
class BenchRow:
    """One candidate's result. ``ratio`` = median_ms / baseline's median_ms (1.0 for the baseline)."""

    name: str
    median_ms: float
    p25_ms: float
    p75_ms: float
    peak_mem_mb: float | None
    ratio: float
    saved_mb: float | None = None


def _cuda_active() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _rss_kb() -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in kB, or None where unavailable."""
    try:
        s = _STATUS.read_text()
        hwm = re.search(r"VmHWM:\s+(\d+)", s)
        rss = re.search(r"VmRSS:\s+(\d+)", s)
        if hwm is None or rss is None:
            return None
        return int(hwm.group(1)), int(rss.group(1))
    except OSError:
        return None


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MemProbe:
    """Measures the peak memory increase (MB) during one call; see the module docstring."""

    def __init__(self) -> None:
        self.cuda = _cuda_active()
        self.cpu_ok = (not self.cuda) and _rss_kb() is not None and _reset_hwm()

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        elif self.cpu_ok:
            _reset_hwm()
            self._base = _rss_kb()[1]  # type: ignore[index]

    def stop(self) -> float | None:
        if self.cuda:
            return (torch.cuda.max_memory_allocated() - self._base) / 2**20
        if self.cpu_ok:
            hwm = _rss_kb()[0]  # type: ignore[index]
            return max(hwm - self._base, 0) / 1024.0
        return None


def saved_activation_mb(fn: Callable[[], Any]) -> float:
    """MB of the distinct storages autograd saves for backward while ``fn()`` runs (leaf tensors --
    parameters and inputs -- excluded; views of one storage counted once). ``fn`` may run backward too:
    only what the forward packs is counted."""
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not (t.is_leaf and t.requires_grad):
            st = t.untyped_storage()
            seen[(st.data_ptr(), str(t.device))] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values()) / 2**20


def compare(
    candidates: Mapping[str, Callable[[], Any]],
    baseline: str,
    warmup: int = 3,
    repeats: int = 10,
) -> list[BenchRow]:
    """Time ``candidates`` (name -> zero-argument callable) interleaved; rows in the given order.

    ``warmup`` untimed calls per candidate (also interleaved), then ``repeats`` rounds; in round r
    the candidates run in the order rotated by r. See the module docstring for what is measured.
    """
    names = list(candidates)
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not one of {names}")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    saved = {name: saved_activation_mb(candidates[name]) for name in names}
    cuda = _cuda_active()
    if cuda:
        torch.cuda.synchronize()
    probe = _MemProbe()
    times: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, float | None] = dict.fromkeys(names)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = candidates[name]
            probe.start()
            t0 = time.perf_counter()
            out = fn()
            if cuda:
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) * 1e3)
            mem = probe.stop()
            if mem is not None:
                prev = peaks[name]
                peaks[name] = mem if prev is None else max(prev, mem)
            del out
    base = statistics.median(times[baseline])
    rows = []
    for name in names:
        t = np.asarray(times[name])
        med = float(np.median(t))
        rows.append(BenchRow(
            name=name,
            median_ms=med,
            p25_ms=float(np.percentile(t, 25)),
            p75_ms=float(np.percentile(t, 75)),
            peak_mem_mb=peaks[name],
            ratio=med / base if base > 0 else float("nan"),
            saved_mb=saved[name],
        ))
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """Markdown table of ``rows``."""
    lines = [
        "| candidate | median ms | p25–p75 ms | peak MB | saved MB | × baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = "n/a" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.1f}"
        sv = "n/a" if r.saved_mb is None else f"{r.saved_mb:.1f}"
        lines.append(f"| {r.name} | {r.median_ms:.3f} | {r.p25_ms:.3f}–{r.p75_ms:.3f} | {mem} | {sv} "
                     f"| {r.ratio:.2f} |")
    return "\n".join(lines)


def hardware_info() -> dict[str, Any]:
    """CPU / GPU description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_bench(
    path: str | Path,
    cases: Mapping[str, list[BenchRow]],
    command: str = "",
    extra: dict[str, Any] | None = None,
    packages: tuple[str, ...] = (),
) -> Path:
    """Write ``{"command", "date", "hardware", "versions", "cases": {case: [rows]}, "extra"}`` JSON.

    ``packages``: further distributions whose versions are recorded (e.g. a peer implementation).
    """
    data = {
        "command": command,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "hardware": hardware_info(),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            **{p: _dist_version(p) for p in packages},
        },
        "cases": {case: [asdict(r) for r in rows] for case, rows in cases.items()},
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_bench(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`write_bench`; ``cases`` come back as lists of :class:`BenchRow`."""
    data = json.loads(Path(path).read_text())
    data["cases"] = {case: [BenchRow(**r) for r in rows] for case, rows in data.get("cases", {}).items()}
    return data


def format_bench(data: Mapping[str, Any]) -> str:
    """Markdown for a loaded bench file: one table per case plus the hardware line."""
    hw = data.get("hardware", {})
    parts = [f"Hardware: {hw.get('gpu') or hw.get('cpu')}; torch {data.get('versions', {}).get('torch')}; "
             f"{data.get('date', '')}; command: `{data.get('command', '')}`"]
    for case, rows in data.get("cases", {}).items():
        rows = [r if isinstance(r, BenchRow) else BenchRow(**r) for r in rows]
        parts.append(f"**{case}**\n\n{format_table(rows)}")
    return "\n\n".join(parts)
