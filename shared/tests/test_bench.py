"""bench.compare ranks a slower candidate higher; JSON round trip and markdown table."""

from __future__ import annotations

import time

import pytest
import torch

from reprokit.bench import (
    BenchRow,
    compare,
    format_bench,
    format_table,
    load_bench,
    saved_activation_mb,
    write_bench,
)


def test_slower_candidate_has_larger_ratio(tmp_path) -> None:
    calls: list[str] = []

    def fast() -> torch.Tensor:
        calls.append("fast")
        time.sleep(0.002)
        return torch.zeros(1)

    def slow() -> torch.Tensor:
        calls.append("slow")
        time.sleep(0.008)
        return torch.zeros(1)

    rows = compare({"fast": fast, "slow": slow}, baseline="fast", warmup=1, repeats=6)
    by = {r.name: r for r in rows}
    assert by["fast"].ratio == pytest.approx(1.0)
    assert by["slow"].ratio > 2.0
    assert by["slow"].median_ms >= 8.0 and by["fast"].p25_ms <= by["fast"].median_ms <= by["fast"].p75_ms
    # warmup (fast, slow), one untimed call each for the saved-activation count, then interleaved rounds
    # with rotated order: (fast, slow), (slow, fast), ...
    assert calls[4:8] == ["fast", "slow", "slow", "fast"] and len(calls) == 2 + 2 + 12

    path = write_bench(tmp_path / "bench.json", {"sleep": rows}, command="pytest", extra={"note": 1})
    data = load_bench(path)
    assert data["cases"]["sleep"] == rows and data["extra"] == {"note": 1}
    assert data["versions"]["torch"] == torch.__version__ and "hardware" in data and "date" in data
    assert "| slow |" in format_bench(data)


def test_peak_memory_tracks_allocation_size() -> None:
    def small() -> torch.Tensor:
        return torch.ones(1000).sum()

    def big() -> torch.Tensor:
        return torch.ones(16 * 2**20 // 4 * 4).sum()  # 64 MiB float32

    rows = compare({"small": small, "big": big}, baseline="small", warmup=1, repeats=3)
    mem = {r.name: r.peak_mem_mb for r in rows}
    if mem["big"] is None:
        pytest.skip("no memory measurement on this platform")
    assert mem["big"] > 40.0 and mem["small"] < 10.0


def test_format_table_and_bad_baseline() -> None:
    table = format_table([BenchRow("a", 1.0, 0.9, 1.1, None, 1.0), BenchRow("b", 2.5, 2.4, 2.6, 3.0, 2.5)])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| candidate")
    assert "| b | 2.500 | 2.400–2.600 | 3.0 | n/a | 2.50 |" in table and "n/a" in lines[2]
    with pytest.raises(ValueError):
        compare({"a": lambda: None}, baseline="missing")


def test_saved_activation_mb_counts_saved_storages_once() -> None:
    w = torch.randn(256, 256, requires_grad=True)   # a leaf (parameter-like): never counted
    x = torch.randn(1024, 256, requires_grad=True)

    def mlp() -> torch.Tensor:   # saves x (leaf, excluded), w (leaf), h = x @ w (1 MiB), gelu(h) input h
        h = x @ w
        y = torch.nn.functional.gelu(h) @ w        # gelu saves h (same storage), matmul saves gelu(h)
        y.sum().backward()
        return y

    def nograd() -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.gelu(x @ w)

    assert saved_activation_mb(mlp) == pytest.approx(2.0)     # h and gelu(h): 1024 x 256 x 4 B each
    assert saved_activation_mb(nograd) == 0.0
    rows = compare({"mlp": mlp, "nograd": nograd}, baseline="mlp", warmup=0, repeats=1)
    assert [r.saved_mb for r in rows] == [pytest.approx(2.0), 0.0]
