"""Training (one process or torchrun) with exact resume; ``load_run`` reloads a trained run.

Order of a start: data, model, optimisers and the checkpoint are all loaded *before* anything is written,
so a failing start (missing data, a bad value, a corrupt checkpoint) leaves the run folder as it was.

Optimisers: AdamW for the dense parameters (weight decay on matrices only) and, with
``train.sparse_tables`` (default), ``torch.optim.SparseAdam`` for the n-gram tables, whose gradients are
sparse (only the rows a batch touched). SparseAdam is "lazy": an untouched row keeps its value and its
moments, unlike the paper's (dense) AdamW; ``train.sparse_tables=false`` gives the dense AdamW path.

Under torchrun the tables are left out of DDP (``DistributedDataParallel`` cannot all-reduce sparse
gradients on NCCL); their sparse gradients are gathered from every rank (indices and rows) and averaged
by hand, which works on gloo and NCCL alike. The per-step batch is a pure function of
(seed, rank, step) (``reprokit.rng``), so N straight steps equal N/2 + resume + N/2.
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
from .data import LMData, load_data, train_batch
from .evaluate import evaluate_lm
from .model import build_model, lm_losses

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


def make_optimizers(model: torch.nn.Module, cfg: Cfg) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """AdamW (decay on matrices except embeddings) + SparseAdam for the sparse n-gram tables."""
    t = cfg.train
    tables = {id(p) for p in model.table_parameters()}
    sparse = [p for p in model.table_parameters() if model.embed.ngram.sparse]
    embeddings = tables | {id(model.embed.wte.weight)}                 # (tied output head included)
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in tables and sparse:
            continue
        (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    dense = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, foreach=False)
    sp = (torch.optim.SparseAdam(sparse, lr=t.lr * t.table_lr_mult, betas=(t.beta1, t.beta2), eps=t.eps)
          if sparse else None)
    return dense, sp


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
    """Global-norm clipping over dense and sparse gradients (sparse ones are coalesced first)."""
    norms = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            norms.append(p.grad._values().float().norm())
        else:
            norms.append(p.grad.float().norm())
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


@torch.no_grad()
def allreduce_sparse_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average sparse gradients over ranks by gathering (indices, rows) from all of them."""
    if world <= 1:
        return
    for p in params:
        g = p.grad.coalesce() if p.grad is not None else torch.sparse_coo_tensor(
            torch.zeros(1, 0, dtype=torch.int64), torch.zeros(0, p.shape[1], dtype=p.dtype), p.shape)
        idx = rdist.all_gather_cat(g._indices()[0].contiguous(), dim=0)
        val = rdist.all_gather_cat(g._values().contiguous(), dim=0)
        p.grad = torch.sparse_coo_tensor(idx[None], val / world, p.shape).coalesce()


def _save(out: Path, step: int, model, opts, cfg: Cfg, state: dict) -> None:
    if rdist.is_main():
        save_checkpoint(out / "ckpt", step, model=model,
                        optimizer={"dense": opts[0].state_dict(),
                                   "sparse": opts[1].state_dict() if opts[1] is not None else None},
                        state=state, config=to_dict(cfg), keep_last=cfg.train.keep_last)
    rdist.barrier()


def _dir_mb(path: Path | None) -> float | None:
    if path is None or not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


def table_memory(model: torch.nn.Module, sparse_opt: torch.optim.Optimizer | None) -> dict:
    """n-gram table parameters and bytes, and the optimiser state held for them."""
    tabs = model.table_parameters()
    n = sum(p.numel() for p in tabs)
    nbytes = sum(p.numel() * p.element_size() for p in tabs)
    state = 0
    if sparse_opt is not None:
        for st in sparse_opt.state.values():
            state += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return {"table_params": n, "table_mb": nbytes / 2**20, "table_optim_mb": state / 2**20}


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
    model = build_model(cfg.model, seed=tc.seed, sparse_tables=tc.sparse_tables).to(info.device)
    opts = make_optimizers(model, cfg)
    start, ck = 0, None
    if tc.resume:
        ck = load_checkpoint(out / "ckpt")
    elif latest_checkpoint(out / "ckpt") is not None:
        raise CheckpointError(f"{out / 'ckpt'} holds checkpoints but train.resume=false; use another --out-dir")
    if ck is not None:
        check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
        model.load_state_dict(ck.model)
        opts[0].load_state_dict(ck.optimizer["dense"])
        if opts[1] is not None:
            if ck.optimizer.get("sparse") is None:
                raise CheckpointError(f"{ck.path}/optim.pt holds no SparseAdam state")
            opts[1].load_state_dict(ck.optimizer["sparse"])
        ck.restore_rng()
        start = ck.step
    # ---- nothing was written above this line ----
    run = RunDir(out, config=to_dict(cfg))
    logger = MetricLogger(run.path)
    tables = model.table_parameters() if tc.sparse_tables else []
    if info.world_size > 1 and tables:
        names = [n for n, p in model.named_parameters() if any(p is q for q in tables)]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    net = rdist.wrap_ddp(model, info)
    params = [p for p in model.parameters()]
    use_mtp = cfg.model.mtp.heads > 0
    tokens_per_step = tc.batch_size * tc.seq_len * info.world_size
    end = min(tc.stop_after, tc.steps) if tc.stop_after else tc.steps
    model.train()
    t0 = time.perf_counter()
    for step in progress(range(start, end), desc=f"train {out.name}", disable=quiet or not rdist.is_main()):
        x, y, ds = (t.to(info.device) for t in train_batch(data, tc.seq_len, tc.batch_size, tc.seed, info.rank, step))
        lr = lr_at(step, cfg)
        for g in opts[0].param_groups:
            g["lr"] = lr
        if opts[1] is not None:
            for g in opts[1].param_groups:
                g["lr"] = lr * tc.table_lr_mult
        if use_mtp:
            logits, mtp_logits = net(x, ds, return_mtp=True)
        else:
            logits, mtp_logits = net(x, ds), None
        total, ce, ce2 = lm_losses(logits, y, mtp_logits, cfg.model.mtp.weight)
        for o in opts:
            if o is not None:
                o.zero_grad(set_to_none=True)
        total.backward()
        allreduce_sparse_grads(tables, info.world_size)
        gnorm = clip_gradients(params, tc.grad_clip)
        for o in opts:
            if o is not None:
                o.step()
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"non-finite loss {float(total.detach())} at step {step + 1}")
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
            vals = torch.tensor([float(ce.detach()), float(total.detach()),
                                 float(ce2.detach()) if ce2 is not None else 0.0])
            rdist.all_reduce(vals, "mean")
            rec = {"loss": float(vals[0]), "lr": lr, "grad_norm": gnorm, "tokens": (step + 1) * tokens_per_step}
            if ce2 is not None:
                rec.update(total_loss=float(vals[1]), mtp_loss=float(vals[2]))
            logger.log(step=step + 1, split="train", **rec)
        if tc.eval_every and (step + 1) % tc.eval_every == 0:
            m = evaluate_lm(model, data, "val", tc.seq_len, cfg.eval.batch_size, max_tokens=tc.eval_tokens)
            logger.log(step=step + 1, split="val", **m)
            model.train()
        if tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < end:
            _save(out, step + 1, model, opts, cfg, {"tokens": (step + 1) * tokens_per_step})
    wall = time.perf_counter() - t0
    if start < end or ck is None:
        _save(out, end, model, opts, cfg, {"tokens": end * tokens_per_step})
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
                    **table_memory(model, opts[1]), "ckpt_mb": _dir_mb(latest_checkpoint(out / "ckpt"))})
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
        raise DataError(f"{cfg_path}: missing; --run must be a folder written by `overtok train`")
    saved = load_config(Cfg, cfg_path)
    cfg = load_config(Cfg, cfg_path, list(overrides))
    check_config_compatible(to_dict(saved), to_dict(cfg), keys=COMPAT_KEYS)
    data = prepare_data(cfg)
    ck = load_checkpoint(run / "ckpt")
    if ck is None:
        raise CheckpointError(f"{run / 'ckpt'}: no checkpoint in this run folder")
    check_config_compatible(ck.config, to_dict(cfg), keys=COMPAT_KEYS)
    model = build_model(cfg.model, seed=cfg.train.seed, sparse_tables=cfg.train.sparse_tables)
    model.load_state_dict(ck.model)
    return LoadedRun(cfg=cfg, model=model.eval(), step=ck.step, data=data, path=run)
