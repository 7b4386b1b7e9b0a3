"""Training: StarGAN / UGAN with WGAN-GP, one process or torchrun (gradients averaged by hand, since
DDP does not support the double backward of the gradient penalty); exact resume from checkpoints.

``train(cfg, out_dir)`` reads the data, builds G, D and the prototypes and loads the newest complete
checkpoint *before* anything is written. One *step* = ``train.n_critic`` D updates then one G update
(the G update reuses the batch of the last D update, as StarGAN does). Randomness per D iteration
``it = step * n_critic + j`` comes from keyed streams: ``batch`` (data.batch_indices), ``flip``,
``target`` (the permutation of the batch's labels that gives c_t) and ``alpha`` (GP interpolation).
The checkpoint holds G, D (with G's IN running statistics), the prototypes and both Adam states,
so N steps straight equal N/2 + resume + N/2. The logged ``loss`` is the generator's total loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from reprokit import dist as rdist
from reprokit.checkpoint import CheckpointError, check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.rng import step_generator
from reprokit.runs import MetricLogger, RunDir, progress, read_jsonl

from .config import Cfg, TrainCfg
from .data import batch_indices, load_train, pixel_prototypes
from .gan import Prototypes, d_loss, g_loss
from .kernels import select_impl
from .model import Discriminator, Generator

CHECK_KEYS = ("model", "ugan")
# inference-only settings: they change no weight or buffer, so a checkpoint is valid under any value
# (``ugan evaluate --run R model.eval_norm=running`` re-evaluates R; checkpoints from before the key existed load)
INFERENCE_ONLY = ("model.eval_norm",)


def build(cfg: Cfg) -> nn.ModuleDict:
    """{"G", "D", "protos"} (one module so one state dict holds the whole GAN)."""
    D = Discriminator(cfg)
    return nn.ModuleDict({"G": Generator(cfg, proto_dim=D.width), "D": D, "protos": Prototypes(cfg, D.width)})


def lr_factor(tc: TrainCfg, it: int) -> float:
    """LR multiplier at D iteration ``it`` (0-based) of ``steps * n_critic``.

    stargan: the public code subtracts lr/decay_iters from the *current* lr once every 1000 iterations
    within the last decay_iters iterations (a ~0.1 % total decay: copied for fidelity);
    linear: a true linear decay to 0 over the last decay_frac; constant: 1."""
    total = tc.steps * tc.n_critic
    decay = max(1, int(tc.decay_frac * total))
    if tc.schedule == "constant":
        return 1.0
    if tc.schedule == "linear":
        return min(1.0, (total - it) / decay)
    start = total - decay          # updates happen after iterations i with (i+1) % 1000 == 0 and i+1 > start
    n = sum(1 for i in range(1000 - 1, it, 1000) if i + 1 > start)
    return (1 - 1 / decay) ** n


def _avg_grads(module: nn.Module, world: int) -> None:
    if world > 1:
        for p in module.parameters():
            if p.grad is not None:
                rdist.all_reduce(p.grad, "mean")


def _batch(data, cfg: Cfg, rank: int, world: int, it: int, device):
    tc = cfg.train
    local = tc.batch_size // world
    idx = torch.from_numpy(batch_indices(len(data), local, tc.seed, rank, world, it))
    x = data.images[idx].to(device)                                                # (b, 3, S, S)
    c_s = data.labels[idx].to(device)                                              # (b, K)
    if cfg.data.flip:
        f = torch.rand(local, generator=step_generator(tc.seed, "flip", rank, it)) < 0.5
        x = torch.where(f[:, None, None, None].to(device), x.flip(3), x)
    perm = torch.randperm(local, generator=step_generator(tc.seed, "target", rank, it))
    c_t = c_s[perm.to(device)]                                                      # StarGAN: permuted labels
    alpha = torch.rand(local, 1, 1, 1, generator=step_generator(tc.seed, "alpha", rank, it)).to(device)
    dom = data.domain[idx].to(device)
    return x, c_s, c_t, alpha, dom


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
    select_impl(cfg.model.impl, dev)                                             # ConfigError if it cannot run
    data = load_train(cfg)
    batch_indices(len(data), tc.batch_size // world, tc.seed, rank, world, 0)      # ShapeError if too large
    rdist.seed_everything(tc.seed)
    net = build(cfg).to(dev)
    G, D, protos = net["G"], net["D"], net["protos"]
    if cfg.ugan.prototype == "pixel":
        protos.pixel.copy_(pixel_prototypes(data, cfg.model.num_domains))
    opt_g = torch.optim.Adam(G.parameters(), tc.lr, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), tc.d_lr, betas=(tc.beta1, tc.beta2))
    start = 0
    ck = load_checkpoint(out / "ckpt") if tc.resume else None
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=CHECK_KEYS, ignore=INFERENCE_ONLY)
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
    reduce = (lambda t: rdist.all_reduce(t, "sum")) if world > 1 else None
    net.train()
    for step in progress(range(start, tc.steps), total=tc.steps - start, desc=f"train {out.name}"):
        for j in range(tc.n_critic):
            it = step * tc.n_critic + j
            f = lr_factor(tc, it)
            for grp in opt_g.param_groups:
                grp["lr"] = tc.lr * f
            for grp in opt_d.param_groups:
                grp["lr"] = tc.d_lr * f
            x, c_s, c_t, alpha, dom = _batch(data, cfg, rank, world, it, dev)
            if cfg.ugan.prototype == "feature":
                with torch.no_grad():
                    protos.update(D.features(x), dom, reduce)
            ld, dparts = d_loss(G, D, protos, cfg, x, c_s, c_t, alpha)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            _avg_grads(D, world)
            opt_d.step()
        lg, gparts = g_loss(G, D, protos, cfg, x, c_s, c_t)
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
            last = {**dict(zip(names, vals.tolist())), "lr": tc.lr * lr_factor(tc, (step + 1) * tc.n_critic - 1)}
            logger.log(step=step + 1, split="train", **last)
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < tc.steps:
            _save(out, step + 1, net, opt_g, opt_d, cfg)
    if start < tc.steps or ck is None:
        _save(out, tc.steps, net, opt_g, opt_d, cfg)
    logger.close()
    if not last and rdist.is_main():
        rec = [r for r in read_jsonl(run.path / "metrics.jsonl") if r.get("split") == "train"]
        last = {k: v for k, v in (rec[-1] if rec else {}).items() if k not in ("step", "split", "time")}
    return {"step": tc.steps, **last, "train_seconds": round(time.time() - t0, 2), "world_size": world}


def _save(out: Path, step: int, net, opt_g, opt_d, cfg: Cfg) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=net, optimizer={"g": opt_g.state_dict(), "d": opt_d.state_dict()},
                        config=to_dict(cfg), keep_last=cfg.train.keep_last)
    rdist.barrier()


@dataclass
class LoadedRun:
    """A trained run: config (with evaluation overrides), G, D and prototypes in eval mode, step, folder."""

    cfg: Cfg
    G: Generator
    D: Discriminator
    protos: nn.Module
    step: int
    path: Path

    def translate(self, x: torch.Tensor, c_t: torch.Tensor, c_s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.G(x, c_t, self.protos.guide(c_t, c_s))


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Rebuild ``run_dir`` from its own config.yaml and newest complete checkpoint (a changed model or
    ugan key is a CheckpointMismatch; a missing folder/config/checkpoint a UserError naming it)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist (give --run the --out-dir of a train)")
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run / 'config.yaml'} is missing: {run} is not a run folder written by train")
    cfg = load_config(Cfg, run / "config.yaml", list(overrides))
    ck = load_checkpoint(run / "ckpt")
    if ck is None:
        raise CheckpointError(f"no checkpoint under {run / 'ckpt'}")
    check_config_compatible(ck.config, to_dict(cfg), keys=CHECK_KEYS, ignore=INFERENCE_ONLY)
    net = build(cfg)
    net.load_state_dict(ck.model)
    net.eval()
    return LoadedRun(cfg=cfg, G=net["G"], D=net["D"], protos=net["protos"], step=ck.step, path=run)
