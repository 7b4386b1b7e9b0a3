"""Training (one process or torchrun): LM on text, ViT on images; exact resume; reloading a trained run.

* :func:`train` reads the data, builds the model and loads the checkpoint **before** it writes anything, so a
  failure (missing data, impossible shape, a checkpoint of another model) changes nothing saved. The run folder
  then holds ``config.yaml``, ``metrics.jsonl`` (``{"split": "train", "loss": ...}`` every ``train.log_every``
  steps) and ``ckpt/step_*/`` (the newest ``train.keep_last`` checkpoints).
* Batches come from ``reprokit.rng`` keyed by (seed, "batch", rank, step) (see data.py): N straight steps equal
  N/2 + resume + N/2.
* :func:`load_run` reloads a trained run from its *own* ``config.yaml`` and its newest complete checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from reprokit.checkpoint import CheckpointError, check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.dist import init_distributed, is_main, seed_everything, wrap_ddp
from reprokit.errors import ShapeError, UserError
from reprokit.runs import MetricLogger, RunDir, progress

from .config import Cfg
from .connections import param_groups
from .data import ImageData, LMData, image_batch, lm_batch, make_data
from .evaluate import evaluate_split, evaluate_splits
from .model import build_model, check_model_cfg

__all__ = ["train", "lr_at", "load_run", "LoadedRun", "check_train_cfg", "sublayer_grad_norms"]


def lr_at(step: int, cfg: Cfg) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then constant or cosine decay to ``min_lr_frac``."""
    t = cfg.train
    warm = max(1, int(t.warmup_frac * t.steps))
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "constant":
        return t.lr
    p = (step - warm) / max(1, t.steps - warm)
    return t.lr * (t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def sublayer_grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """Gradient norm of each sublayer's own parameters (attention / MLP), numbered in depth order."""
    out = {}
    for i, b in enumerate(model.trunk.blocks):
        for j, sub in enumerate((b.attn, b.mlp)):
            g = [p.grad.detach().float().norm() for p in sub.parameters() if p.grad is not None]
            out[f"gn_{2 * i + j:02d}"] = float(torch.stack(g).norm()) if g else 0.0
    return out


def check_train_cfg(cfg: Cfg) -> None:
    """Run-control values that cannot work (checked before anything is written)."""
    t = cfg.train
    for key in ("steps", "batch_size", "seq_len", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if t.keep_last < 2:
        raise ConfigError(f"train.keep_last must be >= 2 (a corrupt newest checkpoint needs a fallback), "
                          f"got {t.keep_last}")
    for key in ("ckpt_every", "eval_every", "stop_after", "threads"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if cfg.eval.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    if cfg.model.kind == "lm" and t.seq_len > cfg.model.context:
        raise ShapeError(f"train.seq_len={t.seq_len} is longer than model.context={cfg.model.context}")


def train(cfg: Cfg, out_dir: str | Path, data: LMData | ImageData | None = None) -> dict:
    """Train ``cfg`` into ``out_dir`` (resuming from its newest complete checkpoint); return the final metrics
    (``val_*``/``test_*`` of every split, ``train_wall_s``, ``params``) or ``{"stopped_at": step}`` when
    ``train.stop_after`` ends the run early."""
    info = init_distributed("cpu" if not torch.cuda.is_available() else "auto")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    out = Path(out_dir)
    # 1. everything that can fail, before anything is written
    check_train_cfg(cfg)
    if data is None:
        data = make_data(cfg)
    elif cfg.model.kind == "lm":
        cfg.model.vocab_size = data.vocab_size
    check_model_cfg(cfg.model)
    seed_everything(cfg.train.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    model = build_model(cfg.model).to(info.device)
    opt = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr,
                            betas=(cfg.train.beta1, cfg.train.beta2), fused=False)
    start = 0
    ck = load_checkpoint(out / "ckpt") if cfg.train.resume else None
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=("model",))
        model.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        ck.restore_rng()
        start = ck.step
    # 2. the run folder
    run = RunDir(out, config=to_dict(cfg))  # metrics.jsonl is appended to: a resumed run re-logs its steps
    ddp = wrap_ddp(model, info)
    logger = MetricLogger(run.path)
    t0 = time.perf_counter()
    tokens_per_step = cfg.train.batch_size * (cfg.train.seq_len if cfg.model.kind == "lm" else 1)
    end = min(cfg.train.stop_after, cfg.train.steps) if cfg.train.stop_after else cfg.train.steps
    desc = f"train {cfg.model.kind}-{cfg.model.connection}"
    for step in progress(range(start, end), total=end - start, desc=desc):
        if cfg.model.kind == "lm":
            x, y = lm_batch(data.train, cfg.train.seq_len, cfg.train.batch_size, cfg.train.seed, info.rank, step)
        else:
            x, y = image_batch(data, cfg.train.batch_size, cfg.train.seed, info.rank, step)
        x, y = x.to(info.device), y.to(info.device)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = ddp(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        log_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps
        extra = sublayer_grad_norms(model) if (cfg.train.grad_norms and log_now) else {}
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        if log_now:
            logger.log(step=step + 1, split="train", loss=loss.item(), lr=lr, grad_norm=float(gnorm),
                       tokens=(step + 1) * tokens_per_step * info.world_size, **extra)
        if cfg.train.eval_every and (step + 1) % cfg.train.eval_every == 0 and step + 1 < cfg.train.steps:
            logger.log(step=step + 1, split="val", **evaluate_split(model, cfg, data, "val"))
        if cfg.train.ckpt_every and (step + 1) % cfg.train.ckpt_every == 0 and step + 1 < end:
            _save(out, step + 1, model, opt, cfg)
    wall = time.perf_counter() - t0
    if start < end or ck is None:
        _save(out, end, model, opt, cfg)
    if end < cfg.train.steps:
        logger.close()
        return {"stopped_at": end}
    metrics = evaluate_splits(model, cfg, data)
    metrics["train_wall_s"] = wall
    metrics["params"] = sum(p.numel() for p in model.parameters())
    logger.log(step=cfg.train.steps, split="final", **metrics)
    logger.close()
    return metrics


def _save(out: Path, step: int, model, opt, cfg: Cfg) -> None:
    if is_main():
        save_checkpoint(out / "ckpt", step, model=model, optimizer=opt, config=to_dict(cfg),
                        state={"step": step}, keep_last=cfg.train.keep_last)


@dataclass
class LoadedRun:
    cfg: Cfg
    model: torch.nn.Module
    data: LMData | ImageData
    step: int
    path: Path


def load_run(run_dir: str | Path, overrides: Sequence[str] = (), device: str | torch.device = "cpu",
             with_data: bool = True) -> LoadedRun:
    """A trained run from its own ``config.yaml`` (plus ``overrides``, which may change evaluation keys; a
    changed model key is a ``CheckpointMismatch``) and its newest complete checkpoint (model in eval mode)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder (train one with `hyperfrac train --out-dir {run}`)")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run / 'config.yaml'}: missing; {run} is not a run folder written by `hyperfrac train`")
    cfg = load_config(Cfg, run / "config.yaml", overrides=list(overrides))
    ck = load_checkpoint(run / "ckpt", map_location=device)
    if ck is None:
        raise CheckpointError(f"{run / 'ckpt'}: no checkpoint (the run has not saved one yet)")
    data = make_data(cfg) if with_data else None
    check_config_compatible(ck.config, to_dict(cfg), keys=("model",))
    model = build_model(cfg.model).to(device)
    model.load_state_dict(ck.model)
    model.eval()
    return LoadedRun(cfg=cfg, model=model, data=data, step=ck.step, path=run)
