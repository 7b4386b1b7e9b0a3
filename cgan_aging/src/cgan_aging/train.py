"""Training: C-GAN / age-only cGAN, one process or torchrun (gradients averaged by hand, so the
wgan-gp double backward works too); exact resume from checkpoints.

``train(cfg, out_dir)`` reads the data, builds the pairs, G, D_age and D_trans and loads the newest
complete checkpoint *before* anything is written. One *step* = ``train.n_critic`` discriminator
updates (D_age, and D_trans when lambda_t > 0) then one G update on the batch of the last D update.
Randomness of D iteration ``it`` comes from keyed streams: ``batch`` (unpaired faces), ``flip``,
``target`` / ``wrong`` (groups != the face's own), ``pairs`` and ``negatives`` (pair sampler),
``alpha`` (GP). The logged ``loss`` is the generator's total loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from reprokit import dist as rdist
from reprokit.checkpoint import CheckpointError, check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.rng import step_generator, step_rng
from reprokit.runs import MetricLogger, RunDir, progress, read_jsonl

from .config import Cfg, TrainCfg
from .data import (
    AgeData,
    adjacent_pairs,
    batch_indices,
    check_pairs,
    load_train,
    sample_negatives,
    sample_pairs,
)
from .gan import Batch, d_loss, g_loss
from .kernels import select_impl
from .model import AgeDiscriminator, Generator, TransitionDiscriminator

CHECK_KEYS = ("model",)


def build(cfg: Cfg) -> nn.ModuleDict:
    """{"G", "D_age", "D_trans"} (one module, one state dict)."""
    return nn.ModuleDict({"G": Generator(cfg), "D_age": AgeDiscriminator(cfg), "D_trans": TransitionDiscriminator(cfg)})


def lr_factor(tc: TrainCfg, step: int) -> float:
    if tc.schedule == "constant":
        return 1.0
    decay = max(1, int(tc.decay_frac * tc.steps))
    return min(1.0, (tc.steps - step) / decay)


def _avg_grads(module: nn.Module, world: int) -> None:
    if world > 1:
        for p in module.parameters():
            if p.grad is not None:
                rdist.all_reduce(p.grad, "mean")


def _other_group(y: torch.Tensor, K: int, g: torch.Generator) -> torch.Tensor:
    """A uniformly drawn group != y for each entry."""
    off = torch.randint(1, K, y.shape, generator=g)
    return (y + off) % K


def make_batch(data: AgeData, pairs: np.ndarray, cfg: Cfg, rank: int, world: int, it: int, device) -> Batch:
    tc, K = cfg.train, cfg.model.num_groups
    local = tc.batch_size // world
    idx = torch.from_numpy(batch_indices(len(data), local, tc.seed, rank, world, it))
    x, y = data.images[idx], data.group[idx]
    if cfg.data.flip:
        f = torch.rand(local, generator=step_generator(tc.seed, "flip", rank, it)) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(3), x)
    y_t = _other_group(y, K, step_generator(tc.seed, "target", rank, it))
    y_w = _other_group(y, K, step_generator(tc.seed, "wrong", rank, it))
    b = Batch(x.to(device), y.to(device), y_t.to(device), y_w.to(device))
    P = max(1, (cfg.gan.pair_batch or tc.batch_size // 2) // world)
    if cfg.gan.lambda_t > 0 and len(pairs):
        pr = sample_pairs(pairs, P, step_rng(tc.seed, "pairs", rank, it))
        b.x_a, b.x_b = data.images[pr[:, 0]].to(device), data.images[pr[:, 1]].to(device)
        b.y_a = data.group[pr[:, 0]].to(device)
        if cfg.gan.trans_negatives:
            ng = sample_negatives(data.person.numpy(), data.group.numpy(), P, step_rng(tc.seed, "negatives", rank, it))
            b.neg = (data.images[ng[:, 0]].to(device), data.images[ng[:, 1]].to(device), data.group[ng[:, 0]].to(device))
    if cfg.gan.loss == "wgan-gp":
        b.alpha = torch.rand(max(local, P), 1, 1, 1, generator=step_generator(tc.seed, "alpha", rank, it)).to(device)
    return b


def train(cfg: Cfg, out_dir: str | Path) -> dict:
    """Train into ``out_dir`` (config.yaml, metrics.jsonl, ckpt/step_*/); returns the final metrics."""
    info = rdist.init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    world, rank, dev = info.world_size, info.rank, info.device
    tc = cfg.train
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {world} ranks")
    out = Path(out_dir)
    # 1. everything that can fail, before anything is written
    select_impl(cfg.model.impl, dev)
    data = load_train(cfg)
    pairs = adjacent_pairs(data.person.numpy(), data.group.numpy())
    check_pairs(pairs, cfg, cfg.data.path or f"data.source={cfg.data.source}")
    if cfg.gan.lambda_t > 0 and cfg.gan.trans_negatives:
        sample_negatives(data.person.numpy(), data.group.numpy(), 1, np.random.default_rng(0))
    batch_indices(len(data), tc.batch_size // world, tc.seed, rank, world, 0)
    rdist.seed_everything(tc.seed)
    net = build(cfg).to(dev)
    G, Da, Dt = net["G"], net["D_age"], net["D_trans"]
    opt_g = torch.optim.Adam(G.parameters(), tc.lr, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam([*Da.parameters(), *Dt.parameters()], tc.d_lr, betas=(tc.beta1, tc.beta2))
    start = 0
    ck = load_checkpoint(out / "ckpt") if tc.resume else None
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=CHECK_KEYS)
        if not isinstance(ck.optimizer, dict) or set(ck.optimizer) != {"g", "d"}:
            raise CheckpointError(f"{ck.path}: optim.pt holds no G and D optimiser states; cannot resume")
        net.load_state_dict(ck.model)
        opt_g.load_state_dict(ck.optimizer["g"])
        opt_d.load_state_dict(ck.optimizer["d"])
        start = ck.step
    # 2. the run folder
    run = RunDir(out, config=cfg)
    logger = MetricLogger(run.path)
    t0, last = time.time(), {}
    net.train()
    for step in progress(range(start, tc.steps), total=tc.steps - start, desc=f"train {out.name}"):
        f = lr_factor(tc, step)
        for grp in opt_g.param_groups:
            grp["lr"] = tc.lr * f
        for grp in opt_d.param_groups:
            grp["lr"] = tc.d_lr * f
        for j in range(tc.n_critic):
            b = make_batch(data, pairs, cfg, rank, world, step * tc.n_critic + j, dev)
            ld, dparts = d_loss(G, Da, Dt, cfg, b)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            _avg_grads(Da, world)
            _avg_grads(Dt, world)
            opt_d.step()
        lg, gparts = g_loss(G, Da, Dt, cfg, b)
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        _avg_grads(G, world)
        opt_g.step()
        if not torch.isfinite(lg.detach()) or not torch.isfinite(ld.detach()):
            raise FloatingPointError(f"non-finite loss at step {step + 1}: G {float(lg)}, D {float(ld)}")
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            names = ["loss", "d_loss", *dparts, *gparts]
            vals = torch.tensor([float(lg.detach()), float(ld.detach()),
                                 *(float(v.detach()) for v in dparts.values()),
                                 *(float(v.detach()) for v in gparts.values())])
            rdist.all_reduce(vals, "mean")
            last = {**dict(zip(names, vals.tolist())), "lr": tc.lr * f}
            logger.log(step=step + 1, split="train", **last)
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < tc.steps:
            _save(out, step + 1, net, opt_g, opt_d, cfg)
    if start < tc.steps or ck is None:
        _save(out, tc.steps, net, opt_g, opt_d, cfg)
    logger.close()
    if not last and rdist.is_main():
        rec = [r for r in read_jsonl(run.path / "metrics.jsonl") if r.get("split") == "train"]
        last = {k: v for k, v in (rec[-1] if rec else {}).items() if k not in ("step", "split", "time")}
    return {"step": tc.steps, **last, "train_seconds": round(time.time() - t0, 2), "world_size": world,
            "n_pairs": int(len(pairs))}


def _save(out: Path, step: int, net, opt_g, opt_d, cfg: Cfg) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=net, optimizer={"g": opt_g.state_dict(), "d": opt_d.state_dict()},
                        config=to_dict(cfg), keep_last=cfg.train.keep_last)
    rdist.barrier()


@dataclass
class LoadedRun:
    """A trained run: config (with evaluation overrides), G in eval mode, step, folder."""

    cfg: Cfg
    G: Generator
    step: int
    path: Path

    def age(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.G(x, y)


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Rebuild ``run_dir`` from its own config.yaml and newest complete checkpoint (a changed model key
    is a CheckpointMismatch; a missing folder/config/checkpoint a UserError naming it)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist (give --run the --out-dir of a train)")
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run / 'config.yaml'} is missing: {run} is not a run folder written by train")
    cfg = load_config(Cfg, run / "config.yaml", list(overrides))
    ck = load_checkpoint(run / "ckpt")
    if ck is None:
        raise CheckpointError(f"no checkpoint under {run / 'ckpt'}")
    check_config_compatible(ck.config, to_dict(cfg), keys=CHECK_KEYS)
    net = build(cfg)
    net.load_state_dict(ck.model)
    net.eval()
    return LoadedRun(cfg=cfg, G=net["G"], step=ck.step, path=run)
