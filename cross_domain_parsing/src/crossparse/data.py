"""Every data construction: ProcParse splits (source + four targets), the LIP-style labelled loader,
the unlabelled target-folder loader, label mapping, flips with left/right swap, preprocessing.

Real data (``data.source=lip``):

* ``data.path``: a LIP-style root with ``images/<name>.(jpg|png)`` and ``labels/<name>.png`` (one
  channel, LIP's 20 labels 0..19, 255 = ignore). Every 10th file (sorted) is the source validation split.
* ``data.target_path``: a folder of unlabelled target images (training);
* ``data.target_test_path``: optional, a labelled target folder in the LIP layout (evaluation only).
* ``data.label_map``: ``lip20_to_12`` (the table below) or a YAML file ``{lip_id: our_id}``.

Bad input raises ``DataError`` naming the file and value: a label outside the label set (other than
255), an image/label size mismatch, an empty target folder, a mapping entry that is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reprokit.config import ConfigError
from reprokit.errors import DataError

from . import procparse as pp
from .config import TARGETS, Cfg

IGNORE = 255
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
LIP_LABELS = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
              "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
              "right-shoe")
# LIP 20 -> our 12 (notes §4.2: the paper's mapping is not in the code). (target, status): "direct" where
# the class exists in both sets, "inferred" where we chose; 255 = ignored in training and evaluation.
LIP20_TO_12 = {0: (0, "direct"), 1: (2, "inferred: hat -> hair"), 2: (2, "direct"),
               3: (IGNORE, "inferred: glove -> ignore (side unknown)"), 4: (1, "inferred: sunglasses -> face"),
               5: (3, "direct"), 6: (9, "direct"), 7: (3, "inferred: coat -> upper-clothes"),
               8: (IGNORE, "inferred: socks -> ignore (side unknown)"), 9: (6, "direct"),
               10: (9, "inferred: jumpsuits -> dress"), 11: (3, "inferred: scarf -> upper-clothes"),
               12: (9, "inferred: skirt -> dress"), 13: (1, "direct"), 14: (4, "direct"), 15: (5, "direct"),
               16: (7, "direct"), 17: (8, "direct"), 18: (10, "direct"), 19: (11, "direct")}
LABEL_MAPS = {"lip20_to_12": {k: v for k, (v, _) in LIP20_TO_12.items()}}


def label_map(name_or_path: str, num_classes: int = 12) -> np.ndarray:
    """A 256-entry lookup (unmapped values = -1) from a built-in name or a YAML file {src: dst}."""
    if name_or_path in LABEL_MAPS:
        table, where = LABEL_MAPS[name_or_path], f"data.label_map={name_or_path}"
    else:
        p = Path(name_or_path)
        if not p.is_file():
            raise ConfigError(f"data.label_map={name_or_path}: neither a built-in map ({', '.join(LABEL_MAPS)}) "
                              "nor a YAML file")
        import yaml

        table, where = yaml.safe_load(p.read_text()) or {}, str(p)
        if not isinstance(table, dict):
            raise DataError(f"{p}: a label map is a mapping {{source id: target id}}")
    lut = np.full(256, -1, dtype=np.int64)
    for k, v in table.items():
        if not (isinstance(k, int) and 0 <= k < 256):
            raise DataError(f"{where}: unknown label-mapping entry {k!r} (source ids are integers 0..255)")
        if not (isinstance(v, int) and (0 <= v < num_classes or v == IGNORE)):
            raise DataError(f"{where}: unknown label-mapping entry {k}: {v!r} (targets are 0..{num_classes - 1} or 255)")
        lut[k] = v
    lut[IGNORE] = IGNORE
    return lut


def flip(x: torch.Tensor, y: torch.Tensor | None):
    """Horizontal flip of images (B, 3, H, W) and labels (B, H, W), swapping left/right labels."""
    x = x.flip(-1)
    if y is None:
        return x, None
    swap = torch.from_numpy(np.concatenate([pp.LR_SWAP, np.arange(12, 256)])).to(y.device)
    return x, swap[y.long().flip(-1)].to(y.dtype)


def preprocess(img01: np.ndarray | torch.Tensor, mode: str) -> torch.Tensor:
    """RGB in [0, 1] (N, 3, H, W) -> network input. caffe: BGR, x * 255 - 128 (official); symmetric: 2x - 1."""
    x = torch.as_tensor(img01, dtype=torch.float32)
    if mode == "caffe":
        return x.flip(1) * 255.0 - 128.0
    return x * 2.0 - 1.0


def to_display(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Inverse of ``preprocess`` -> RGB in [0, 1]."""
    return ((x + 128.0) / 255.0).flip(1).clamp(0, 1) if mode == "caffe" else ((x + 1) / 2).clamp(0, 1)


def _read_image(p: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            im = im.convert("RGB")
            orig = im.size
            im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0, orig
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot be read as an image ({e})") from e


def _read_label(p: Path, lut: np.ndarray, size: tuple[int, int], expect: tuple[int, int], where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{p}: a label map must be a one-channel PNG (got mode {im.mode})")
            if im.size != expect:
                raise DataError(f"{p}: label size {im.size[0]}x{im.size[1]} (WxH) != its image's "
                                f"{expect[0]}x{expect[1]}")
            arr = np.asarray(im).astype(np.int64)
    except OSError as e:
        raise DataError(f"{p}: cannot be read as a label PNG ({e})") from e
    vals = np.unique(arr)
    bad = [int(v) for v in vals if v < 0 or v > 255 or lut[v] < 0]
    if bad:
        raise DataError(f"{p}: label value {bad[0]} is outside the label set of {where} (and is not the ignore "
                        f"index {IGNORE})")
    mapped = lut[arr].astype(np.uint8)
    from PIL import Image as _I

    return np.asarray(_I.fromarray(mapped).resize((size[1], size[0]), _I.NEAREST))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT and p.is_file())


def load_labelled_folder(root: str | Path, size: tuple[int, int], lut: np.ndarray, where: str):
    """A LIP-style root (images/ + labels/): images (N, 3, H, W) in [0, 1], mapped labels (N, H, W)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder (a LIP-style root with images/ and labels/)")
    imgs_dir, labs_dir = root / "images", root / "labels"
    for d in (imgs_dir, labs_dir):
        if not d.is_dir():
            raise DataError(f"{d}: missing (a LIP-style root holds images/ and labels/)")
    files = _images_in(imgs_dir)
    if not files:
        raise DataError(f"{imgs_dir}: no images ({', '.join(IMAGE_EXT)})")
    xs, ys = [], []
    for f in files:
        lp = labs_dir / f"{f.stem}.png"
        if not lp.is_file():
            raise DataError(f"{lp}: the label map of {f} is missing")
        x, orig = _read_image(f, size)
        xs.append(x)
        ys.append(_read_label(lp, lut, size, orig, where))
    return np.stack(xs), np.stack(ys)


def load_target_folder(folder: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Unlabelled target images (N, 3, H, W) in [0, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such target image folder")
    files = _images_in(folder)
    if not files:
        raise DataError(f"{folder}: the target folder holds no images ({', '.join(IMAGE_EXT)})")
    return np.stack([_read_image(f, size)[0] for f in files])


@dataclass
class Data:
    """Network-ready tensors. ``targets`` maps a target name to its labelled val/test splits
    (evaluation only); ``tgt_train_y`` (target train labels) is used only by the oracle / fine-tuning arms."""

    src_x: torch.Tensor                    # (N, 3, H, W) preprocessed
    src_y: torch.Tensor                    # (N, H, W) uint8
    val_x: torch.Tensor
    val_y: torch.Tensor
    tgt_x: torch.Tensor                    # unlabelled target training images of data.target
    tgt_train_y: torch.Tensor | None
    targets: dict[str, dict[str, torch.Tensor]]
    classes: dict[str, list[int]]          # classes evaluated per target (outdoor: no dress)


def load_data(cfg: Cfg, need_target_labels: bool = False) -> Data:
    d, m = cfg.data, cfg.model
    H, W = m.height, m.width
    if d.source == "procparse":
        mk = lambda dom, split, n: pp.make_split(dom, split, n, H, W, d.seed, d.shift_strength)  # noqa: E731
        sx, sy = mk("source", "train", d.num_train)
        vx, vy = mk("source", "val", d.num_val)
        tx, ty = mk(d.target, "train", d.num_target_train)
        targets, classes = {}, {}
        for t in TARGETS:
            a, b = mk(t, "val", d.num_target_val)
            c, e = mk(t, "test", d.num_test)
            targets[t] = {"val_x": preprocess(a, d.preprocess), "val_y": torch.from_numpy(b),
                          "test_x": preprocess(c, d.preprocess), "test_y": torch.from_numpy(e)}
            classes[t] = [k for k in range(m.num_classes) if not (t == "outdoor" and k == pp.DRESS)]
        tgt_y = torch.from_numpy(ty) if need_target_labels else None
    else:
        if not d.path:
            raise DataError("data.source=lip needs data.path (a LIP-style root with images/ and labels/)")
        lut = label_map(d.label_map, m.num_classes)
        x, y = load_labelled_folder(d.path, (H, W), lut, f"data.label_map={d.label_map}")
        val = np.arange(len(x)) % 10 == 9
        if val.all() or not val.any():
            val = np.zeros(len(x), bool)
            val[-1:] = True
        sx, sy, vx, vy = x[~val], y[~val], x[val], y[val]
        if not d.target_path:
            raise DataError("data.source=lip needs data.target_path (a folder of unlabelled target images)")
        tx = load_target_folder(d.target_path, (H, W))
        targets, classes, tgt_y = {}, {}, None
        if d.target_test_path:
            a, b = load_labelled_folder(d.target_test_path, (H, W), lut, f"data.label_map={d.label_map}")
            targets["target"] = {"val_x": preprocess(a, d.preprocess), "val_y": torch.from_numpy(b),
                                 "test_x": preprocess(a, d.preprocess), "test_y": torch.from_numpy(b)}
            classes["target"] = list(range(m.num_classes))
        if need_target_labels:
            raise DataError("the oracle / fine-tuning arms need target training labels: only ProcParse has them here")
    return Data(src_x=preprocess(sx, d.preprocess), src_y=torch.from_numpy(sy), val_x=preprocess(vx, d.preprocess),
                val_y=torch.from_numpy(vy), tgt_x=preprocess(tx, d.preprocess), tgt_train_y=tgt_y, targets=targets,
                classes=classes)


def batch_indices(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """``b`` indices drawn without replacement from ``n`` (with replacement when b > n)."""
    if b <= n:
        return torch.randperm(n, generator=generator)[:b]
    return torch.randint(0, n, (b,), generator=generator)
