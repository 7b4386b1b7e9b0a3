"""Training (one process or torchrun) with exact resume; ``load_run`` reloads a trained run.

Order of a start: data, model, optimiser and the checkpoint are all loaded *before* anything is written,
so a failing start (missing data, a bad value, a corrupt checkpoint) leaves the run folder as it was.

One AdamW (Table 4: beta 0.9 / 0.95, weight decay 0.1 on matrices) with three parameter groups: decayed
matrices, undecayed (norms, embeddings, Tucker cores), and the memory value tables, whose LR is
``lr x value_lr_mult(step)``: fixed (PKM, x10) or, with ``train.value_lr_decay`` (UltraMem), decaying
linearly from ``value_lr_mult`` to 1 over ``value_lr_decay_frac`` of the steps, on top of the schedule.
The value tables get dense gradients (our choice: at CPU scale the tables hold ~2M parameters; the
paper's sparse / sharded update is a systems optimisation). The loss is CE + the modules' auxiliary losses
(MoE balance, TDQKR). The per-step batch is a pure function of (seed, rank, step) (``reprokit.rng``), so
N straight steps equal N/2 + resume + N/2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from reprokit import dist as rdist
from reprokit.checkpoint import (
    CheckpointError,
    check_config_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.errors import DataError
from reprokit.runs import MetricLogger, RunDir, progress

from .config import Cfg
from .counter import model_counts
from .data import LMData, load_data, train_batch
from .evaluate import evaluate_lm
from .model import build_model, lm_loss

COMPAT_KEYS = ("model",)


def prepare_data(cfg: Cfg) -> LMData:
    """Load the data and set ``model.vocab_size`` from it (0 = from the data; another value must agree)."""
    data = load_data(cfg)
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = data.vocab_size
    elif cfg.model.vocab_size != data.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} but the {data.source} data has "
                          f"V={data.vocab_size}; set model.vocab_size=0 (from the data) or the data's value")
    return data


def make_optimizer(model: torch.nn.Module, cfg: Cfg) -> torch.optim.Optimizer:
    """AdamW groups: 0 decayed matrices, 1 undecayed, 2 memory values (own LR multiplier, no decay)."""
    t = cfg.train
    values = {id(p) for p in model.value_parameters()}
    no_decay_ids = {id(model.wte.weight)}
    decay, no_decay, vals = [], [], []
    for name, p in model.named_parameters():
        if id(p) in values:
            vals.append(p)
        elif p.ndim < 2 or id(p) in no_decay_ids or name.endswith(".core") or ".norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0},
                              {"params": vals, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, foreach=False)


def value_lr_mult(step: int, cfg: Cfg) -> float:
    """x value_lr_mult, or 1 + (mult - 1) max(0, 1 - step / (steps frac)) with value_lr_decay."""
    t = cfg.train
    if not t.value_lr_decay:
        return t.value_lr_mult
    return 1.0 + (t.value_lr_mult - 1.0) * max(0.0, 1.0 - step / max(1.0, t.steps * t.value_lr_decay_frac))


def lr_at(step: int, cfg: Cfg) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then constant or cosine down to ``min_lr_frac``."""
    t = cfg.train
    warm = max(1, int(round(t.warmup_frac * t.steps)))
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "constant":
        return t.lr
    p = min(1.0, (step - warm) / max(1, t.steps - warm))
    return t.lr * (t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Global-norm clipping."""
    norms = [p.grad.float().norm() for p in params if p.grad is not None]
    if not norms:
        return 0.0
    total = torch.stack(norms).norm()
    if max_norm > 0:
        coef = max_norm / (float(total) + 1e-6)
        if coef < 1.0:
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(coef)
    return float(total)


def _save(out: Path, step: int, model, opt, cfg: Cfg, state: dict) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=model, optimizer=opt.state_dict(), state=state, config=to_dict(cfg), keep_last=cfg.train.keep_last)
    rdist.barrier()


def _dir_mb(path: Path | None) -> float | None:
    if path is None or not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


def train(cfg: Cfg, out_dir: str | Path, data: LMData | None = None, quiet: bool = False) -> dict:
    """Train ``cfg`` into ``out_dir`` (resuming from its newest checkpoint); return the final metrics."""
    info = rdist.init_distributed()
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    out = Path(out_dir)
    data = prepare_data(cfg) if data is None else data
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = data.vocab_size
    model = build_model(cfg.model, seed=tc.seed).to(info.device)
    opt = make_optimizer(model, cfg)
    start, ck = 0, None
    if tc.resume:
        ck = load_checkpoint(out / "ckpt")
    elif latest_checkpoint(out / "ckpt") is not None:
        raise CheckpointError(f"{out / 'ckpt'} holds checkpoints but train.resume=false; use another --out-dir")
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
        model.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        ck.restore_rng()
        start = ck.step
    # ---- nothing was written above this line ----
    run = RunDir(out, config=to_dict(cfg))
    logger = MetricLogger(run.path)
    net = rdist.wrap_ddp(model, info)
    params = [p for p in model.parameters()]
    tokens_per_step = tc.batch_size * tc.seq_len * info.world_size
    end = min(tc.stop_after, tc.steps) if tc.stop_after else tc.steps
    model.train()
    t0 = time.perf_counter()
    for step in progress(range(start, end), desc=f"train {out.name}", disable=quiet or not rdist.is_main()):
        x, y, ds = (t.to(info.device) for t in train_batch(data, tc.seq_len, tc.batch_size, tc.seed, info.rank, step))
        lr = lr_at(step, cfg)
        vm = value_lr_mult(step, cfg)
        for i, g in enumerate(opt.param_groups):
            g["lr"] = lr * vm if i == 2 else lr
        logits = net(x, ds)
        ce = lm_loss(logits, y)
        aux = model.aux
        total = ce + aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = clip_gradients(params, tc.grad_clip)
        opt.step()
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"non-finite loss {float(total.detach())} at step {step + 1}")
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            vals = torch.tensor([float(ce.detach()), float(aux.detach())])
            rdist.all_reduce(vals, "mean")
            rec = {"loss": float(vals[0]), "aux_loss": float(vals[1]), "lr": lr, "value_lr_mult": vm,
                   "grad_norm": gnorm, "tokens": (step + 1) * tokens_per_step}
            logger.log(step=step + 1, split="train", **rec)
        if tc.eval_every and (step + 1) % tc.eval_every == 0:
            m = evaluate_lm(model, data, "val", tc.seq_len, cfg.eval.batch_size, max_tokens=tc.eval_tokens)
            logger.log(step=step + 1, split="val", **m)
            model.train()
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < end:
            _save(out, step + 1, model, opt, cfg, {"tokens": (step + 1) * tokens_per_step})
    wall = time.perf_counter() - t0
    if start < end or ck is None:
        _save(out, end, model, opt, cfg, {"tokens": end * tokens_per_step})
    if end < tc.steps:
        logger.close()
        return {"stopped_at": end}
    metrics: dict = {}
    for split in (s for s in cfg.eval.splits if s in data.tokens):   # a user's memmap may have no test split
        m = evaluate_lm(model, data, split, tc.seq_len, cfg.eval.batch_size, max_tokens=cfg.eval.max_tokens)
        metrics.update({f"{split}_{k}": v for k, v in m.items()})
    steps_run = end - start
    metrics.update({"steps": tc.steps, "tokens": tc.steps * tokens_per_step, "train_wall_s": wall,
                    "s_per_step": wall / steps_run if steps_run else None, "world_size": info.world_size,
                    **{f"params_{k}": v for k, v in model.param_counts().items()},
                    **{f"count_{k}": v for k, v in model_counts(cfg.model).items()},
                    "ckpt_mb": _dir_mb(latest_checkpoint(out / "ckpt"))})
    logger.log(step=tc.steps, split="eval", **{k: v for k, v in metrics.items() if isinstance(v, int | float)})
    logger.close()
    return metrics


@dataclass
class LoadedRun:
    cfg: Cfg
    model: torch.nn.Module
    step: int
    data: LMData
    path: Path


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """A trained run from its own ``config.yaml`` and newest complete checkpoint. Overrides may change
    evaluation keys (``eval.*``, ``data.*``); a changed ``model`` key is a CheckpointMismatch."""
    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path}: missing; --run must be a folder written by `ultramem train`")
    saved = load_config(Cfg, cfg_path)
    cfg = load_config(Cfg, cfg_path, list(overrides))
    check_config_compatible(to_dict(saved), to_dict(cfg), keys=COMPAT_KEYS)
    data = prepare_data(cfg)
    ck = load_checkpoint(run / "ckpt")
    if ck is None:
        raise CheckpointError(f"{run / 'ckpt'}: no checkpoint in this run folder")
    check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
    model = build_model(cfg.model, seed=cfg.train.seed)
    model.load_state_dict(ck.model)
    return LoadedRun(cfg=cfg, model=model.eval(), step=ck.step, data=data, path=run)
