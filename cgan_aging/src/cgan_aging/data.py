"""Every data construction: ProcAging (default), UTKFace, CACD, a folder-per-person longitudinal set;
age groups; the pair sampler of same-person adjacent-group images (and different-person negatives).

``load_train(cfg)`` returns an ``AgeData``: images float32 (N, 3, S, S) in [-1, 1], ``group`` (N,)
int64, ``person`` (N,) int64 (images of one person share it), ``age`` (N,) float (years for real
data, [0, 1] for ProcAging) and ``files`` (real data). Errors a user can fix are
``reprokit.errors.DataError`` naming the file or the rule.

File conventions (the tests write tiny files in exactly these formats):

* utkface: ``<path>/<age>_<gender>_<race>_<date>.jpg`` (also ``...jpg.chip.jpg``); no identity is
  given, so every image is its own person: usable for D_age only (no transition pairs);
* cacd: ``<path>/<age>_<name>_<number>.jpg`` (name may contain underscores); person = name;
* longitudinal (Morph / FG-NET style): ``<path>/<person>/<image>`` whose stem ends in the age as
  its last run of digits (FG-NET ``001A02.JPG`` -> 2, ``img_35.png`` -> 35).

Ages are mapped to groups with inclusive [lo, hi] bounds (``config.group_bounds``: presets ``five`` and
``seven``, or ``data.group_bounds``); an age outside every group is a DataError naming the file and the
bounds (drop such images yourself if that is intended).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reprokit.errors import DataError, ShapeError

from . import procaging as pa
from .config import Cfg, group_bounds

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
UTK_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)(?:\.jpg)?(?:\.chip)?$", re.IGNORECASE)
CACD_RE = re.compile(r"^(\d+)_(.+)_(\d+)$")
LONG_RE = re.compile(r"(\d+)\D*$")


@dataclass
class AgeData:
    images: torch.Tensor           # (N, 3, S, S) in [-1, 1]
    group: torch.Tensor            # (N,) int64
    person: torch.Tensor           # (N,) int64
    age: torch.Tensor              # (N,) float64
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]


def age_to_group(age: float, bounds: list[list[int]], where: str) -> int:
    for k, (lo, hi) in enumerate(bounds):
        if lo <= age <= hi:
            return k
    raise DataError(f"{where}: age {age} is outside every age group {bounds} (data.groups / data.group_bounds)")


def read_image(path: Path, size: int) -> np.ndarray:
    """(3, S, S) float32 in [-1, 1]; DataError naming the file if unreadable or truncated."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.load()
            arr = np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({type(e).__name__}: {e})") from e
    return arr.transpose(2, 0, 1) / 127.5 - 1.0


def _image_files(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"data.path={root}: {what} folder not found")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) for {what}")
    return files


def parse_utkface(name: str) -> int:
    stem = name[: -len(".jpg")] if name.lower().endswith(".jpg") else Path(name).stem
    m = UTK_RE.match(stem)
    if not m:
        raise DataError(f"{name}: not a UTKFace name <age>_<gender>_<race>_<date>.jpg")
    return int(m.group(1))


def parse_cacd(name: str) -> tuple[int, str]:
    m = CACD_RE.match(Path(name).stem)
    if not m:
        raise DataError(f"{name}: not a CACD name <age>_<name>_<number>.jpg")
    return int(m.group(1)), m.group(2)


def parse_longitudinal(name: str) -> int:
    m = LONG_RE.search(Path(name).stem)
    if not m:
        raise DataError(f"{name}: no age in the file name (longitudinal layout: the stem ends in the age, "
                        "e.g. 001A02.JPG or img_35.png)")
    return int(m.group(1))


def _assemble(entries: list[tuple[Path, int, str]], cfg: Cfg) -> AgeData:
    bounds = group_bounds(cfg)
    groups = [age_to_group(age, bounds, str(f)) for f, age, _ in entries]
    names = {p: i for i, p in enumerate(sorted({p for _, _, p in entries}))}
    imgs = np.stack([read_image(f, cfg.model.image_size) for f, _, _ in entries])
    return AgeData(torch.from_numpy(imgs), torch.tensor(groups), torch.tensor([names[p] for _, _, p in entries]),
                   torch.tensor([float(a) for _, a, _ in entries], dtype=torch.float64), [str(f) for f, _, _ in entries])


def load_utkface(cfg: Cfg) -> AgeData:
    files = _image_files(Path(cfg.data.path), "UTKFace")
    return _assemble([(f, parse_utkface(f.name), f.name) for f in files], cfg)


def load_cacd(cfg: Cfg) -> AgeData:
    files = _image_files(Path(cfg.data.path), "CACD")
    out = []
    for f in files:
        age, name = parse_cacd(f.name)
        out.append((f, age, name))
    return _assemble(out, cfg)


def load_longitudinal(cfg: Cfg) -> AgeData:
    root = Path(cfg.data.path)
    if not root.is_dir():
        raise DataError(f"data.path={root}: longitudinal folder not found (expected <path>/<person>/<image>)")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        raise DataError(f"{root}: no person folders (expected <path>/<person>/<image>)")
    out = []
    for p in people:
        for f in _image_files(p, f"person {p.name}"):
            out.append((f, parse_longitudinal(f.name), p.name))
    return _assemble(out, cfg)


PROCAGING_SPLITS = ("train", "val", "test")


def procaging_split(cfg: Cfg, split: str) -> dict:
    """``train`` (the generator's data), ``val`` (``data.num_val`` people: the LR is chosen on them) or
    ``test`` (``data.num_test`` people: every reported metric and claim); three keyed streams of
    ``data.seed``, so the identities are disjoint."""
    if split not in PROCAGING_SPLITS:
        raise ValueError(f"unknown ProcAging split {split!r}; valid: {', '.join(PROCAGING_SPLITS)}")
    n = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}[split]
    return pa.make_split(n, cfg.model.num_groups, cfg.model.image_size, cfg.data.seed, split,
                         pair_frac=cfg.data.pair_frac, nuisance=cfg.data.nuisance)


def load_train(cfg: Cfg) -> AgeData:
    src = cfg.data.source
    if src == "procaging":
        s = procaging_split(cfg, "train")
        return AgeData(torch.from_numpy(s["images"]), torch.from_numpy(s["group"]), torch.from_numpy(s["person"]),
                       torch.from_numpy(s["age"]))
    if not cfg.data.path:
        raise DataError(f"data.source={src} needs data.path (a folder)")
    return {"utkface": load_utkface, "cacd": load_cacd, "longitudinal": load_longitudinal}[src](cfg)


# ---------------------------------------------------------------------------------------------- pairs

def adjacent_pairs(person: np.ndarray, group: np.ndarray) -> np.ndarray:
    """All (i, j) with person[i] == person[j] and group[j] == group[i] + 1: (P, 2) int64, sorted."""
    person, group = np.asarray(person), np.asarray(group)
    order = np.lexsort((group, person))
    out = []
    by_key: dict[tuple[int, int], list[int]] = {}
    for i in order:
        by_key.setdefault((int(person[i]), int(group[i])), []).append(int(i))
    for (p, g), idx in by_key.items():
        for j in by_key.get((p, g + 1), []):
            out += [(i, j) for i in idx]
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 2)


def check_pairs(pairs: np.ndarray, cfg: Cfg, where: str) -> None:
    if len(pairs) == 0 and cfg.gan.lambda_t > 0:
        raise DataError(f"{where}: no usable transition pairs (the same person in two adjacent age groups); "
                        "D_trans needs longitudinal data. Use gan.lambda_t=0 (age-only cGAN) or another data set")


def sample_pairs(pairs: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b, 2) same-person adjacent-group pairs drawn with replacement."""
    return pairs[rng.integers(0, len(pairs), b)]


def sample_negatives(person: np.ndarray, group: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b, 2) adjacent-group pairs (i, j) of two *different* people: group[j] == group[i] + 1."""
    person, group = np.asarray(person), np.asarray(group)
    K = int(group.max()) + 1
    members = [np.flatnonzero(group == k) for k in range(K)]
    starts = np.flatnonzero(group < K - 1)
    starts = starts[[len(members[group[i] + 1]) > 0 for i in starts]] if len(starts) else starts
    if len(starts) == 0:
        raise DataError("no adjacent-group negatives: the data cover fewer than two adjacent groups")
    out = np.empty((b, 2), dtype=np.int64)
    for r in range(b):
        for _ in range(100):
            i = int(starts[rng.integers(0, len(starts))])
            cand = members[group[i] + 1]
            j = int(cand[rng.integers(0, len(cand))])
            if person[j] != person[i]:
                break
        else:
            raise DataError("no adjacent-group negatives of two different people found")
        out[r] = (i, j)
    return out


def batch_indices(n: int, batch: int, seed: int, rank: int, world: int, it: int) -> np.ndarray:
    """Indices of the local batch of D-iteration ``it`` (keyed stream, without replacement)."""
    from reprokit.rng import step_rng

    if batch * world > n:
        raise ShapeError(f"train.batch_size={batch * world} is larger than the {n} training images")
    idx = step_rng(seed, "batch", 0, it).permutation(n)[: batch * world]
    return idx[rank * batch:(rank + 1) * batch]
