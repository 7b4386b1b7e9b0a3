"""The papers' analysis figures as functions and a command that writes PNGs.

* unrolled connection matrix (HC Eq. 20): weight with which sublayer j's output (j = 0: the embedding) enters
  sublayer k's input, from token-averaged coefficients; the last row is the model output (HC: sum of streams;
  FC: the concatenated fractions, averaged over fractions). For FC the entry is the fraction-average of the
  per-fraction weights (our scalar summary; the FC paper shows no such figure).
* adjacent-sublayer cosine similarity of the sublayer inputs (representation collapse, HC Fig. 3 / FC Fig. 2):
  median over tokens of cos(input_k, input_{k+1});
* per-stream norms of the hidden state before each sublayer;
* per-sublayer gradient norms (logged during training with ``train.grad_norms=true``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["collect", "adjacent_cosine", "stream_norms", "connection_matrix", "plot_matrix", "plot_lines",
           "analyze_model", "write_analysis"]


@torch.no_grad()
def collect(model, x: torch.Tensor) -> dict[str, list]:
    """Run ``model(x)`` recording each sublayer's input, the stream state and the mean coefficients."""
    conns = model.trunk.connections()
    rec: dict[str, list] = {"input": [], "streams": [], "matrices": []}
    for c in conns:
        c.record = lambda key, val: rec[key].append(val)
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for c in conns:
            c.record = None
        model.train(was)
    return rec


def adjacent_cosine(inputs: list[torch.Tensor]) -> list[float]:
    out = []
    for a, b in zip(inputs[:-1], inputs[1:], strict=True):
        cos = F.cosine_similarity(a.reshape(-1, a.shape[-1]).float(), b.reshape(-1, b.shape[-1]).float(), dim=-1)
        out.append(float(cos.median()))
    return out


def stream_norms(streams: list[torch.Tensor]) -> np.ndarray:
    """(sublayers, streams): mean L2 norm of each stream (HC copy / FC fraction) before each sublayer."""
    return np.stack([s.float().norm(dim=-1).reshape(-1, s.shape[-2]).mean(0).cpu().numpy() for s in streams])


def connection_matrix(matrices: list[dict], kind: str) -> np.ndarray:
    """(L+1, L+1) lower-triangular matrix; row k < L: input of sublayer k; row L: the output."""
    L = len(matrices)
    s = matrices[0]["mix"].shape[0]
    C = np.zeros((s, L + 1))
    C[:, 0] = 1.0                                   # every stream starts as the embedding (HC copy / FC reshape)
    M = np.zeros((L + 1, L + 1))
    for k, m in enumerate(matrices):
        read, mix, write = (m[key].double().cpu().numpy() for key in ("read", "mix", "write"))
        M[k] = (read.T @ C).mean(0)                 # the sublayer input, averaged over read columns
        C = mix.T @ C
        C[:, k + 1] += write
    M[L] = C.sum(0) if kind == "hc" else C.mean(0)
    return M


def plot_matrix(M: np.ndarray, path: str | Path, title: str) -> Path:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.6, 4.0), dpi=110)
    ax = fig.subplots()
    L = M.shape[0]
    masked = np.ma.masked_where(np.triu(np.ones_like(M), 1) > 0, M)
    im = ax.imshow(masked, cmap="RdBu_r", vmin=-np.abs(M).max(), vmax=np.abs(M).max())
    ax.set_xlabel("output of sublayer j (0 = embedding)")
    ax.set_ylabel("input of sublayer k (last = model output)")
    ax.set_xticks(range(L))
    ax.set_yticks(range(L))
    ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return Path(path)


def plot_lines(series: dict[str, list[float]], path: str | Path, xlabel: str, ylabel: str, title: str = "") -> Path:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.2, 3.6), dpi=110)
    ax = fig.subplots()
    for label, ys in series.items():
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize="small")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return Path(path)


def analyze_model(model, x: torch.Tensor) -> dict:
    rec = collect(model, x)
    kind = model.trunk.spec.kind
    return {"adjacent_cosine": adjacent_cosine(rec["input"]),
            "stream_norms": stream_norms(rec["streams"]).tolist(),
            "connection_matrix": connection_matrix(rec["matrices"], kind).tolist()}


def write_analysis(model, x: torch.Tensor, out: str | Path, train_records: list[dict] | None = None) -> dict:
    """``analysis.json`` and the PNGs of one model into ``out``; ``train_records``: the run's logged training
    records (per-sublayer gradient norms are plotted when they were logged with ``train.grad_norms=true``)."""
    out = Path(out)
    res = analyze_model(model, x)
    label = model.trunk.spec.label()
    plot_matrix(np.asarray(res["connection_matrix"]), out / "connection_matrix.png", f"{label}: unrolled (Eq. 20)")
    plot_lines({label: res["adjacent_cosine"]}, out / "adjacent_cosine.png", "sublayer pair (k, k+1)",
               "median cos(input_k, input_k+1)")
    norms = np.asarray(res["stream_norms"])
    plot_lines({f"stream {i}": norms[:, i].tolist() for i in range(norms.shape[1])}, out / "stream_norms.png",
               "sublayer", "mean L2 norm")
    recs = [r for r in (train_records or []) if r.get("split", "train") == "train" and "gn_00" in r]
    if recs:
        gn = {f"step {r['step']}": [r[k] for k in sorted(r) if k.startswith("gn_")] for r in recs[-3:]}
        plot_lines(gn, out / "grad_norms.png", "sublayer", "gradient norm")
    (out / "analysis.json").write_text(json.dumps(res, indent=1))
    return res
