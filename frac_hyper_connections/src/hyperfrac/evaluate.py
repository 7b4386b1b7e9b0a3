"""Evaluation on a model + data: LM loss / perplexity / bits on whole (or capped) splits; ViT top-1.

LM metrics (``reprokit.metrics.lm.LMAccumulator.as_dict``): ``loss`` (mean NLL per token, nats), ``ppl``,
``bpt`` (bits per token, always) and ``bpb`` (bits per byte) **only** where the bytes behind the tokens are
known (text with a decoder); user token files and synthetic tokens get no ``bpb``. Never imports train.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reprokit.dist import get_rank, get_world_size
from reprokit.metrics.lm import LMAccumulator

from .config import Cfg

__all__ = ["evaluate_lm", "evaluate_vit", "evaluate_split", "evaluate_splits"]


@torch.no_grad()
def evaluate_lm(model, cfg: Cfg, data, split: str) -> dict:
    """Non-overlapping windows of ``train.seq_len`` over the split (its first ``eval.max_tokens`` tokens if set);
    windows are sharded over ranks and the sums all-reduced."""
    model.eval()
    ids = getattr(data, split)
    if cfg.eval.max_tokens:
        ids = ids[: cfg.eval.max_tokens + 1]
    T = cfg.train.seq_len
    n_win = (len(ids) - 1) // T
    acc = LMAccumulator()
    rank, world = get_rank(), get_world_size()
    dev = next(model.parameters()).device
    B = cfg.eval.batch_size
    for b0 in range(rank * B, n_win, B * world):
        rows = np.arange(b0, min(b0 + B, n_win))
        idx = rows[:, None] * T + np.arange(T + 1)[None]          # (b, T + 1)
        chunk = torch.from_numpy(np.asarray(ids[idx], dtype=np.int64)).to(dev)
        logits = model(chunk[:, :-1])                              # (b, T, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1),
                              reduction="sum")
        acc.update(nll, chunk[:, 1:].numel())
    acc.reduce()
    n_bytes = data.n_bytes(np.asarray(ids[1: n_win * T + 1]))
    model.train()
    out = acc.as_dict(n_bytes)
    return {"loss": out.pop("nll"), "ppl": out.pop("ppl"), "bpt": out.pop("bpt"),
            **({"bpb": out.pop("bpb")} if "bpb" in out else {}), "tokens": out.pop("n_tokens")}


@torch.no_grad()
def evaluate_vit(model, cfg: Cfg, data, split: str) -> dict:
    """Top-1 and loss on ``val`` (last 10% of the training images, held out) or ``test`` (first
    ``eval.max_images`` images if set)."""
    model.eval()
    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
    if cfg.eval.max_images:
        x, y = x[: cfg.eval.max_images], y[: cfg.eval.max_images]
    dev = next(model.parameters()).device
    correct, loss, n = 0, 0.0, 0
    B = max(cfg.eval.batch_size, 1)
    for i in range(0, len(y), B):
        xb, yb = x[i:i + B].to(dev), y[i:i + B].to(dev)
        logits = model(xb)                                         # (b, classes)
        correct += int((logits.argmax(-1) == yb).sum())
        loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
        n += len(yb)
    model.train()
    return {"top1": correct / n, "loss": loss / n, "n": n}


def evaluate_split(model, cfg: Cfg, data, split: str) -> dict:
    return (evaluate_lm if cfg.model.kind == "lm" else evaluate_vit)(model, cfg, data, split)


def evaluate_splits(model, cfg: Cfg, data, splits: tuple[str, ...] = ("val", "test")) -> dict:
    """``{"val_loss": ..., "test_top1": ...}``: every metric of every split, prefixed by the split."""
    out = {}
    for s in splits:
        out.update({f"{s}_{k}": v for k, v in evaluate_split(model, cfg, data, s).items()})
    return out
