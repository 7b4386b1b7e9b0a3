"""Training: one process or torchrun (gloo on CPU, nccl on CUDA); exact resume from checkpoints.

Randomness per step (batch indices, t, noise, label dropout) is a deterministic function of
(seed, step, rank), and the checkpoint holds the model (with the routers' EMA thresholds), the EMA
weights and the optimiser, so N steps straight equal N/2 + resume + N/2.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from reprokit import dist as rdist
from reprokit.checkpoint import check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import to_dict
from reprokit.runs import MetricLogger, RunDir

from . import routing as R
from .config import Cfg
from .data import batch_indices, load_data
from .diffusion import Diffusion
from .model import DiT

COMPAT_KEYS = ("model", "diffusion")


def check_data(cfg: Cfg, data) -> None:
    m = cfg.model
    if tuple(data.images.shape[1:]) != (m.channels, m.image_size, m.image_size):
        raise ValueError(f"data images are {tuple(data.images.shape[1:])} but the model expects "
                         f"({m.channels}, {m.image_size}, {m.image_size}); set model.channels/model.image_size "
                         "or data.pad_to")
    if data.num_classes > m.num_classes:
        raise ValueError(f"data has {data.num_classes} classes but model.num_classes={m.num_classes}")


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 7_919 + step) * 131 + rank + 1)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def routing_stats(model: DiT) -> dict[str, float]:
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


def train(cfg: Cfg, out_dir: str | Path, quiet: bool = False) -> dict:
    """Train ``cfg``; writes metrics.jsonl, config.yaml and checkpoints under ``out_dir``."""
    info = rdist.init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    world, rank = info.world_size, info.rank
    tc = cfg.train
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size={tc.batch_size} is not divisible by the {world} ranks")
    out = Path(out_dir)
    data = load_data(cfg.data, "train", cfg.model.channels, cfg.model.image_size)
    check_data(cfg, data)
    rdist.seed_everything(tc.seed)  # same init on every rank
    model, diff = build(cfg)
    model.to(info.device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    run = RunDir(out, config=to_dict(cfg))
    start = 0
    ck = load_checkpoint(out / "ckpt") if tc.resume else None
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
        model.load_state_dict(ck.model)
        ema.load_state_dict(ck.ema)
        opt.load_state_dict(ck.optimizer)
        start = ck.step
    unused = cfg.model.moe.enabled and cfg.model.moe.target_head and cfg.loss.plr_weight == 0
    net = rdist.wrap_ddp(model, info, find_unused_parameters=unused) if world > 1 else model
    logger = MetricLogger(run.path)
    lc = cfg.loss
    local = tc.batch_size // world
    t0 = time.time()
    last: dict = {}
    model.train()
    for step in range(start, tc.steps):
        idx = batch_indices(len(data), tc.batch_size, step, tc.seed, rank, world)
        x0 = data.images[idx].to(info.device)
        y = data.labels[idx].to(info.device)
        g = step_generator(tc.seed, step, rank)
        t = diff.sample_t(local, g).to(info.device)
        noise = torch.randn(x0.shape, generator=g).to(info.device)
        if cfg.model.class_dropout > 0:
            drop = (torch.rand(local, generator=g) < cfg.model.class_dropout).to(info.device)
            y = torch.where(drop, torch.full_like(y, model.null_class), y)
        lr = tc.lr * min(1.0, (step + 1) / max(tc.warmup, 1))
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
                    **{k: float(v.detach()) for k, v in aux.items()}, **routing_stats(model),
                    "elapsed_s": round(time.time() - t0, 2)}
            logger.log(step=step + 1, split="train", **last)
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < tc.steps:
            _save(out, step + 1, model, ema, opt, cfg)
    if start < tc.steps or ck is None:
        _save(out, tc.steps, model, ema, opt, cfg)
    logger.close()
    return {"model": model, "ema": ema, "diffusion": diff, "last": last, "train_seconds": time.time() - t0,
            "world_size": world}


def _save(out: Path, step: int, model, ema, opt, cfg: Cfg) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=model, ema=ema, optimizer=opt, config=to_dict(cfg), keep_last=1)
    rdist.barrier()


def load_trained(cfg: Cfg, run_dir: str | Path, use_ema: bool = True) -> tuple[DiT, Diffusion, int]:
    """Model (EMA weights by default) from a run's latest checkpoint; a clear error when the
    checkpoint belongs to another model config."""
    ck = load_checkpoint(Path(run_dir) / "ckpt")
    if ck is None:
        raise FileNotFoundError(f"no checkpoint under {Path(run_dir) / 'ckpt'}")
    check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
    model, diff = build(cfg)
    model.load_state_dict(ck.ema if use_ema and ck.ema else ck.model)
    return model.eval(), diff, ck.step
