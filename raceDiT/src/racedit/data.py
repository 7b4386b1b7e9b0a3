"""Every data construction of the member: Fashion-MNIST (shared fetch), synthetic images (smoke), an
ImageFolder path, precomputed latent shards, and the per-step batch indices.

Everything is returned as float tensors (N, C, H, W) in [-1, 1] (latents as stored) plus int64 labels.
A user path that does not exist or holds nothing usable raises :class:`reprokit.errors.DataError`
naming the path and the config key; data whose shape the model cannot take raises
:class:`reprokit.errors.ShapeError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reprokit.errors import DataError, ShapeError
from reprokit.rng import step_generator

from .config import Cfg, DataCfg

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    images: torch.Tensor            # (N, C, H, W) float32
    labels: torch.Tensor            # (N,) int64
    num_classes: int

    def __len__(self) -> int:
        return self.images.shape[0]


def to_unit_range(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div(127.5).sub(1.0).unsqueeze(1)


def pad_images(x: torch.Tensor, size: int, value: float = -1.0) -> torch.Tensor:
    """Pad (N, C, h, w) symmetrically with ``value`` (the background) to (N, C, size, size)."""
    h = x.shape[-1]
    if size < h:
        raise ShapeError(f"data.pad_to={size} is smaller than the image size {h}")
    if size == h:
        return x
    a = (size - h) // 2
    return torch.nn.functional.pad(x, (a, size - h - a, a, size - h - a), value=value)


def crop_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Undo :func:`pad_images` (centre crop to size x size)."""
    H = x.shape[-1]
    a = (H - size) // 2
    return x[..., a: a + size, a: a + size]


def fashion_mnist(split: str, pad_to: int | None = None, limit: int = 0) -> ImageData:
    """Fashion-MNIST ``split`` ('train' | 'test') in [-1, 1], optionally padded to ``pad_to``."""
    from reprokit.datasets import load_fashion_mnist

    x, y = load_fashion_mnist(split)
    if limit:
        x, y = x[:limit], y[:limit]
    t = to_unit_range(x)                                                  # (N, 1, 28, 28)
    return ImageData(pad_images(t, pad_to) if pad_to else t, torch.from_numpy(y).long(), 10)


def list_image_folder(root: Path, what: str = "data.path") -> tuple[list[str], list[tuple[Path, int]]]:
    """ImageFolder layout ``<root>/<class>/<image>``: (sorted class names, [(file, class index)]).
    ``what`` names the user's option in the errors."""
    if not root.is_dir():
        raise DataError(f"{what}: {root} does not exist or is not a folder "
                        "(expected an ImageFolder root <root>/<class>/<image>)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
             if f.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise DataError(f"{what}: {root} holds no images (expected <root>/<class>/<image>"
                        f" with extensions {sorted(IMAGE_EXTS)})")
    return classes, files


def _folder(path: str, split: str, channels: int, size: int) -> ImageData:
    from PIL import Image

    what = "data.path (data.source=folder)"
    if not path:
        raise DataError(f"{what} is empty; it must name an ImageFolder root (<root>/<class>/<image>)")
    root = Path(path)
    if (root / split).is_dir():
        root = root / split
    classes, files = list_image_folder(root, what)
    mode = "L" if channels == 1 else "RGB"
    arr = np.stack([np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BICUBIC)) for f, _ in files])
    t = torch.from_numpy(arr).float().div(127.5).sub(1.0)                 # (N, S, S) or (N, S, S, 3)
    t = t.unsqueeze(1) if channels == 1 else t.permute(0, 3, 1, 2)        # (N, C, S, S)
    return ImageData(t.contiguous(), torch.tensor([i for _, i in files]), len(classes))


def _latents(path: str, split: str) -> ImageData:
    what = "data.path (data.source=latents)"
    if not path:
        raise DataError(f"{what} is empty; it must name a folder of *.npz latent shards")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{what}: {root} does not exist or is not a folder of *.npz latent shards")
    if (root / split).is_dir():
        root = root / split
    shards = sorted(root.glob("*.npz"))
    if not shards:
        raise DataError(f"{what}: {root} holds no latent shards (*.npz with 'latents' and 'labels')")
    xs, ys = [], []
    for s in shards:
        try:
            with np.load(s) as z:
                if "latents" not in z or "labels" not in z:
                    raise DataError(f"{s}: a latent shard needs arrays 'latents' (N, C, H, W) and 'labels' (N,)")
                xs.append(torch.from_numpy(z["latents"]).float())       # (n, C, H, W)
                ys.append(torch.from_numpy(z["labels"]).long())
        except (OSError, ValueError) as e:
            raise DataError(f"{s}: unreadable latent shard ({e})") from e
    y = torch.cat(ys)
    return ImageData(torch.cat(xs), y, int(y.max()) + 1)


def load_data(cfg: DataCfg, split: str, channels: int = 1, image_size: int = 32) -> ImageData:
    """split: 'train' or 'heldout' (Fashion-MNIST's test split; the synthetic set with another seed;
    ``val/`` of a folder or latent root that has one)."""
    train = split == "train"
    if cfg.source == "fashion_mnist":
        return fashion_mnist("train" if train else "test", cfg.pad_to, cfg.train_limit if train else 0)
    if cfg.source == "synthetic":
        from reprokit.testing import synthetic_images

        n = cfg.synthetic_n if train else max(cfg.synthetic_n // 4, 16)
        x, y = synthetic_images(n, channels, cfg.synthetic_size, cfg.synthetic_classes, seed=0 if train else 1)
        return ImageData(x, y, cfg.synthetic_classes)
    if cfg.source == "folder":
        return _folder(cfg.path, "train" if train else "val", channels, image_size)
    if cfg.source == "latents":
        return _latents(cfg.path, "train" if train else "val")
    raise DataError(f"unknown data.source {cfg.source!r}")


def check_data(cfg: Cfg, data: ImageData) -> None:
    """The data must fit the model: (C, H, W) = (model.channels, model.image_size, model.image_size) and
    at most model.num_classes classes; a ShapeError naming the keys otherwise."""
    m = cfg.model
    if tuple(data.images.shape[1:]) != (m.channels, m.image_size, m.image_size):
        raise ShapeError(f"data ({cfg.data.source}) images are {tuple(data.images.shape[1:])} but the model expects "
                         f"(model.channels, model.image_size, model.image_size) = "
                         f"({m.channels}, {m.image_size}, {m.image_size}); set those keys or data.pad_to")
    if data.num_classes > m.num_classes:
        raise ShapeError(f"data ({cfg.data.source}) has {data.num_classes} classes but "
                         f"model.num_classes={m.num_classes}")


def load_split(cfg: Cfg, split: str) -> ImageData:
    """``load_data`` for the model of ``cfg``, checked with :func:`check_data`."""
    data = load_data(cfg.data, split, cfg.model.channels, cfg.model.image_size)
    check_data(cfg, data)
    return data


def batch_indices(n: int, batch: int, step: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of this rank's part of the global batch at ``step``: a pure function of (seed, step), so
    resuming needs no sampler state. Epoch-wise permutations without replacement, each drawn from the
    keyed stream ``(seed, "epoch", epoch)``."""
    if batch > n:
        raise ShapeError(f"train.batch_size={batch} is larger than the dataset ({n} images)")
    per_epoch = n // batch
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed, "epoch", epoch))
    glob = perm[j * batch: (j + 1) * batch]                               # (batch,) global batch
    local = batch // world
    return glob[rank * local: (rank + 1) * local]                         # (batch / world,) this rank
