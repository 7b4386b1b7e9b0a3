"""ProcParse: procedurally rendered human bodies with the official 12 labels (notes §6.4).

A clean, labelled "LIP-like" source domain and four shifted target domains whose body layout is
shared with the source and whose appearance (and a few pose / framing priors) differ:

* ``indoor`` (canteen surveillance): x3 down-up sampling, warm colour cast, table-like occluders over
  the lower body (occluded pixels are background);
* ``outdoor`` (road surveillance): sensor noise, horizontal motion blur, low contrast, smaller
  people, and **no dress** (11 labels, as the code's ``Outdoor_nodress``);
* ``movie``: dark gamma, teal-orange grading, vignette, people truncated by the frame border;
* ``runway``: bright backlight (bright background, darker subject), long-leg pose prior, frequent dresses.

Everything is numpy-vectorised over images: the label map is painted back to front from capsules
(distance of every pixel to a segment) and ellipses; colours come from per-image latents. Rendering
is deterministic: ``make_split(domain, split, n, H, W, seed)`` draws from a stream keyed by
(seed, domain, split). Images are float32 ``(N, 3, H, W)`` in [0, 1]; labels uint8 ``(N, H, W)``.
"""

from __future__ import annotations

import numpy as np

from reprokit.rng import derive_seed

LABELS = ("background", "face", "hair", "upper-clothes", "left-arm", "right-arm", "pants", "left-leg",
          "right-leg", "dress", "left-shoe", "right-shoe")
# horizontal flip: the person's left becomes their right (notes §6.4; CE2P's README)
LR_SWAP = np.array([0, 1, 2, 3, 5, 4, 6, 8, 7, 9, 11, 10], dtype=np.int64)
DOMAINS = ("source", "indoor", "outdoor", "movie", "runway")
DRESS = 9
PALETTE = np.array([[0, 0, 0], [255, 200, 160], [90, 50, 20], [220, 40, 40], [60, 160, 60], [40, 200, 200],
                    [40, 40, 200], [200, 200, 40], [200, 40, 200], [255, 140, 0], [120, 120, 120], [250, 250, 250]],
                   dtype=np.uint8)


def _seg_dist(px, py, ax, ay, bx, by):
    """Distance of every pixel (1, H, W) to the segments a->b ((n, 1, 1) each): (n, H, W)."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _col(v):
    return v[:, None, None]


def sample_bodies(n: int, rng: np.random.Generator, domain: str, strength: float = 1.0) -> dict:
    """Per-image latents (pose, shape, garments, colours) with the domain's geometric priors."""
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    z = {"height": u(0.80, 0.95), "cx": u(0.42, 0.58), "cy": u(-0.03, 0.03),
         "shoulder": u(0.09, 0.13), "hip": u(0.06, 0.085), "leg_len": np.ones(n), "limb_r": u(0.032, 0.045),
         "arm_l": u(-0.35, 1.1), "arm_r": u(-0.35, 1.1), "elbow_l": u(-0.6, 0.9), "elbow_r": u(-0.6, 0.9),
         "leg_l": u(-0.05, 0.3), "leg_r": u(-0.05, 0.3), "knee_l": u(-0.25, 0.15), "knee_r": u(-0.25, 0.15),
         "dress": rng.random(n) < 0.35, "pants_len": u(0.45, 1.0), "sleeve": u(0.0, 1.0), "long_hair": rng.random(n) < 0.4,
         "skin": rng.uniform(0.35, 0.95, (n, 1)) * np.array([1.0, 0.78, 0.62]) + rng.uniform(-0.05, 0.05, (n, 3)),
         "hair_c": rng.uniform(0.02, 0.5, (n, 1)) * np.array([1.0, 0.8, 0.6]) + rng.uniform(0, 0.1, (n, 3)),
         "upper_c": rng.uniform(0, 1, (n, 3)), "lower_c": rng.uniform(0, 1, (n, 3)), "dress_c": rng.uniform(0, 1, (n, 3)),
         "shoe_c": rng.uniform(0, 0.5, (n, 3)), "stripes": rng.random(n) < 0.5, "stripe_f": u(6, 16),
         "stripe_p": u(0, 6.3), "bg_a": rng.uniform(0, 1, (n, 3)), "bg_b": rng.uniform(0, 1, (n, 3)),
         "bg_seed": rng.integers(0, 2**31 - 1, n)}
    s = strength
    if domain == "outdoor":
        z["height"] = u(0.55, 0.75) * s + z["height"] * (1 - s)
        z["cy"] = u(-0.1, 0.1)
        z["dress"][:] = False
    elif domain == "runway":
        z["leg_len"] = 1 + 0.2 * s * rng.uniform(0.5, 1.0, n)
        z["dress"] = rng.random(n) < 0.35 + 0.45 * s
        z["leg_l"], z["leg_r"] = u(-0.05, 0.12), u(-0.05, 0.12)
    elif domain == "movie":
        shift = s * rng.choice([-1.0, 1.0], n) * rng.uniform(0.15, 0.3, n)
        z["cx"] = z["cx"] + shift
        z["height"] = z["height"] * (1 + 0.25 * s * rng.random(n))
    return z


def _background(z: dict, H: int, W: int) -> np.ndarray:
    """Low-frequency textured background: a colour gradient plus random soft blobs (n, 3, H, W)."""
    n = len(z["cx"])
    yy = np.linspace(0, 1, H)[None, :, None]
    img = z["bg_a"][:, :, None, None] * (1 - yy[:, None]) + z["bg_b"][:, :, None, None] * yy[:, None]
    rng = np.random.default_rng(int(z["bg_seed"][0]) if n else 0)
    for _ in range(4):
        cx, cy = rng.uniform(0, W, (n, 1, 1)), rng.uniform(0, H, (n, 1, 1))
        r = rng.uniform(0.1, 0.4, (n, 1, 1)) * H
        c = rng.uniform(0, 1, (n, 3))
        py, px = np.mgrid[0:H, 0:W]
        w = np.exp(-((px - cx) ** 2 + (py - cy) ** 2) / (2 * r * r))[:, None] * 0.6
        img = img * (1 - w) + c[:, :, None, None] * w
    return img


def render_bodies(z: dict, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint labels back to front and colour them: images (n, 3, H, W) in [0, 1], labels (n, H, W)."""
    n = len(z["cx"])
    py, px = np.mgrid[0:H, 0:W].astype(np.float64)
    py, px = py[None] + 0.5, px[None] + 0.5
    L = _col(z["height"]) * H                                     # body height in pixels
    cx = _col(z["cx"]) * W
    top = (H - L) / 2 + _col(z["cy"]) * H
    lab = np.zeros((n, H, W), dtype=np.uint8)
    Y = lambda f: top + f * L  # noqa: E731
    r_limb = _col(z["limb_r"]) * L
    sw, hw = _col(z["shoulder"]) * L, _col(z["hip"]) * L
    leg = _col(z["leg_len"])
    head_y, head_r = Y(0.085), 0.062 * L

    def paint(mask, value):
        lab[mask] = value

    # long hair behind the shoulders
    paint(z["long_hair"][:, None, None] & (np.abs(px - cx) < 0.09 * L) & (py > head_y) & (py < Y(0.3)), 2)
    # legs: hip -> knee -> ankle (person's left leg at image right)
    joints = {}
    for side, sgn, lid, sid in (("l", 1, 7, 10), ("r", -1, 8, 11)):
        hx, hy = cx + sgn * hw * 0.6, Y(0.50)
        a, k = _col(z[f"leg_{side}"]), _col(z[f"knee_{side}"])
        thigh, shin = 0.22 * L * leg, 0.22 * L * leg
        kx, ky = hx + sgn * np.sin(a) * thigh, hy + np.cos(a) * thigh
        ax_, ay = kx + sgn * np.sin(a + k) * shin, ky + np.cos(a + k) * shin
        joints[side] = (hx, hy, kx, ky, ax_, ay)
        paint((_seg_dist(px, py, hx, hy, kx, ky) < r_limb * 1.15) | (_seg_dist(px, py, kx, ky, ax_, ay) < r_limb), lid)
        paint(_seg_dist(px, py, ax_, ay, ax_ + sgn * 0.05 * L, ay + 0.015 * L) < 0.028 * L, sid)
    # pants (over the legs down to a random length) or a dress (a trapezoid from the waist)
    dress = z["dress"][:, None, None]
    pl = _col(z["pants_len"])
    pants = np.zeros_like(lab, dtype=bool)
    for side in ("l", "r"):
        hx, hy, kx, ky, ax_, ay = joints[side]
        ex, ey = hx + (ax_ - hx) * pl, hy + (ay - hy) * pl
        pants |= _seg_dist(px, py, hx, hy, ex, ey) < r_limb * 1.3
    pants |= (np.abs(px - cx) < hw * 1.4) & (py > Y(0.45)) & (py < Y(0.56))
    paint(pants & ~dress, 6)
    hem = Y(0.62 + 0.2 * pl)
    frac = np.clip((py - Y(0.42)) / np.maximum(hem - Y(0.42), 1e-6), 0, 1)
    paint(dress & (py > Y(0.42)) & (py < hem) & (np.abs(px - cx) < hw * 1.3 + frac * 0.12 * L), 9)
    # torso (upper clothes)
    torso_w = sw * 0.9 + (hw * 1.3 - sw * 0.9) * np.clip((py - Y(0.18)) / (0.3 * L), 0, 1)
    paint((py > Y(0.17)) & (py < Y(0.48)) & (np.abs(px - cx) < torso_w), 3)
    # arms shoulder -> elbow -> wrist, then the sleeves (upper clothes) over the upper arm
    sl = _col(z["sleeve"])
    for side, sgn, aid in (("l", 1, 4), ("r", -1, 5)):
        sx, sy = cx + sgn * sw, Y(0.2)
        a, e = _col(z[f"arm_{side}"]), _col(z[f"elbow_{side}"])
        ua, fa = 0.16 * L, 0.15 * L
        ex, ey = sx + sgn * np.sin(a) * ua, sy + np.cos(a) * ua
        wx, wy = ex + sgn * np.sin(a + e) * fa, ey + np.cos(a + e) * fa
        paint((_seg_dist(px, py, sx, sy, ex, ey) < r_limb * 0.9) | (_seg_dist(px, py, ex, ey, wx, wy) < r_limb * 0.8),
              aid)
        mx, my = sx + (ex - sx) * sl, sy + (ey - sy) * sl
        paint(_seg_dist(px, py, sx, sy, mx, my) < r_limb * 1.1, 3)
    # face, then the hair cap
    paint(((px - cx) / (head_r * 0.85)) ** 2 + ((py - head_y) / head_r) ** 2 < 1, 1)
    paint((((px - cx) / (head_r * 0.95)) ** 2 + ((py - head_y + 0.02 * L) / (head_r * 0.9)) ** 2 < 1)
          & (py < head_y - 0.025 * L), 2)
    # colours
    img = _background(z, H, W)
    cols = np.zeros((n, 12, 3))
    cols[:, [1, 4, 5, 7, 8]] = np.clip(z["skin"], 0, 1)[:, None]
    cols[:, 2], cols[:, 3], cols[:, 6] = z["hair_c"], z["upper_c"], z["lower_c"]
    cols[:, 9], cols[:, 10], cols[:, 11] = z["dress_c"], z["shoe_c"], z["shoe_c"]
    person = np.take_along_axis(cols, lab.reshape(n, -1, 1).astype(np.int64), 1).reshape(n, H, W, 3).transpose(0, 3, 1, 2)
    stripe = 0.75 + 0.25 * np.sign(np.sin(py / H * _col(z["stripe_f"]) * 6.28 / 4 + _col(z["stripe_p"])))
    shade = np.where(z["stripes"][:, None, None] & (lab == 3), stripe, 1.0)
    shade = shade * (1 - 0.15 * np.abs(px - cx) / np.maximum(sw * 2, 1))          # a little roundness
    fg = (lab > 0)[:, None]
    img = np.where(fg, person * shade[:, None], img)
    return img.astype(np.float32), lab


def _box_blur_h(img: np.ndarray, k: int) -> np.ndarray:
    pad = np.pad(img, ((0, 0), (0, 0), (0, 0), (k // 2, k - 1 - k // 2)), mode="edge")
    return np.mean([pad[..., i:i + img.shape[-1]] for i in range(k)], axis=0)


def _down_up(img: np.ndarray, f: int) -> np.ndarray:
    n, c, H, W = img.shape
    Hp, Wp = -(-H // f) * f, -(-W // f) * f
    pad = np.pad(img, ((0, 0), (0, 0), (0, Hp - H), (0, Wp - W)), mode="edge")
    small = pad.reshape(n, c, Hp // f, f, Wp // f, f).mean((3, 5))
    # bilinear-ish upsampling: nearest then a 3-tap smoothing in both directions
    up = small.repeat(f, 2).repeat(f, 3)[:, :, :H, :W]
    up = _box_blur_h(up, 3)
    return _box_blur_h(up.transpose(0, 1, 3, 2), 3).transpose(0, 1, 3, 2)


def apply_shift(img: np.ndarray, lab: np.ndarray, z: dict, domain: str, rng: np.random.Generator,
                strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The target domain's appearance shift (labels change only where an occluder hides the body)."""
    n, _, H, W = img.shape
    s = strength
    py, px = np.mgrid[0:H, 0:W]
    if domain == "indoor":
        occ = rng.random(n) < 0.6
        ty = ((H - _col(z["height"]) * H) / 2 + _col(z["cy"]) * H + rng.uniform(0.55, 0.75, (n, 1, 1)) * _col(z["height"]) * H)
        table = occ[:, None, None] & (py[None] > ty)
        wood = np.array([0.45, 0.28, 0.12])[None, :, None, None] * (0.85 + 0.15 * np.sin(px[None, None] * 1.3))
        img = np.where(table[:, None], wood, img)
        lab = np.where(table, 0, lab).astype(np.uint8)
        f = 3 if s >= 0.5 else 2
        img = _down_up(img, f) * s + img * (1 - s)
        img = img * (1 + s * np.array([0.15, 0.0, -0.25]))[None, :, None, None] + 0.05 * s
    elif domain == "outdoor":
        img = _box_blur_h(img, 1 + 2 * max(1, round(2 * s)))
        img = 0.5 + (img - 0.5) * (1 - 0.5 * s)
        img = img + rng.normal(0, 0.08 * s, img.shape)
    elif domain == "movie":
        img = np.clip(img, 0, 1) ** (1 + 0.8 * s)
        lum = img.mean(1, keepdims=True)
        teal, orange = np.array([0.0, 0.12, 0.15]), np.array([0.18, 0.06, -0.1])
        img = img + s * ((1 - lum) * teal[None, :, None, None] + lum * orange[None, :, None, None])
        r2 = ((py - H / 2) / (H / 2)) ** 2 + ((px - W / 2) / (W / 2)) ** 2
        img = img * (1 - 0.45 * s * np.clip(r2 / 2, 0, 1))[None, None]
    elif domain == "runway":
        fg = (lab > 0)[:, None]
        img = np.where(fg, img * (1 - 0.35 * s), img * (1 - 0.7 * s) + 0.7 * s)
    return np.clip(img, 0, 1).astype(np.float32), lab


def make_split(domain: str, split: str, n: int, H: int, W: int, seed: int, strength: float = 1.0,
               chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and labels of ``domain`` (``source`` or a target) for ``split``; deterministic."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown ProcParse domain {domain!r}; valid: {', '.join(DOMAINS)}")
    imgs, labs = [], []
    for i, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng(derive_seed(seed, "procparse", domain, split, i))
        z = sample_bodies(min(chunk, n - start), rng, domain, strength)
        img, lab = render_bodies(z, H, W)
        if domain != "source":
            img, lab = apply_shift(img, lab, z, domain, rng, strength)
        imgs.append(img)
        labs.append(lab)
    if not imgs:
        return np.zeros((0, 3, H, W), np.float32), np.zeros((0, H, W), np.uint8)
    return np.concatenate(imgs), np.concatenate(labs)


def colorize(lab: np.ndarray) -> np.ndarray:
    """Label map (..., H, W) -> RGB float (..., 3, H, W) in [0, 1] with PALETTE (255 -> white)."""
    lab = np.asarray(lab).astype(np.int64)
    rgb = np.where((lab == 255)[..., None], 255, PALETTE[np.clip(lab, 0, 11)])
    return np.moveaxis(rgb, -1, -3).astype(np.float32) / 255.0
