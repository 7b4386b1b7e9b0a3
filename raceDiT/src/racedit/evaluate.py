"""Evaluation: held-out denoising loss at fixed (x, t, noise), non-standard FID/KID (Fashion-MNIST
classifier features), class accuracy of conditional samples (the CLIP-score analogue), and the
routing diagnostics (MaxVio, combination usage, experts per token against t and on foreground vs
background patches, realised experts per token while sampling)."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from reprokit.config import ConfigError
from reprokit.runs import progress

from . import routing as R
from .config import Cfg
from .data import ImageData, crop_images, load_split
from .diffusion import Diffusion
from .model import DiT

FID_LABEL = "non-standard FID (Fashion-MNIST classifier features)"


def _layer_masks(model: DiT) -> list[torch.Tensor]:
    return [m.last["mask"] for m in model.moe_layers()]


def val_slice(cfg: Cfg, n_heldout: int) -> slice | None:
    """The validation images (the last ``eval.val_n`` of the held-out split), or None when val_n = 0."""
    ec = cfg.eval
    if ec.val_n <= 0:
        return None
    if ec.heldout_n + ec.val_n > n_heldout:
        raise ConfigError(f"eval.heldout_n={ec.heldout_n} + eval.val_n={ec.val_n} > the {n_heldout} held-out "
                          "images: the test and validation images would overlap")
    return slice(n_heldout - ec.val_n, n_heldout)


@contextmanager
def routing_eval_mode(model: DiT, mode: str):
    """Temporarily evaluate every MoE layer with ``eval_mode`` = ``mode`` (threshold | topk)."""
    layers = model.moe_layers()
    saved = [m.cfg for m in layers]
    try:
        for m in layers:
            m.cfg = dataclasses.replace(m.cfg, eval_mode=mode)
        yield
    finally:
        for m, c in zip(layers, saved):
            m.cfg = c


@torch.no_grad()
def heldout_loss(model: DiT, diff: Diffusion, data: ImageData, cfg: Cfg, images: slice | None = None) -> dict:
    """Denoising loss on the held-out images ``images`` (default: the first ``eval.heldout_n``) at fixed t and
    noise (t stratified over ``heldout_t_bins`` equal bins), plus the routing diagnostics of that pass
    (eval-mode routing)."""
    ec = cfg.eval
    images = images if images is not None else slice(0, min(ec.heldout_n, len(data)))
    g = torch.Generator().manual_seed(ec.seed)
    x0, y = data.images[images], data.labels[images]
    n = len(x0)
    nb = ec.heldout_t_bins
    bins = torch.arange(n) % nb
    u = (bins.float() + torch.rand(n, generator=g)) / nb           # stratified noise level in [0, 1)
    t = u if diff.cfg.kind == "flow" else (u * diff.cfg.num_timesteps).floor().clamp(max=diff.cfg.num_timesteps - 1)
    noise = torch.randn(x0.shape, generator=g)
    model.eval()
    per_bin = torch.zeros(nb)
    cnt = torch.zeros(nb)
    ept_bin = torch.zeros(nb)
    fg_sum = bg_sum = fg_n = bg_n = 0.0
    pairs = None
    loads = []
    B = ec.batch_size
    for i in progress(range(0, n, B), desc="held-out loss"):
        sl = slice(i, i + B)
        xt, target = diff.noisy(x0[sl], t[sl], noise[sl])                      # (b, C, H, W)
        out = model(xt, diff.model_t(t[sl]), y[sl])[:, : x0.shape[1]]
        l = ((out - target) ** 2).flatten(1).mean(1)                           # (b,)
        per_bin.index_add_(0, bins[sl], l)
        cnt.index_add_(0, bins[sl], torch.ones_like(l))
        masks = _layer_masks(model)
        if masks:
            ept = torch.stack([m.float().sum(-1) for m in masks]).mean(0)      # (b, L) mean over layers
            ept_bin.index_add_(0, bins[sl], ept.mean(1))
            fg = (model.patchify(x0[sl]).max(-1).values > -0.9)                # patch has non-background pixels
            fg_sum += float(ept[fg].sum())
            fg_n += float(fg.sum())
            bg_sum += float(ept[~fg].sum())
            bg_n += float((~fg).sum())
            pc = torch.stack([R.pair_counts(m) for m in masks])
            pairs = pc if pairs is None else pairs + pc
            loads.append(torch.stack([m.reshape(-1, m.shape[-1]).float().sum(0) for m in masks]))
    res = {"heldout_loss": float(per_bin.sum() / cnt.sum()),
           "heldout_loss_by_t": (per_bin / cnt).tolist(),
           "t_bin_centres": [(b + 0.5) / nb for b in range(nb)]}
    if pairs is not None:
        load = torch.stack(loads).sum(0)                                       # (layers, E)
        mv = ((load.max(1).values - load.mean(1)) / load.mean(1).clamp_min(1e-9)).mean()
        res.update({
            "experts_per_token_by_t": (ept_bin / cnt).tolist(),
            "experts_per_token": float(ept_bin.sum() / cnt.sum()),
            "experts_per_token_fg": fg_sum / fg_n if fg_n else None,
            "experts_per_token_bg": bg_sum / bg_n if bg_n else None,
            "maxvio": float(mv),
            "combination_usage": float(np.mean([R.combination_usage(p) for p in pairs])),
        })
    return res


@torch.no_grad()
def generate(model: DiT, diff: Diffusion, cfg: Cfg, per_class: int, num_classes: int, seed: int,
             steps: int | None = None, cfg_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Samples (N, C, H, W) for ``per_class`` images of every class, labels, and the realised
    experts per token at each sampling step (mean over layers and tokens)."""
    model.eval()
    y_all = torch.arange(num_classes).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    outs = []
    step_ept: dict[int, list[float]] = {}
    for i in progress(range(0, len(y_all), cfg.eval.batch_size), desc=f"sampling {len(y_all)} images"):
        y = y_all[i: i + cfg.eval.batch_size]
        cur: dict = {}

        def hook(k, tf, cur=cur):
            cur["k"], cur["t"] = k, tf

        def post(mod, inp, out, cur=cur):
            if "k" in cur and mod.last.get("mask") is not None:
                step_ept.setdefault(cur["k"], []).append(float(mod.last["mask"].float().sum(-1).mean()))
                cur.setdefault("ts", {})[cur["k"]] = cur["t"]

        hs = [layer.register_forward_hook(post) for layer in model.moe_layers()]
        try:
            outs.append(diff.sample(model, y, (len(y), m.channels, m.image_size, m.image_size), g, steps=steps,
                                    cfg_scale=cfg_scale, null_class=model.null_class if m.class_dropout > 0 else None,
                                    on_step=hook))
        finally:
            for h in hs:
                h.remove()
        ts = cur.get("ts", {})
    per_step = [[ts.get(k, None), float(np.mean(v))] for k, v in sorted(step_ept.items())] if step_ept else []
    return torch.cat(outs), y_all, per_step


def fid_metrics(samples: torch.Tensor, labels: torch.Tensor, real: ImageData, cfg: Cfg) -> dict:
    """Non-standard FID/KID against the held-out real images and class accuracy of the samples; the
    feature network is identified by its tensor digest (``feature_net_digest``)."""
    from reprokit.metrics.fid import extract_features, fid_from_features, kid_from_features

    from .feature_net import load_feature_net, train_feature_net

    train_feature_net(cfg.eval.classifier_seed)  # cached after the first time (waits for a concurrent one)
    net, rep = load_feature_net(cfg.eval.classifier_seed)
    size = net.config["image_size"]
    fake = crop_images(samples, size) if samples.shape[-1] != size else samples
    realx = real.images[: cfg.eval.fid_real_n]
    realx = crop_images(realx, size) if realx.shape[-1] != size else realx
    with torch.no_grad():
        ff = extract_features(net.features, fake)                              # (n_fake, feat)
        fr = extract_features(net.features, realx)                             # (n_real, feat)
        pred = torch.cat([net(fake[i: i + 500]).argmax(1) for i in range(0, len(fake), 500)])
    kid_mean, kid_std = kid_from_features(ff, fr, num_subsets=50, subset_size=min(len(ff), len(fr), 500))
    return {"fid": fid_from_features(ff, fr), "kid": kid_mean, "kid_std": kid_std,
            "class_accuracy": float((pred == labels).float().mean()),
            "feature_net_digest": rep["weights_digest"], "feature_net_test_accuracy": rep["test_accuracy"],
            "fid_label": FID_LABEL, "n_fake": len(ff), "n_real": len(fr)}


def inception_fid(samples: torch.Tensor, real: ImageData, cfg: Cfg) -> float:
    """Standard Inception FID (pytorch-fid network from a local weights file; never downloads)."""
    from reprokit.metrics.fid import InceptionFeatures, extract_features, fid_from_features

    net = InceptionFeatures(cfg.eval.inception_weights)
    return fid_from_features(extract_features(net, samples, batch_size=50),
                             extract_features(net, real.images[: cfg.eval.fid_real_n], batch_size=50))


def evaluate(model: DiT, diff: Diffusion, cfg: Cfg, grid_path: str | Path | None = None) -> dict:
    """Every metric of a trained model on the held-out split; a sample grid (k per class, one row per
    class) to ``grid_path`` when given."""
    real = load_split(cfg, "heldout")
    res = heldout_loss(model, diff, real, cfg)
    val = val_slice(cfg, len(real))
    if val is not None:
        res["val_loss"] = heldout_loss(model, diff, real, cfg, val)["heldout_loss"]
    layers = model.moe_layers()
    if layers and layers[0].spans_batch:
        # issue #9 diagnostics: the batch-spanning routings evaluated with the training rule (top-K over the
        # evaluation batch) beside the EMA threshold, so a train/inference gap shows as a loss difference
        other = "topk" if layers[0].cfg.eval_mode == "threshold" else "threshold"
        with routing_eval_mode(model, other):
            alt = heldout_loss(model, diff, real, cfg)
        res.update({f"heldout_loss_{other}": alt["heldout_loss"], f"maxvio_{other}": alt.get("maxvio"),
                    f"experts_per_token_{other}": alt.get("experts_per_token"),
                    "eval_mode": layers[0].cfg.eval_mode})
    ncls = min(cfg.model.num_classes, int(real.labels.max()) + 1)
    if cfg.eval.fid_samples_per_class > 0:
        samples, labels, per_step = generate(model, diff, cfg, cfg.eval.fid_samples_per_class, ncls, cfg.eval.seed)
        res["sampling_experts_per_token"] = per_step
        if cfg.eval.fid:
            res.update(fid_metrics(samples, labels, real, cfg))
        if cfg.eval.inception_weights:
            res["fid_inception"] = inception_fid(samples, real, cfg)
        if grid_path is not None:
            from reprokit.plots import save_image_grid

            k = min(cfg.eval.fid_samples_per_class, 8)
            pick = torch.cat([torch.arange(c * cfg.eval.fid_samples_per_class, c * cfg.eval.fid_samples_per_class + k)
                              for c in range(ncls)])
            save_image_grid(samples[pick], grid_path, nrow=k)
    return res
