"""Training data: Fashion-MNIST (shared fetch), synthetic images (smoke), an ImageFolder path, or
precomputed latent shards. Everything is returned as float tensors (N, C, H, W) in [-1, 1] (latents as
stored) plus int64 labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataCfg

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return self.images.shape[0]


def pad_images(x: torch.Tensor, size: int, value: float = -1.0) -> torch.Tensor:
    """Pad (N, C, h, w) symmetrically with ``value`` (the background) to (N, C, size, size)."""
    h = x.shape[-1]
    if size < h:
        raise ValueError(f"data.pad_to={size} is smaller than the image size {h}")
    if size == h:
        return x
    a = (size - h) // 2
    return torch.nn.functional.pad(x, (a, size - h - a, a, size - h - a), value=value)


def crop_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Undo :func:`pad_images` (centre crop to size x size)."""
    H = x.shape[-1]
    a = (H - size) // 2
    return x[..., a: a + size, a: a + size]


def _fashion(split: str, cfg: DataCfg) -> ImageData:
    from reprokit.datasets import load_fashion_mnist

    x, y = load_fashion_mnist(split)
    if split == "train" and cfg.train_limit:
        x, y = x[: cfg.train_limit], y[: cfg.train_limit]
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div(127.5).sub(1.0).unsqueeze(1)
    return ImageData(pad_images(t, cfg.pad_to), torch.from_numpy(y).long(), 10)


def list_image_folder(root: Path, what: str = "data.path") -> tuple[list[str], list[tuple[Path, int]]]:
    """ImageFolder layout ``<root>/<class>/<image>``: (sorted class names, [(file, class index)]).
    ``what`` names the user's option in the errors."""
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {str(root)!r} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise FileNotFoundError(f"{what} {str(root)!r} holds no images (expected <root>/<class>/<image>"
                                f" with extensions {sorted(IMAGE_EXTS)})")
    return classes, files


def _folder(path: str, split: str, channels: int, size: int) -> ImageData:
    from PIL import Image

    root = Path(path)
    if (root / split).is_dir():
        root = root / split
    classes, files = list_image_folder(root)
    mode = "L" if channels == 1 else "RGB"
    arr = np.stack([np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BICUBIC)) for f, _ in files])
    t = torch.from_numpy(arr).float().div(127.5).sub(1.0)
    t = t.unsqueeze(1) if channels == 1 else t.permute(0, 3, 1, 2)
    return ImageData(t.contiguous(), torch.tensor([i for _, i in files]), len(classes))


def _latents(path: str) -> ImageData:
    root = Path(path)
    shards = sorted(root.glob("*.npz")) if root.is_dir() else []
    if not shards:
        raise FileNotFoundError(f"data.path {path!r} holds no latent shards (*.npz with 'latents' and 'labels')")
    xs, ys = [], []
    for s in shards:
        with np.load(s) as z:
            if "latents" not in z or "labels" not in z:
                raise ValueError(f"{s}: a latent shard needs arrays 'latents' (N, C, H, W) and 'labels' (N,)")
            xs.append(torch.from_numpy(z["latents"]).float())
            ys.append(torch.from_numpy(z["labels"]).long())
    y = torch.cat(ys)
    return ImageData(torch.cat(xs), y, int(y.max()) + 1)


def load_data(cfg: DataCfg, split: str, channels: int = 1, image_size: int = 32) -> ImageData:
    """split: 'train' or 'heldout' (Fashion-MNIST's test split; the synthetic set with another seed)."""
    if cfg.source == "fashion_mnist":
        return _fashion("train" if split == "train" else "test", cfg)
    if cfg.source == "synthetic":
        from reprokit.testing import synthetic_images

        n = cfg.synthetic_n if split == "train" else max(cfg.synthetic_n // 4, 16)
        x, y = synthetic_images(n, channels, cfg.synthetic_size, cfg.synthetic_classes,
                                seed=0 if split == "train" else 1)
        return ImageData(x, y, cfg.synthetic_classes)
    if cfg.source == "folder":
        return _folder(cfg.path, "train" if split == "train" else "val", channels, image_size)
    if cfg.source == "latents":
        sub = Path(cfg.path) / ("train" if split == "train" else "val")
        return _latents(str(sub) if sub.is_dir() else cfg.path)
    raise ValueError(f"unknown data.source {cfg.source!r}")


def batch_indices(n: int, batch: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of this rank's part of the global batch at ``step``: a deterministic function of
    (seed, step), so resuming needs no sampler state. Epoch-wise permutations without replacement."""
    if batch > n:
        raise ValueError(f"global batch {batch} is larger than the dataset ({n} images)")
    per_epoch = n // batch
    epoch, j = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    glob = perm[j * batch: (j + 1) * batch]
    local = batch // world
    return glob[rank * local: (rank + 1) * local]
