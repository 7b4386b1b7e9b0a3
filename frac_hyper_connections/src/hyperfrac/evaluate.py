"""Evaluation: LM loss / perplexity / bits-per-byte on whole (or capped) splits; ViT top-1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reprokit.checkpoint import check_config_compatible, load_checkpoint
from reprokit.config import load_config, to_dict
from reprokit.dist import get_rank, get_world_size
from reprokit.metrics.lm import LMAccumulator

from .config import Cfg


@torch.no_grad()
def evaluate_lm(model, cfg: Cfg, data, split: str) -> dict:
    """Non-overlapping windows of ``train.seq_len`` over the split (first ``data.eval_tokens`` tokens if set);
    windows are sharded over ranks and the sums all-reduced."""
    model.eval()
    ids = getattr(data, split)
    if cfg.data.eval_tokens:
        ids = ids[: cfg.data.eval_tokens + 1]
    T = cfg.train.seq_len
    n_win = (len(ids) - 1) // T
    acc = LMAccumulator()
    rank, world = get_rank(), get_world_size()
    dev = next(model.parameters()).device
    B = cfg.data.eval_batch
    for b0 in range(rank * B, n_win, B * world):
        rows = np.arange(b0, min(b0 + B, n_win))
        idx = rows[:, None] * T + np.arange(T + 1)[None]
        chunk = torch.from_numpy(np.asarray(ids[idx], dtype=np.int64)).to(dev)
        logits = model(chunk[:, :-1])
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1),
                              reduction="sum")
        acc.update(nll, chunk[:, 1:].numel())
    acc.reduce()
    n_bytes = data.n_bytes(np.asarray(ids[1: n_win * T + 1]))
    model.train()
    return {"loss": acc.nll, "ppl": acc.ppl, "bpb": acc.bits_per_byte(n_bytes), "tokens": acc.n_tokens}


@torch.no_grad()
def evaluate_vit(model, cfg: Cfg, data, split: str) -> dict:
    """Top-1 and loss on ``val`` (last 10% of the training images, held out) or ``test``."""
    model.eval()
    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
    if cfg.data.eval_tokens:
        x, y = x[: cfg.data.eval_tokens], y[: cfg.data.eval_tokens]
    correct, loss, n = 0, 0.0, 0
    for i in range(0, len(y), 256):
        logits = model(x[i:i + 256])
        correct += int((logits.argmax(-1) == y[i:i + 256]).sum())
        loss += float(F.cross_entropy(logits, y[i:i + 256], reduction="sum"))
        n += len(y[i:i + 256])
    model.train()
    return {"top1": correct / n, "loss": loss / n, "n": n}


def cmd_evaluate(args) -> int:
    from .model import build_model
    from .train import make_data
    cfg = load_config(Cfg, args.config, overrides=args.overrides or [])
    out = Path(args.out_dir or cfg.out_dir)
    data = make_data(cfg)
    ck = load_checkpoint(out / "ckpt")
    if ck is None:
        raise SystemExit(f"no checkpoint under {out / 'ckpt'}")
    check_config_compatible(ck.config, to_dict(cfg), keys=("model",))
    model = build_model(cfg.model)
    model.load_state_dict(ck.model)
    fn = evaluate_lm if cfg.model.kind == "lm" else evaluate_vit
    for split in ("val", "test"):
        print(split, fn(model, cfg, data, split))
    return 0
