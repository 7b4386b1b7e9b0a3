"""Training: one process or torchrun (gloo on CPU, nccl on CUDA); exact resume from checkpoints.

``train(cfg, out_dir)`` reads the data, builds the model and loads the newest complete checkpoint
*before* it writes anything, so an expected failure (a ``reprokit.errors.UserError``: missing data,
impossible shapes, a corrupt checkpoint or one of another configuration) leaves the run folder as it
was. Randomness per step comes from keyed streams ``reprokit.rng.step_generator(seed, stream, rank,
step)`` (timesteps, noise, label dropout) and the batch from ``data.batch_indices``; the checkpoint
holds the model (with the routers' EMA thresholds), the EMA weights and the optimiser, so N steps
straight equal N/2 + resume + N/2.

``load_run(run_dir, overrides)`` rebuilds a trained run from its *own* ``config.yaml`` and newest
checkpoint (for ``evaluate``, ``sample`` and the reproduction's evaluation).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from reprokit import dist as rdist
from reprokit.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    check_config_compatible,
    load_checkpoint,
    save_checkpoint,
)
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.rng import step_generator
from reprokit.runs import MetricLogger, RunDir, progress, read_jsonl

from . import routing as R
from .config import Cfg, TrainCfg
from .data import batch_indices, load_split
from .diffusion import Diffusion
from .model import DiT

OBJECTIVE_KEYS = ("kind", "num_timesteps")   # diffusion keys fixed by training (the sampler's are free)


def check_compatible(saved: dict | None, cfg: Cfg) -> None:
    """A checkpoint loads only into the same model (every ``model.*`` key) and the same objective
    (``diffusion.kind``, ``diffusion.num_timesteps``); CheckpointMismatch naming the keys otherwise."""
    cur = to_dict(cfg)
    check_config_compatible(saved, cur, keys=("model",))
    old = (saved or {}).get("diffusion", {})
    diffs = [f"diffusion.{k}: checkpoint={old.get(k)!r} current={cur['diffusion'][k]!r}"
             for k in OBJECTIVE_KEYS if old.get(k) != cur["diffusion"][k]]
    if diffs:
        raise CheckpointMismatch("checkpoint was written by a different configuration: " + "; ".join(diffs))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def routing_stats(model: DiT) -> dict[str, float]:
    """MaxVio and experts per token of the last (training) forward, mean over the MoE layers."""
    layers = model.moe_layers()
    if not layers:
        return {}
    masks = [m.last["mask"] for m in layers]
    return {
        "maxvio": sum(R.max_violation(m) for m in masks) / len(masks),
        "experts_per_token": float(torch.stack([m.float().sum(-1).mean() for m in masks]).mean()),
    }


def build(cfg: Cfg) -> tuple[DiT, Diffusion]:
    return DiT(cfg.model), Diffusion(cfg.diffusion)


def lr_at(tc: TrainCfg, step: int) -> float:
    """Linear warm-up over max(1, int(warmup_frac * steps)) steps, then constant or cosine down to
    ``min_lr_frac * lr`` at the last step."""
    warm = max(1, int(tc.warmup_frac * tc.steps))
    if step < warm:
        return tc.lr * min(1.0, (step + 1) / warm)
    if tc.schedule == "constant":
        return tc.lr
    frac = (step - warm) / max(1, tc.steps - warm)
    return tc.lr * (tc.min_lr_frac + (1 - tc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def train(cfg: Cfg, out_dir: str | Path) -> dict:
    """Train ``cfg`` into ``out_dir`` (config.yaml, metrics.jsonl, ckpt/step_*/); returns the final
    metrics: ``step``, the last logged train ``loss`` / ``total_loss`` / aux losses / routing stats,
    ``train_seconds`` (this call) and ``world_size``."""
    info = rdist.init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    world, rank = info.world_size, info.rank
    tc = cfg.train
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {world} ranks")
    out = Path(out_dir)
    # 1. everything that can fail, before anything is written
    data = load_split(cfg, "train")
    rdist.seed_everything(tc.seed)  # same init on every rank
    model, diff = build(cfg)
    model.to(info.device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    if cfg.model.moe.enabled:  # K = k |D_B| / E must be an integer for this batch (ShapeError otherwise)
        m = cfg.model.moe
        R.capacity(m.routing, m.top_k, tc.batch_size, model.num_tokens, m.num_experts)
    batch_indices(len(data), tc.batch_size, 0, tc.seed, rank, world)   # batch <= dataset (ShapeError)
    val_data = val = None
    if tc.eval_every:   # the validation curve (flattening check of the judgeable plan, issue #9)
        from .evaluate import val_slice

        val_data = load_split(cfg, "heldout")
        val = val_slice(cfg, len(val_data))
        if val is None:
            raise ConfigError(f"train.eval_every={tc.eval_every} needs validation images: set eval.val_n > 0")
    start = 0
    ck = load_checkpoint(out / "ckpt") if tc.resume else None
    if ck is not None:
        check_compatible(ck.config, cfg)
        if ck.ema is None or ck.optimizer is None:
            raise CheckpointError(f"{ck.path}: holds no EMA weights or optimiser state; cannot resume")
        model.load_state_dict(ck.model)
        ema.load_state_dict(ck.ema)
        opt.load_state_dict(ck.optimizer)
        start = ck.step
    # 2. the run folder
    run = RunDir(out, config=cfg)
    logger = MetricLogger(run.path)
    unused = cfg.model.moe.enabled and cfg.model.moe.target_head and cfg.loss.plr_weight == 0
    net = rdist.wrap_ddp(model, info, find_unused_parameters=unused) if world > 1 else model
    lc = cfg.loss
    local = tc.batch_size // world
    t0 = time.time()
    last: dict = {}
    model.train()
    for step in progress(range(start, tc.steps), total=tc.steps - start, desc=f"train {out.name}"):
        idx = batch_indices(len(data), tc.batch_size, step, tc.seed, rank, world)   # (local,)
        x0 = data.images[idx].to(info.device)                                       # (local, C, H, W)
        y = data.labels[idx].to(info.device)                                        # (local,)
        t = diff.sample_t(local, step_generator(tc.seed, "t", rank, step)).to(info.device)
        noise = torch.randn(x0.shape, generator=step_generator(tc.seed, "noise", rank, step)).to(info.device)
        if cfg.model.class_dropout > 0:
            u = torch.rand(local, generator=step_generator(tc.seed, "label_dropout", rank, step))
            y = torch.where((u < cfg.model.class_dropout).to(info.device), torch.full_like(y, model.null_class), y)
        lr = lr_at(tc, step)
        for grp in opt.param_groups:
            grp["lr"] = lr
        loss_d, _, target = diff.loss(net, x0, y, t, noise)
        aux = model.aux_losses(model.patchify(target), rsl=lc.rsl_weight > 0, plr=lc.plr_weight > 0,
                               balance=lc.balance_weight > 0, plr_reduce=lc.plr_reduce)
        total = loss_d
        for name, w in (("rsl", lc.rsl_weight), ("plr", lc.plr_weight), ("balance", lc.balance_weight)):
            if name in aux:
                total = total + w * aux[name]
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        opt.step()
        ema_update(ema, model, tc.ema_decay)
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"non-finite loss {float(total.detach())} at step {step}")
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            vals = torch.tensor([float(loss_d.detach()), float(total.detach())])
            rdist.all_reduce(vals, "mean")
            last = {"loss": float(vals[0]), "total_loss": float(vals[1]), "lr": lr, "grad_norm": float(gnorm),
                    **{k: float(v.detach()) for k, v in aux.items()}, **routing_stats(model)}
            logger.log(step=step + 1, split="train", **last)
        if val is not None and ((step + 1) % tc.eval_every == 0 or step + 1 == tc.steps):
            from .evaluate import heldout_loss

            probe = ema if cfg.eval.use_ema else model
            vl = heldout_loss(probe, diff, val_data, cfg, val)["heldout_loss"]
            model.train()
            logger.log(step=step + 1, split="val", val_loss=vl)
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < tc.steps:
            _save(out, step + 1, model, ema, opt, cfg)
    if start < tc.steps or ck is None:
        _save(out, tc.steps, model, ema, opt, cfg)
    logger.close()
    if not last and rdist.is_main():  # nothing ran (already finished): the last logged line
        rec = [r for r in read_jsonl(run.path / "metrics.jsonl") if r.get("split") == "train"]
        last = {k: v for k, v in (rec[-1] if rec else {}).items() if k not in ("step", "split", "time")}
    return {"step": tc.steps, **last, "train_seconds": round(time.time() - t0, 2), "world_size": world}


def _save(out: Path, step: int, model, ema, opt, cfg: Cfg) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=model, ema=ema, optimizer=opt, config=to_dict(cfg),
                        keep_last=cfg.train.keep_last)
    rdist.barrier()


@dataclass
class LoadedRun:
    """A trained run: its own config (plus evaluation overrides), the model (EMA weights when
    ``cfg.eval.use_ema``) in eval mode, the diffusion, the checkpoint step and the run folder."""

    cfg: Cfg
    model: DiT
    diffusion: Diffusion
    step: int
    path: Path


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Rebuild the run in ``run_dir`` from its ``config.yaml`` and newest complete checkpoint.

    ``overrides`` may change evaluation keys (``eval.*``, the sampler's ``diffusion.sample_steps`` and
    ``diffusion.cfg_scale``, ``data.*``); one that changes a model key or the training objective is a
    CheckpointMismatch.
    A missing folder, config or checkpoint is a UserError naming the path.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist (give --run the --out-dir of a train)")
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run / 'config.yaml'} is missing: {run} is not a run folder written by train")
    cfg = load_config(Cfg, run / "config.yaml", list(overrides))
    ck = load_checkpoint(run / "ckpt")
    if ck is None:
        raise CheckpointError(f"no checkpoint under {run / 'ckpt'} (was the training interrupted before its first save?)")
    check_compatible(ck.config, cfg)
    model, diff = build(cfg)
    model.load_state_dict(ck.ema if cfg.eval.use_ema and ck.ema is not None else ck.model)
    return LoadedRun(cfg=cfg, model=model.eval(), diffusion=diff, step=ck.step, path=run)
