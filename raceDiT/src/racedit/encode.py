"""``racedit encode-latents``: an ImageFolder -> SD-VAE latent shards that ``data.source: latents`` reads.

Optional extra (``uv sync --extra vae`` / ``pip install racedit[vae]``): needs ``diffusers``. The VAE
is loaded **only from a local folder** (a diffusers ``AutoencoderKL`` checkpoint: ``config.json`` +
weights, e.g. a copy of ``stabilityai/sd-vae-ft-ema``); nothing is downloaded.

Preprocessing follows DiT's ImageNet pipeline: centre crop to a square (ADM's
``center_crop_arr``: box-downsample while the short side is >= 2x the target, bicubic resize, centre
crop), pixels to [-1, 1], ``z = vae.encode(x).latent_dist.sample() * scaling_factor`` (0.18215 for
SD-VAE; read from the checkpoint's config). ``--mode mean`` stores the posterior mean instead
(deterministic). Shards are ``<out>/<split>/shard_00000.npz`` with ``latents`` (N, 4, H/8, W/8)
float16 and ``labels`` (N,) int64, written atomically; a ``meta.json`` records the classes, the
VAE path, the scaling factor and the image size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from reprokit.errors import DataError, ShapeError, UserError

from .data import list_image_folder


def center_crop(img, size: int):
    """ADM / DiT centre crop of a PIL image to ``size`` x ``size``."""
    from PIL import Image

    while min(*img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    arr = np.asarray(img)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top: top + size, left: left + size]


def load_vae(path: str, device: str = "cpu"):
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:  # the extra is not installed
        raise UserError("encode-latents needs the optional extra 'vae' (diffusers): "
                          "uv sync --extra vae, or pip install 'racedit[vae]'") from e
    p = Path(path)
    if not (p / "config.json").is_file():
        raise DataError(f"--vae {path!r} is not a local diffusers AutoencoderKL folder "
                                "(expected config.json and weights; nothing is downloaded)")
    return AutoencoderKL.from_pretrained(str(p), local_files_only=True).to(device).eval()


def _save_shard(path: Path, latents: np.ndarray, labels: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")  # not *.npz: a crash never leaves a shard the reader would take
    with open(tmp, "wb") as f:
        np.savez(f, latents=latents.astype(np.float16), labels=labels.astype(np.int64))
    os.replace(tmp, path)


@torch.no_grad()
def encode_folder(vae_path: str, images: str, out: str, image_size: int = 256, shard_size: int = 4096,
                  batch_size: int = 32, mode: str = "sample", seed: int = 0, device: str = "cpu",
                  progress: bool = True) -> dict:
    """Encode every ``<images>/<class>/<file>`` (one split) into shards under ``out``; returns meta."""
    if mode not in ("sample", "mean"):
        raise UserError(f"unknown --mode {mode!r}; valid: sample, mean")
    if image_size % 8:
        raise ShapeError(f"--image-size {image_size} is not a multiple of 8 (the VAE downsamples by 8)")
    from PIL import Image

    from reprokit.runs import progress as pbar

    classes, files = list_image_folder(Path(images), "--images")
    vae = load_vae(vae_path, device)
    sf = float(getattr(vae.config, "scaling_factor", 0.18215))
    gen = torch.Generator(device=device).manual_seed(seed)
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    buf_z: list[np.ndarray] = []
    buf_y: list[int] = []
    n_shards = 0
    latent_c = 0
    it = range(0, len(files), batch_size)
    for s in pbar(it, total=len(it), desc="encode", disable=None if progress else True):
        chunk = files[s: s + batch_size]
        x = np.stack([center_crop(Image.open(f).convert("RGB"), image_size) for f, _ in chunk])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)  # (B, 3, S, S)
        post = vae.encode(x).latent_dist
        z = post.mean if mode == "mean" else post.mean + post.std * torch.randn(
            post.mean.shape, generator=gen, device=device)
        latent_c = z.shape[1]
        buf_z.append((z * sf).float().cpu().numpy())  # (B, 4, S/8, S/8)
        buf_y.extend(i for _, i in chunk)
        while len(buf_y) >= shard_size:
            allz = np.concatenate(buf_z)
            _save_shard(dst / f"shard_{n_shards:05d}.npz", allz[:shard_size], np.array(buf_y[:shard_size]))
            n_shards += 1
            buf_z, buf_y = [allz[shard_size:]], buf_y[shard_size:]
    if buf_y:
        _save_shard(dst / f"shard_{n_shards:05d}.npz", np.concatenate(buf_z), np.array(buf_y))
        n_shards += 1
    meta = {"classes": classes, "n_images": len(files), "n_shards": n_shards, "vae": str(vae_path),
            "scaling_factor": sf, "image_size": image_size, "latent_shape": [int(latent_c), image_size // 8, image_size // 8],
            "mode": mode, "seed": seed}
    (dst / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
