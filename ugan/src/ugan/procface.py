"""ProcFace: procedurally rendered faces with domain traits and source-only marks (notes §6.2).

A face is a function of three independent things:

* identity latents ``z`` (N, 14), domain-free: face width/height, skin RGB, eye spacing/size, eye
  RGB, mouth width, hair RGB, background tint;
* the domain k in {0..K-1}: *target traits* that are deterministic in k (hair greying t = k/(K-1),
  k forehead lines (at most 3), jaw widening 0.12 t) so a classifier can read the domain;
* instance-specific *source-only marks*, drawn from a per-image seed: mark type of domain k is
  MARK_OF[k % 4] (freckles, none, stubble, age spots). The marks vary per image, so a translator
  whose cycle loss must reconstruct them is pushed to keep them ("source retention").

``render(z, k, marks, mark_types)`` is vectorised numpy over the batch and returns float32 images in
[-1, 1] of shape (N, 3, S, S). The counterfactual of identity z in domain j is ``render(z, j,
marks=False)``: same identity, only the domain traits differ, no marks (a translation cannot know
the target domain's instance-specific marks). ``mark_mask`` says where the marks were drawn.
"""

from __future__ import annotations

import numpy as np

NUM_LATENTS = 14
MARKS = ("freckles", "stubble", "spots")
MARK_OF = (0, None, 1, 2)          # domain k -> index into MARKS of its mark (k % 4); None: no mark


def mark_type(k: np.ndarray | int) -> np.ndarray:
    """Index into MARKS of the source-only mark of domain k, -1 for none."""
    table = np.array([-1 if m is None else m for m in MARK_OF])
    return table[np.asarray(k) % 4]


def sample_identities(n: int, rng: np.random.Generator) -> np.ndarray:
    """Identity latents (n, NUM_LATENTS), uniform in [0, 1]."""
    return rng.random((n, NUM_LATENTS)).astype(np.float64)


def _sig(d: np.ndarray, px: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance d (< 0 inside), edge width one pixel."""
    return 1.0 / (1.0 + np.exp(np.clip(d / px, -30, 30)))


def _layers(z: np.ndarray, k: np.ndarray, K: int, size: int):
    """Geometry and colour of the clean face. Returns (img (N,S,S,3), masks dict)."""
    n = z.shape[0]
    px = 2.0 / size
    c = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")                  # (S, S), y down
    yy, xx = yy[None], xx[None]                                 # (1, S, S)
    t = (k / max(K - 1, 1))[:, None, None]                      # (N, 1, 1) domain trait level
    col = lambda a, b: z[:, a:b][:, None, None, :]              # noqa: E731  (N, 1, 1, 3)
    zz = lambda i: z[:, i][:, None, None]                       # noqa: E731  (N, 1, 1)
    bg = 0.25 + 0.5 * col(11, 14)
    img = np.broadcast_to(bg, (n, size, size, 3)).copy()
    # hair (drawn first, the face covers its lower part); greying blends to light grey with t
    hair_rgb = 0.1 + 0.5 * col(8, 11)
    hair_rgb = (1 - t[..., None]) * hair_rgb + t[..., None] * np.array([0.82, 0.82, 0.85])
    fw, fh = 0.45 + 0.2 * zz(0), 0.55 + 0.2 * zz(1)
    hair_d = np.sqrt((xx / (fw + 0.1)) ** 2 + ((yy + 0.12) / (fh + 0.08)) ** 2) - 1
    hair = _sig(hair_d * fw, px) * (yy < 0.05)
    img = img * (1 - hair[..., None]) + hair_rgb * hair[..., None]
    # face: ellipse whose lower half widens with the jaw trait
    jaw = 1 + 0.12 * t * (yy > 0)
    face_d = np.sqrt((xx / (fw * jaw)) ** 2 + (yy / fh) ** 2) - 1
    face = _sig(face_d * fw, px)
    skin = 0.45 + 0.45 * col(2, 5) * np.array([1.0, 0.8, 0.7])
    img = img * (1 - face[..., None]) + skin * face[..., None]
    # forehead lines: up to 3 thin dark bands, count = k
    lines = np.zeros_like(face)
    for j in range(3):
        on = (k > j).astype(float)[:, None, None]
        y0 = -0.55 * fh + 0.1 * j
        band = _sig(np.abs(yy - y0) - 0.025, px) * _sig(np.abs(xx) - 0.5 * fw, px)
        lines = np.maximum(lines, on * band * face)
    img = img * (1 - 0.45 * lines[..., None])
    # eyes
    sp, es = 0.18 + 0.14 * zz(5), 0.07 + 0.05 * zz(6)
    eye_rgb = 0.05 + 0.6 * col(7, 10)[..., [0, 2, 1]]
    eyes = np.maximum(_sig(np.sqrt((xx - sp) ** 2 + (yy + 0.12) ** 2) - es, px),
                      _sig(np.sqrt((xx + sp) ** 2 + (yy + 0.12) ** 2) - es, px))
    img = img * (1 - eyes[..., None]) + eye_rgb * eyes[..., None]
    # mouth
    mw = 0.15 + 0.15 * zz(10)
    mouth = _sig(np.sqrt((xx / mw) ** 2 + ((yy - 0.4 * fh - 0.1) / 0.05) ** 2) - 1, 1.0 / size * 8)
    img = img * (1 - mouth[..., None]) + np.array([0.6, 0.15, 0.2]) * mouth[..., None]
    regions = {"face": face, "cheeks": face * (1 - eyes) * (np.abs(yy - 0.1) < 0.2) * (np.abs(xx) > 0.12),
               "jaw": face * (yy > 0.35 * fh) * (1 - mouth)}
    return img, regions, (xx, yy)


def _marks(z_regions: dict, grid, types: np.ndarray, mark_seeds: np.ndarray, strength: float):
    """Additive mark layers: (delta (N,S,S,3), mask (N,S,S)) from per-image seeds.

    Each image's mark parameters come from its own ``np.random.default_rng(mark_seed)`` (so a mark
    does not depend on the batch it is rendered in); the drawing is vectorised over the batch.
    """
    xx, yy = grid
    n = types.shape[0]
    size = xx.shape[-1]
    px = 2.0 / size
    pos = np.zeros((n, 6, 2))
    active = np.zeros((n, 6))
    tex = np.zeros((n, size, size))
    for i in range(n):
        r = np.random.default_rng(int(mark_seeds[i]))
        cnt = int(r.integers(3, 7)) if types[i] == 0 else int(r.integers(2, 5))
        pos[i, :, 0] = r.uniform(-0.45, 0.45, 6)
        pos[i, :, 1] = r.uniform(-0.05, 0.25, 6)
        active[i, :cnt] = 1
        if types[i] == 1:
            tex[i] = r.random((size, size)) < 0.55
    rad = np.where(types == 0, 0.045, 0.08)[:, None, None, None]                       # (N,1,1,1)
    d = np.sqrt((xx[:, None] - pos[:, :, 0, None, None]) ** 2
                + (yy[:, None] - pos[:, :, 1, None, None]) ** 2) - rad                 # (N,6,S,S)
    dots = (_sig(d, px) * active[:, :, None, None]).max(1) * z_regions["face"]          # (N,S,S)
    stub = tex * z_regions["jaw"]
    t = types[:, None, None]
    mask = np.where(t == 1, stub, np.where(t < 0, 0.0, dots))                           # (N,S,S)
    colours = np.array([[-0.35, -0.45, -0.45], [-0.4, -0.4, -0.4], [-0.1, -0.45, -0.4]])
    colour = np.where((types >= 0)[:, None], colours[np.clip(types, 0, 2)], 0.0)        # (N,3)
    return strength * mask[..., None] * colour[:, None, None, :], mask


def render(z: np.ndarray, k: np.ndarray | int, K: int, size: int, marks: bool = True,
           mark_seeds: np.ndarray | None = None, mark_types: np.ndarray | None = None,
           strength: float = 1.0, return_mask: bool = False):
    """Render identities ``z`` (N, 14) in domains ``k`` (N,) at ``size`` px: float32 (N, 3, S, S) in [-1, 1].

    ``marks``: draw source-only marks of type ``mark_types`` (default: the domain's own, MARK_OF)
    from ``mark_seeds`` (N,) (required when marks=True). ``return_mask`` also returns (N, S, S) mark masks.
    """
    z = np.asarray(z, dtype=np.float64)
    k = np.broadcast_to(np.asarray(k), (z.shape[0],)).astype(np.int64)
    img, regions, grid = _layers(z, k, K, size)
    mask = np.zeros(img.shape[:3])
    if marks:
        if mark_seeds is None:
            raise ValueError("render(marks=True) needs mark_seeds")
        types = mark_type(k) if mark_types is None else np.asarray(mark_types)
        delta, mask = _marks(regions, grid, types, np.asarray(mark_seeds), strength)
        img = img + delta
    out = (np.clip(img, 0, 1) * 2 - 1).transpose(0, 3, 1, 2).astype(np.float32)
    return (out, mask.astype(np.float32)) if return_mask else out


def make_split(n: int, K: int, size: int, seed: int, split: str, strength: float = 1.0) -> dict:
    """One ProcFace split: identities, domains (balanced, i % K shuffled), mark seeds and the renders.

    Train and test identities come from distinct keyed streams of ``seed`` (disjoint by construction).
    """
    from reprokit.rng import derive_seed

    rng = np.random.default_rng(derive_seed(seed, "procface", split))
    z = sample_identities(n, rng)
    dom = rng.permutation(np.arange(n) % K)
    mseeds = rng.integers(0, 2**31 - 1, n)
    x = render(z, dom, K, size, marks=True, mark_seeds=mseeds, strength=strength)
    return {"z": z, "domain": dom, "mark_seeds": mseeds, "images": x}
