"""ProcAging: procedural faces with person-specific aging and exact ground truth (notes §6.3).

A face is an exact, deterministic function ``render(z, a, age, nuisance)`` of

* identity latents ``z`` (N, 14) in [0, 1], age-free: face width/height, skin RGB, eye spacing/size,
  eye RGB, mouth width, hair RGB, background tint. Hair lightness is drawn *correlated with the
  greying onset* (a weak young-face cue of how the person will age, as the notes ask);
* person-specific aging parameters ``a`` (N, 4) in [0, 1] (``AGING_PARAMS``):
  ``rate`` (effective age e = clip(age * (0.7 + 0.8 rate), 0, 1) drives wrinkles and jaw sag),
  ``onset`` (hair greying starts at age 0.2 + 0.6 onset and completes 0.35 later),
  ``layout`` (wrinkle rows: height and tilt), ``sag_dir`` (jaw sag to the left (0) / right (1));
* continuous ``age`` (N,) in [0, 1]; K groups are equal bins (``group_of``), and the ground truth
  at group k is the render at the group's centre ``(k + 0.5) / K``;
* nuisance ``n`` (N, 3): brightness offset and a small (x, y) shift, per image.

Age-dependent features, all else constant in age (tested): common development that is the same for
everyone (face height +0.15 age, eye size x (1 - 0.4 age), cheek folds, hairline recession, skin
darkening), so the age group is readable from one face; and the person-specific parts (greying from ``onset``,
wrinkles from ``rate`` and ``layout``, jaw sag from ``rate`` and ``sag_dir``), so the correct aged
face of a person differs from the population's and the aging parameters are readable from a
progression. Everything is vectorised numpy; images are float32 (N, 3, S, S) in [-1, 1].
"""

from __future__ import annotations

import numpy as np

NUM_LATENTS = 14
AGING_PARAMS = ("rate", "onset", "layout", "sag_dir")
NUM_AGING = len(AGING_PARAMS)
RENDER_VERSION = 2              # bump when a render changes (cached evaluators are keyed by it)


def group_of(age: np.ndarray, K: int) -> np.ndarray:
    """Equal-width group of continuous ages in [0, 1]: (N,) int64 in 0..K-1."""
    return np.clip((np.asarray(age) * K).astype(np.int64), 0, K - 1)


def group_centre(k: np.ndarray | int, K: int) -> np.ndarray:
    return (np.asarray(k, dtype=np.float64) + 0.5) / K


def sample_people(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Identity latents (n, 14) and aging parameters (n, 4), uniform in [0, 1]; hair lightness
    (latents 8..10) is 0.5 * onset + 0.5 * uniform (the young-face cue of greying onset)."""
    z = rng.random((n, NUM_LATENTS))
    a = rng.random((n, NUM_AGING))
    z[:, 8:11] = 0.5 * a[:, 1:2] + 0.5 * z[:, 8:11]
    return z, a


def sample_nuisance(n: int, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """(n, 3): brightness offset in +-0.05 and (x, y) shift in +-0.05 (about 1 px at 32 px)."""
    return strength * (rng.random((n, 3)) * 0.1 - 0.05)


def _sig(d: np.ndarray, px: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance d (< 0 inside), edge width one pixel."""
    return 1.0 / (1.0 + np.exp(np.clip(d / px, -30, 30)))


def render(z: np.ndarray, a: np.ndarray, age: np.ndarray | float, size: int,
           nuisance: np.ndarray | None = None) -> np.ndarray:
    """Faces of people (z, a) at ``age`` (scalar or (N,)): float32 (N, 3, S, S) in [-1, 1]."""
    z = np.asarray(z, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    n = z.shape[0]
    age = np.broadcast_to(np.asarray(age, dtype=np.float64), (n,))
    nz = np.zeros((n, 3)) if nuisance is None else np.asarray(nuisance, dtype=np.float64)
    px = 2.0 / size
    c = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")                              # (S, S), y down
    xx = xx[None] - nz[:, 1, None, None]                                   # (N, S, S) shifted frame
    yy = yy[None] - nz[:, 2, None, None]
    col = lambda i, j: z[:, i:j][:, None, None, :]                          # noqa: E731  (N,1,1,3)
    zz = lambda i: z[:, i][:, None, None]                                   # noqa: E731  (N,1,1)
    t = age[:, None, None]                                                  # (N,1,1) chronological age
    e = np.clip(age * (0.7 + 0.8 * a[:, 0]), 0, 1)[:, None, None]           # effective (person) age
    grey = np.clip((age - (0.2 + 0.6 * a[:, 1])) / 0.35, 0, 1)[:, None, None, None]
    bg = 0.25 + 0.5 * col(11, 14)
    img = np.broadcast_to(bg, (n, size, size, 3)).copy()
    # hair: greys with the person's onset; the hairline recedes with age (common development)
    hair_rgb = (1 - grey) * (0.1 + 0.6 * col(8, 11)) + grey * np.array([0.85, 0.85, 0.88])
    fw = 0.45 + 0.2 * zz(0)
    fh = 0.5 + 0.1 * zz(1) + 0.15 * t
    hair_d = np.sqrt((xx / (fw + 0.1)) ** 2 + ((yy + 0.12) / (fh + 0.08)) ** 2) - 1
    hair = _sig(hair_d * fw, px) * _sig(yy - (0.05 - 0.25 * t), px)
    img = img * (1 - hair[..., None]) + hair_rgb * hair[..., None]
    # face: the lower half widens and sags towards the person's side with the effective age
    sag = (a[:, 3][:, None, None] * 2 - 1) * 0.25 * e                      # (N,1,1) horizontal jaw shift
    low = yy > 0
    jaw = 1 + 0.15 * e * low
    xs = xx - sag * np.clip(yy / fh, 0, 1) * low
    face_d = np.sqrt((xs / (fw * jaw)) ** 2 + (yy / (fh * (1 + 0.08 * e * low))) ** 2) - 1
    face = _sig(face_d * fw, px)
    skin = (0.45 + 0.45 * col(2, 5) * np.array([1.0, 0.8, 0.7])) * (1 - 0.15 * t[..., None])
    img = img * (1 - face[..., None]) + skin * face[..., None]
    # wrinkles: three forehead rows, intensity from the effective age, spacing and tilt from layout
    lay = a[:, 2][:, None, None]
    wint = np.clip(1.4 * e - 0.25, 0, 1)
    lines = np.zeros_like(face)
    for j in range(3):
        y0 = -0.55 * fh + (lay - 0.5) * 0.25 + 0.1 * j + (lay - 0.5) * 0.4 * xx
        band = _sig(np.abs(yy - y0) - 0.03, px) * _sig(np.abs(xx) - 0.55 * fw, px)
        lines = np.maximum(lines, band * face)
    img = img * (1 - 0.55 * (wint * lines)[..., None])
    # cheek folds: the same for everyone, darker with chronological age (common development)
    fold_d = np.abs(np.abs(xx) - (0.14 + 0.4 * (yy - 0.02))) - 0.025
    folds = _sig(fold_d, px) * (yy > 0.02) * (yy < 0.32) * face
    img = img * (1 - 0.5 * (t * folds)[..., None])
    # eyes shrink with age (common development)
    sp, es = 0.18 + 0.14 * zz(5), (0.085 + 0.03 * zz(6)) * (1 - 0.4 * t)
    eye_rgb = 0.05 + 0.6 * col(7, 10)[..., [0, 2, 1]]
    eyes = np.maximum(_sig(np.sqrt((xx - sp) ** 2 + (yy + 0.1) ** 2) - es, px),
                      _sig(np.sqrt((xx + sp) ** 2 + (yy + 0.1) ** 2) - es, px))
    img = img * (1 - eyes[..., None]) + eye_rgb * eyes[..., None]
    mw = 0.15 + 0.15 * zz(10)
    mouth = _sig(np.sqrt(((xs) / mw) ** 2 + ((yy - 0.45 * fh - 0.08) / 0.06) ** 2) - 1, px * 2)
    img = img * (1 - mouth[..., None]) + np.array([0.6, 0.15, 0.2]) * mouth[..., None]
    img = img + nz[:, 0, None, None, None]
    return (np.clip(img, 0, 1) * 2 - 1).transpose(0, 3, 1, 2).astype(np.float32)


def make_split(n: int, K: int, size: int, seed: int, split: str, pair_frac: float = 0.4,
               max_groups: int = 3, nuisance: float = 1.0) -> dict:
    """One ProcAging split. ``train``: every identity has one image at a uniform age, except a
    ``pair_frac`` share that has images in 2..``max_groups`` *adjacent* groups (one uniform age inside
    each group): the longitudinal part that the pair sampler uses. ``test`` and ``val``: one image per
    identity (the input) plus everything needed for its ground-truth renders at every group.

    Returns dict(z (P,14), a (P,4), person (N,), age (N,), group (N,), nuisance (N,3), images (N,3,S,S)).
    Train, validation and test identities come from distinct keyed streams of ``seed`` (disjoint: continuous
    latents from independent streams; tested).
    """
    from reprokit.rng import derive_seed

    rng = np.random.default_rng(derive_seed(seed, "procaging", split))
    z, a = sample_people(n, rng)
    person, age = [], []
    longitudinal = rng.random(n) < (pair_frac if split == "train" else 0.0)
    for i in range(n):
        if longitudinal[i] and K >= 2:
            m = int(rng.integers(2, max(2, min(max_groups, K)) + 1))
            g0 = int(rng.integers(0, K - m + 1))
            for g in range(g0, g0 + m):
                person.append(i)
                age.append((g + rng.random()) / K)
        else:
            person.append(i)
            age.append(rng.random())
    person, age = np.array(person, dtype=np.int64), np.clip(np.array(age), 0, 1 - 1e-9)
    nz = sample_nuisance(len(person), rng, nuisance)
    images = render(z[person], a[person], age, size, nz)
    return {"z": z, "a": a, "person": person, "age": age, "group": group_of(age, K), "nuisance": nz,
            "images": images}


def true_progression(z: np.ndarray, a: np.ndarray, K: int, size: int, nuisance: np.ndarray | None = None):
    """Ground truth of every person at every group centre: (N, K, 3, S, S)."""
    return np.stack([render(z, a, group_centre(k, K), size, nuisance) for k in range(K)], 1)
