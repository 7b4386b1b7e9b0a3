"""Training entry (one process or torchrun): LM on text, ViT on images. Exact resume from checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from reprokit.checkpoint import check_config_compatible, load_checkpoint, save_checkpoint
from reprokit.config import load_config, to_dict
from reprokit.dist import init_distributed, is_main, seed_everything, wrap_ddp
from reprokit.runs import MetricLogger, RunDir

from .config import Cfg
from .connections import param_groups
from .data import image_batch, lm_batch, load_image_data, load_lm_data
from .evaluate import evaluate_lm, evaluate_vit
from .model import build_model


def lr_at(step: int, cfg: Cfg) -> float:
    """Linear warm-up then cosine decay to ``min_lr_frac`` of the peak."""
    t = cfg.train
    warm = max(1, int(t.warmup_frac * t.steps))
    if step < warm:
        return t.lr * (step + 1) / warm
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


def make_data(cfg: Cfg):
    if cfg.model.kind == "lm":
        data = load_lm_data(cfg)
        cfg.model.vocab_size = data.vocab_size
        return data
    return load_image_data(cfg)


def train(cfg: Cfg, out_dir: str | Path, data=None, quiet: bool = True) -> dict:
    """Train ``cfg`` into ``out_dir`` (resuming from its latest checkpoint); return the final eval metrics."""
    info = init_distributed("cpu" if not torch.cuda.is_available() else "auto")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if data is None:
        data = make_data(cfg)
    elif cfg.model.kind == "lm":
        cfg.model.vocab_size = data.vocab_size
    out = Path(out_dir)
    run = RunDir(out, config=to_dict(cfg))
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
    ddp = wrap_ddp(model, info)
    logger = MetricLogger(run.path)
    t0 = time.perf_counter()
    tokens_per_step = cfg.train.batch_size * (cfg.train.seq_len if cfg.model.kind == "lm" else 1)
    end = min(cfg.train.stop_after, cfg.train.steps) if cfg.train.stop_after else cfg.train.steps
    for step in range(start, end):
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
            m = _evaluate(model, cfg, data, "val")
            logger.log(step=step + 1, split="val", **m)
            model.train()
        if cfg.train.ckpt_every and (step + 1) % cfg.train.ckpt_every == 0 and step + 1 < cfg.train.steps:
            _save(out, step + 1, model, opt, cfg)
    wall = time.perf_counter() - t0
    if start < end or ck is None:
        _save(out, end, model, opt, cfg)
    if end < cfg.train.steps:
        logger.close()
        return {"stopped_at": end}
    metrics = {f"val_{k}": v for k, v in _evaluate(model, cfg, data, "val").items()}
    metrics.update({f"test_{k}": v for k, v in _evaluate(model, cfg, data, "test").items()})
    metrics["train_wall_s"] = wall
    metrics["params"] = sum(p.numel() for p in model.parameters())
    logger.log(step=cfg.train.steps, split="final", **metrics)
    logger.close()
    return metrics


def _save(out: Path, step: int, model, opt, cfg: Cfg) -> None:
    if is_main():
        save_checkpoint(out / "ckpt", step, model=model, optimizer=opt, config=to_dict(cfg), keep_last=2)


def _evaluate(model, cfg: Cfg, data, split: str) -> dict:
    if cfg.model.kind == "lm":
        return evaluate_lm(model, cfg, data, split)
    return evaluate_vit(model, cfg, data, split)


def cmd_train(args) -> int:
    cfg = load_config(Cfg, args.config, overrides=args.overrides or [])
    out = args.out_dir or cfg.out_dir
    m = train(cfg, out)
    if is_main():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()})
    return 0
