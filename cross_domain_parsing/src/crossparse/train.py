"""Training: the five-step iteration (``adapt.iteration``) in one process or under torchrun
(gradients averaged by hand after each backward: the steps update different modules); exact resume.

``train(cfg, out_dir)`` reads the data, builds the networks and optimisers and loads the newest
complete checkpoint (or, for fine-tuning, the parser of ``train.init_from``) *before* anything is
written. Randomness per iteration comes from keyed streams: ``src`` / ``tgt`` (batch indices),
``flip`` (source flips with left/right label swap), ``dropout`` (the global torch seed at the start of
the iteration, so dropout masks are the same after a resume). Every ``train.eval_every`` steps the
rank-0 process logs mIoU on source-val and on every target's val and test split (``split: "eval"``),
which gives the label-free (source-val) and the optimistic (target-val) checkpoint selections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from reprokit import dist as rdist
from reprokit.checkpoint import CheckpointError, check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import ConfigError, load_config, to_dict
from reprokit.rng import derive_seed, step_generator
from reprokit.runs import MetricLogger, RunDir, progress, read_jsonl

from .adapt import iteration
from .config import Cfg
from .data import batch_indices, flip, load_data
from .evaluate import evaluate_all
from .kernels import select_impl
from .model import CrossParse

CHECK_KEYS = ("model", "adapt")


def build(cfg: Cfg, device=None) -> CrossParse:
    return CrossParse(cfg, device)


def make_optimizers(net: CrossParse, cfg: Cfg) -> dict:
    """The code's optimisers: parser SGD (final 1x1 weights x10, biases x20) or Adam; C, D_f, the
    parser-adversarial step and D_l Adam with betas (adapt.beta1, adapt.beta2)."""
    t, a = cfg.train, cfg.adapt
    P = net.parser
    lw, lb = P.last_layer_params()
    last = {id(p) for p in lw + lb}
    base = [p for p in P.parameters() if id(p) not in last]
    groups = [{"params": base, "lr": t.lr}, {"params": lw, "lr": t.lr * t.last_lr_mult},
              {"params": lb, "lr": t.lr * t.last_lr_mult * 2}]
    if t.optimizer == "sgd":
        parser = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    else:
        parser = torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    betas = (a.beta1, a.beta2)
    return {"parser": parser, "C": torch.optim.Adam(net.C.parameters(), a.c_lr, betas=betas),
            "D_f": torch.optim.Adam(net.D_f.parameters(), a.df_lr, betas=betas),
            "adv": torch.optim.Adam(P.parameters(), a.adv_lr, betas=betas),
            "D_l": torch.optim.Adam(net.D_l.parameters(), a.dl_lr, betas=betas)}


def _labelled_pool(cfg: Cfg, data):
    """(x, y) the parsing step draws from: source, or target labels for oracle / fine-tuning."""
    a = cfg.adapt
    if a.oracle:
        return data.tgt_x, data.tgt_train_y
    if a.finetune_n:
        if a.finetune_n > len(data.tgt_x):
            raise ConfigError(f"adapt.finetune_n={a.finetune_n} > the {len(data.tgt_x)} target training images")
        return data.tgt_x[:a.finetune_n], data.tgt_train_y[:a.finetune_n]
    return data.src_x, data.src_y


def _init_from(net: CrossParse, path: str) -> None:
    run = Path(path)
    ck = load_checkpoint(run / "ckpt") if (run / "ckpt").is_dir() else None
    if ck is None:
        raise ConfigError(f"train.init_from={path}: no finished run with a checkpoint there")
    sd = {k[len("parser."):]: v for k, v in ck.model.items() if k.startswith("parser.")}
    try:
        net.parser.load_state_dict(sd)
    except RuntimeError as e:
        raise ConfigError(f"train.init_from={path}: its parser does not match this model config ({e})") from e


def train(cfg: Cfg, out_dir: str | Path) -> dict:
    """Train into ``out_dir`` (config.yaml, metrics.jsonl, ckpt/step_*/); returns the final metrics."""
    info = rdist.init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    world, rank, dev = info.world_size, info.rank, info.device
    tc, a = cfg.train, cfg.adapt
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {world} ranks")
    out = Path(out_dir)
    # 1. everything that can fail, before anything is written
    select_impl(cfg.model.impl, dev)
    data = load_data(cfg, need_target_labels=a.oracle or a.finetune_n > 0)
    if a.finetune_n and not tc.init_from:
        raise ConfigError("adapt.finetune_n needs train.init_from (the source-only run to fine-tune)")
    pool_x, pool_y = _labelled_pool(cfg, data)
    torch.manual_seed(derive_seed(tc.seed, "init"))
    net = build(cfg).to(dev)
    opts = make_optimizers(net, cfg)
    start = 0
    ck = load_checkpoint(out / "ckpt") if tc.resume else None
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=CHECK_KEYS)
        if not isinstance(ck.optimizer, dict) or set(ck.optimizer) != set(opts):
            raise CheckpointError(f"{ck.path}: optim.pt does not hold the optimiser states {sorted(opts)}; "
                                  "cannot resume")
        net.load_state_dict(ck.model)
        for k, o in opts.items():
            o.load_state_dict(ck.optimizer[k])
        start = ck.step
    elif tc.init_from:
        _init_from(net, tc.init_from)
    # 2. the run folder
    run = RunDir(out, config=cfg)
    logger = MetricLogger(run.path)
    t0, c0, last = time.time(), time.process_time(), {}
    b = tc.batch_size // world
    needs_target = a.feature or a.label

    def sync(module):
        if world > 1:
            for p in module.parameters():
                if p.grad is not None:
                    rdist.all_reduce(p.grad, "mean")

    for step in progress(range(start, tc.steps), total=tc.steps - start, desc=f"train {out.name}"):
        net.train()
        torch.manual_seed(derive_seed(tc.seed, "dropout", rank, step))
        idx = batch_indices(len(pool_x), b, step_generator(tc.seed, "src", rank, step))
        xs, ys = pool_x[idx], pool_y[idx].long()
        if cfg.data.flip:
            f = torch.rand(b, generator=step_generator(tc.seed, "flip", rank, step)) < 0.5
            fx, fy = flip(xs, ys)
            xs = torch.where(f[:, None, None, None], fx, xs)
            ys = torch.where(f[:, None, None], fy, ys)
        xt = None
        if needs_target:      # the source-only / oracle / fine-tuning arms never touch target images
            xt = data.tgt_x[batch_indices(len(data.tgt_x), b, step_generator(tc.seed, "tgt", rank, step))].to(dev)
        parts = iteration(net, opts, cfg, xs.to(dev), ys.to(dev), xt, step, sync)
        if not all(torch.isfinite(v) for v in parts.values()):
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {({k: float(v) for k, v in parts.items()})}")
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            names = list(parts)
            vals = torch.tensor([float(parts[k]) for k in names])
            rdist.all_reduce(vals, "mean")
            last = dict(zip(names, vals.tolist()))
            logger.log(step=step + 1, split="train", **last)
        if tc.eval_every and (step + 1) % tc.eval_every == 0 and rdist.is_main():
            logger.log(step=step + 1, split="eval", **evaluate_all(net.parser, data, cfg, ("val", "test"), full=False))
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < tc.steps:
            _save(out, step + 1, net, opts, cfg)
    if start < tc.steps or ck is None:
        _save(out, tc.steps, net, opts, cfg)
    logger.close()
    if not last and rdist.is_main():
        rec = [r for r in read_jsonl(run.path / "metrics.jsonl") if r.get("split") == "train"]
        last = {k: v for k, v in (rec[-1] if rec else {}).items() if k not in ("step", "split", "time")}
    return {"step": tc.steps, **last, "train_seconds": round(time.time() - t0, 2),
            "train_cpu_seconds": round(time.process_time() - c0, 2), "world_size": world}


def _save(out: Path, step: int, net, opts: dict, cfg: Cfg) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=net, optimizer={k: o.state_dict() for k, o in opts.items()},
                        config=to_dict(cfg), keep_last=cfg.train.keep_last)
    rdist.barrier()


@dataclass
class LoadedRun:
    """A trained run: config (with evaluation overrides), the networks in eval mode, step, folder."""

    cfg: Cfg
    net: CrossParse
    step: int
    path: Path

    @property
    def parser(self):
        return self.net.parser


def load_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """Rebuild ``run_dir`` from its own config.yaml and newest complete checkpoint (a changed model or
    adapt key is a CheckpointMismatch; a missing folder/config/checkpoint a UserError naming it)."""
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
    cfg.model.trunk_checkpoint = ""          # the checkpoint holds the trained trunk
    net = build(cfg)
    net.load_state_dict(ck.model)
    net.eval()
    return LoadedRun(cfg=cfg, net=net, step=ck.step, path=run)
