"""Every data construction: ProcFace (synthetic, default), a folder-per-domain tree, CelebA.

``load_train(cfg)`` returns a ``Data`` (images float32 (N, 3, S, S) in [-1, 1], labels float32 (N, K)
one-hot or multi-hot, ``domain`` int64 (N,) for single-label data or -1). Errors a user can fix are
``reprokit.errors.DataError`` (missing path, unreadable or truncated image, missing attribute,
domain folder count not matching ``model.num_domains``) or ``ShapeError`` naming the culprit.

Formats (the tests write tiny files in exactly these formats):

* folder: ``<path>/<domain>/<image>.{png,jpg,jpeg,bmp}``; domains are the sub-folders in sorted order
  (or ``data.domains``), their count must equal ``model.num_domains``; images are resized to
  ``model.image_size`` (square).
* celeba: ``<path>/list_attr_celeba.txt`` (line 1: count, line 2: the 40 attribute names, then
  ``<file> <+1/-1 x 40>``) and ``<path>/images/<file>`` (aligned 178x218 JPEGs); StarGAN's selection is
  ``data.domains`` = [Black_Hair, Blond_Hair, Brown_Hair, Male, Young]; centre crop ``data.celeba_crop``
  then resize; multi-label (``data.label_mode=multi``). StarGAN holds out the first 2000 lines as test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reprokit.errors import DataError, ShapeError

from . import procface as pf
from .config import Cfg

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
CELEBA_TEST = 2000


@dataclass
class Data:
    images: torch.Tensor        # (N, 3, S, S) in [-1, 1]
    labels: torch.Tensor        # (N, K) float 0/1
    domain: torch.Tensor        # (N,) int64, -1 for multi-label data
    names: list[str]            # domain / attribute names

    def __len__(self) -> int:
        return self.images.shape[0]


def _check_size(cfg: Cfg) -> None:
    s, n = cfg.model.image_size, cfg.model.d_depth
    if s % (2 ** n):
        raise ShapeError(f"model.image_size={s} is not divisible by 2**model.d_depth={2 ** n}")


def _one_hot(dom: np.ndarray, K: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(dom, dtype=torch.int64), K).float()


PROCFACE_SPLITS = ("train", "val", "test")


def procface_split(cfg: Cfg, split: str) -> dict:
    """``train`` (the translator's data), ``val`` (``data.num_val`` identities: the LR is chosen on them) or
    ``test`` (``data.num_test`` identities: every reported metric and claim); three keyed streams of
    ``data.seed``, so the identities are disjoint."""
    if split not in PROCFACE_SPLITS:
        raise ValueError(f"unknown ProcFace split {split!r}; valid: {', '.join(PROCFACE_SPLITS)}")
    n = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}[split]
    return pf.make_split(n, cfg.model.num_domains, cfg.model.image_size, cfg.data.seed, split,
                         cfg.data.mark_strength)


def _read_image(path: Path, size: int, crop: int | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.load()
            if crop:
                w, h = im.size
                if w < crop or h < crop:
                    raise DataError(f"{path}: image {w}x{h} is smaller than data.celeba_crop={crop}")
                left, top = (w - crop) // 2, (h - crop) // 2
                im = im.crop((left, top, left + crop, top + crop))
            im = im.resize((size, size), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from e
    return arr.transpose(2, 0, 1) / 127.5 - 1.0


def load_folder(cfg: Cfg) -> Data:
    root = Path(cfg.data.path)
    if not cfg.data.path or not root.is_dir():
        raise DataError(f"data.path={root}: folder-per-domain data not found (expected <path>/<domain>/<images>)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    names = list(cfg.data.domains) or found
    missing = [d for d in names if d not in found]
    if missing:
        raise DataError(f"{root}: domain folders {missing} not found; present: {found}")
    K = cfg.model.num_domains
    if len(names) != K:
        raise DataError(f"{root}: {len(names)} domain folders {names} but model.num_domains={K}")
    imgs, dom = [], []
    for k, d in enumerate(names):
        files = sorted(p for p in (root / d).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(f"{root / d}: no images ({', '.join(IMAGE_EXTS)})")
        for f in files:
            imgs.append(_read_image(f, cfg.model.image_size))
            dom.append(k)
    dom = np.array(dom)
    return Data(torch.from_numpy(np.stack(imgs)), _one_hot(dom, K), torch.from_numpy(dom), names)


def load_celeba(cfg: Cfg, split: str = "train") -> Data:
    root = Path(cfg.data.path)
    attr = root / "list_attr_celeba.txt"
    if not cfg.data.path or not attr.is_file():
        raise DataError(f"{attr}: CelebA attribute file not found (data.path={cfg.data.path!r})")
    lines = attr.read_text().splitlines()
    if len(lines) < 3:
        raise DataError(f"{attr}: expected a count line, an attribute-name line and one line per image")
    all_names = lines[1].split()
    names = list(cfg.data.domains)
    missing = [a for a in names if a not in all_names]
    if missing or not names:
        raise DataError(f"{attr}: attributes {missing or '(none given in data.domains)'} not found; "
                        f"available: {all_names}")
    if len(names) != cfg.model.num_domains:
        raise DataError(f"data.domains has {len(names)} attributes but model.num_domains={cfg.model.num_domains}")
    cols = [all_names.index(a) for a in names]
    rows = lines[2:]
    rows = rows[:CELEBA_TEST] if split == "test" else rows[CELEBA_TEST:] if len(rows) > CELEBA_TEST else rows
    imgs, labs = [], []
    for i, line in enumerate(rows):
        parts = line.split()
        if len(parts) != len(all_names) + 1:
            raise DataError(f"{attr}: line {i + 3} has {len(parts) - 1} values, expected {len(all_names)}")
        f = root / "images" / parts[0]
        if not f.is_file():
            raise DataError(f"{f}: image listed in {attr.name} not found")
        imgs.append(_read_image(f, cfg.model.image_size, crop=cfg.data.celeba_crop))
        labs.append([float(parts[1 + c] == "1") for c in cols])
    return Data(torch.from_numpy(np.stack(imgs)), torch.tensor(labs), torch.full((len(imgs),), -1), names)


def load_train(cfg: Cfg) -> Data:
    _check_size(cfg)
    src = cfg.data.source
    if src == "procface":
        s = procface_split(cfg, "train")
        K = cfg.model.num_domains
        return Data(torch.from_numpy(s["images"]), _one_hot(s["domain"], K), torch.from_numpy(s["domain"]),
                    [f"domain{k}" for k in range(K)])
    if src == "folder":
        return load_folder(cfg)
    return load_celeba(cfg, "train")


def pixel_prototypes(data: Data, K: int) -> torch.Tensor:
    """Per-domain mean training image (K, 3, S, S) (UGAN v2 pixel prototype, *inferred* form)."""
    if (data.domain < 0).any():
        raise ShapeError("pixel prototypes need single-label data (data.label_mode=single)")
    return torch.stack([data.images[data.domain == k].mean(0) for k in range(K)])


def batch_indices(n: int, batch: int, seed: int, rank: int, world: int, it: int) -> np.ndarray:
    """Indices of the local batch of D-iteration ``it`` (keyed stream, sampling without replacement)."""
    from reprokit.rng import step_rng

    if batch * world > n:
        raise ShapeError(f"train.batch_size={batch * world} is larger than the {n} training images")
    r = step_rng(seed, "batch", 0, it)
    idx = r.permutation(n)[: batch * world]
    return idx[rank * batch:(rank + 1) * batch]
