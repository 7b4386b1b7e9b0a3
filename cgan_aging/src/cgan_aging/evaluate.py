"""Evaluation of a frozen aging generator on ProcAging (notes §3.4, §6.3); never imports train.py.

Frozen evaluators, trained on *real* renders of a world derived from ``eval.seed`` (people the
generator never saw), each with a floor on held-out renders checked before its metric is trusted
(``floors`` in the output, ``*_trusted`` flags), cached under a folder (``cache_dir``) by a key of
the settings they depend on, each saved with its tensor digest (``state_dict_sha256`` of
``reprokit.metrics.feature_net``: a bit-identical retrain compares equal). All are ``EvalNet``s
(a small CNN with a flattened, position-keeping head):

* ``group``: age-group classifier (accuracy floor; trained and checked on ages in the middle 60 % of
  each group, since generated faces target group centres); its penultimate features are the FID* net;
* ``age``: age regressor (MAE floor, age in [0, 1]);
* ``identity``: identity embedding (a classifier over training people at all ages; features,
  L2-normalised) with a cross-age verification AUC floor on held-out people;
* ``params``: aging-parameter regressor from a progression (the K group images stacked on channels),
  MAE floor; chance (predicting 0.5) is ~0.25.

Metrics of the ``eval.max_images`` test inputs aged into every other group k (targets k != own):
``age_acc`` / ``age_mae`` (target group and centre age), ``gt_l1`` (pixel L1 to the true render of
the same person at k with the input's nuisance), ``gt_feat`` (L2 distance of FID*-net features to the
true render), ``param_mae`` (the regressor on the *generated* progression G(x, 0..K-1) against the
person's true aging parameters; ``param_mae_true`` on the true progression for reference),
``monotone_frac`` (share of people whose predicted age increases strictly along G(x, 0..K-1)),
``id_cos`` (embedding cosine of input and output) and ``id_auc`` (verification AUC of outputs
against true renders of the same / another person), per-group ``fid`` / ``kid`` (FID*/KID*:
non-standard features, labelled so), and the cross-age verification gain: an identity embedding
trained on *young* images (groups 0-1) of ``eval.verif_people`` people, without (``verif_auc_none``)
and with (``verif_auc_aug``) the generator's older versions of them (groups 2..K-1), tested on real
old-vs-young renders of held-out people (AUC).

LR selection (``validate``) uses the separate *validation* identities (``data.num_val``, disjoint from
training and test): ``val_gt_l1`` (the selection metric) and ``val_age_acc``; no claim reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.claims import floor_check
from reprokit.metrics.feature_net import state_dict_sha256, train_classifier
from reprokit.metrics.fid import fid_from_features, kid_from_features
from reprokit.rng import derive_seed

from . import procaging as pa
from .config import Cfg
from .data import procaging_split

EVALUATORS = ("group", "age", "identity", "params")
EVALUATOR_VERSION = f"evalnet-1/procaging-{pa.RENDER_VERSION}"   # part of the cache key: bump on any change


# ------------------------------------------------------------------------------------------ helpers

class EvalNet(nn.Module):
    """Evaluator CNN that keeps *where* things are (a flattened 4x4 map, not a global average: jaw-sag
    direction and wrinkle-row height are positions): conv 3x3 w, 3 x (conv 3x3 stride 2, width 2w),
    flatten -> ``feat_dim`` ReLU features (:meth:`features`, the FID* features) -> linear outputs."""

    def __init__(self, in_channels: int, num_outputs: int, image_size: int, feat_dim: int = 128, width: int = 32):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_outputs": num_outputs, "image_size": image_size,
                       "feat_dim": feat_dim, "width": width}
        layers, ch, size = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()], width, image_size
        while size > 4:
            layers += [nn.Conv2d(ch, 2 * width, 3, stride=2, padding=1), nn.ReLU()]
            ch, size = 2 * width, (size + 1) // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.proj = nn.Linear(ch * size * size, feat_dim)
        self.head = nn.Linear(feat_dim, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.proj(self.body(x)))                                # (B, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def save_evaluator(net: EvalNet, path: Path) -> str:
    """safetensors (architecture in the metadata); returns the tensors' digest (the network's identity)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={"config": json.dumps(net.config)})
    tmp.replace(path)
    return state_dict_sha256(sd)


def load_evaluator(path: Path, expected_sha256: str) -> EvalNet:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from reprokit.errors import DataError

    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {})["config"])
        sd = load_file(str(path))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable cached evaluator ({e}); delete the folder to retrain it") from e
    if state_dict_sha256(sd) != expected_sha256:
        raise DataError(f"{path}: cached evaluator digest differs from evaluators.json; delete the folder to retrain")
    net = EvalNet(**config)
    net.load_state_dict(sd)
    return net.eval()


@torch.no_grad()
def _batched(fn, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):                      # average ranks of ties
        m = allv == v
        ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_regressor(net: nn.Module, x: torch.Tensor, t: torch.Tensor, epochs: int, seed: int,
                  bs: int = 64, lr: float = 2e-3) -> None:
    """AdamW + MSE (cosine LR) on targets ``t`` (N, D); deterministic shuffles from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    total = max(1, epochs * ((n + bs - 1) // bs))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = F.mse_loss(net(x[idx]), t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def _world(cfg: Cfg, n: int, key: str):
    rng = np.random.default_rng(derive_seed(cfg.eval.seed, "evaluator", key))
    z, a = pa.sample_people(n, rng)
    return z, a, rng


def _renders(cfg: Cfg, n: int, key: str, core: bool = False):
    """n people at uniform ages with nuisance: (images, age, group, z, a). ``core``: ages uniform in
    the middle 60 % of a uniformly drawn group (the group classifier judges faces aged to group
    centres, so it is trained and floor-checked away from the ambiguous group boundaries)."""
    K, S = cfg.model.num_groups, cfg.model.image_size
    z, a, rng = _world(cfg, n, key)
    age = rng.random(n)
    if core:
        age = (rng.integers(0, K, n) + 0.2 + 0.6 * age) / K
    nz = pa.sample_nuisance(n, rng, cfg.data.nuisance)
    x = pa.render(z, a, age, S, nz)
    return torch.from_numpy(x), torch.from_numpy(age).float(), torch.from_numpy(pa.group_of(age, K)), z, a


def _progressions(cfg: Cfg, n: int, key: str):
    K, S = cfg.model.num_groups, cfg.model.image_size
    z, a, rng = _world(cfg, n, key)
    nz = pa.sample_nuisance(n, rng, cfg.data.nuisance)
    prog = pa.true_progression(z, a, K, S, nz)                                   # (n, K, 3, S, S)
    return torch.from_numpy(prog.reshape(n, K * 3, S, S)), torch.from_numpy(a).float()


def _identity_set(cfg: Cfg, people: int, per: int, key: str, ages=(0.0, 1.0)):
    """``per`` renders of each of ``people`` people at uniform ages in ``ages``: (x, label, z, a)."""
    S = cfg.model.image_size
    z, a, rng = _world(cfg, people, key)
    lab = np.repeat(np.arange(people), per)
    age = ages[0] + (ages[1] - ages[0]) * rng.random(len(lab))
    nz = pa.sample_nuisance(len(lab), rng, cfg.data.nuisance)
    return torch.from_numpy(pa.render(z[lab], a[lab], age, S, nz)), torch.from_numpy(lab), z, a


def embed(net: nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    return F.normalize(_batched(net.features, x, bs), dim=1)


def cross_age_auc(net: nn.Module, young: torch.Tensor, old: torch.Tensor, bs: int) -> float:
    """young[i] and old[i] are one person: positives (i, i), negatives (i, i + 1 mod n)."""
    ey, eo = embed(net, young, bs), embed(net, old, bs)
    pos = (ey * eo).sum(1).numpy()
    neg = (ey * eo.roll(1, 0)).sum(1).numpy()
    return auc(pos, neg)


def _young_old_pairs(cfg: Cfg, n: int, key: str):
    """Held-out people rendered young (groups 0-1) and old (the last two groups)."""
    K, S = cfg.model.num_groups, cfg.model.image_size
    z, a, rng = _world(cfg, n, key)
    y_age = rng.random(n) * 2 / K
    o_age = 1 - rng.random(n) * 2 / K
    nz1, nz2 = pa.sample_nuisance(n, rng, cfg.data.nuisance), pa.sample_nuisance(n, rng, cfg.data.nuisance)
    return torch.from_numpy(pa.render(z, a, y_age, S, nz1)), torch.from_numpy(pa.render(z, a, o_age, S, nz2))


# ---------------------------------------------------------------------------------------- evaluators

def evaluator_key(cfg: Cfg) -> str:
    d = {"version": EVALUATOR_VERSION, "S": cfg.model.image_size, "K": cfg.model.num_groups, "nuisance": cfg.data.nuisance,
         **{k: getattr(cfg.eval, k) for k in ("seed", "evaluator_train", "evaluator_epochs", "verif_people",
                                              "verif_epochs", "floor_group_acc", "floor_age_mae", "floor_id_auc",
                                              "floor_param_mae")}}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def train_evaluators(cfg: Cfg) -> dict:
    """The four frozen evaluators, their floors on held-out renders, and the no-augmentation
    cross-age verification reference (it does not depend on the generator)."""
    e, K, S = cfg.eval, cfg.model.num_groups, cfg.model.image_size
    n, nv = e.evaluator_train, max(64, e.evaluator_train // 4)
    out: dict = {"nets": {}, "floors": {}}

    def net(name, cin, nout):
        torch.manual_seed(derive_seed(e.seed, "init", name))
        return EvalNet(cin, nout, S)

    x, age, grp, _, _ = _renders(cfg, n, "group-train", core=True)
    xv, agev, grpv, _, _ = _renders(cfg, nv, "group-val", core=True)
    g = net("group", 3, K)
    rep = train_classifier(g, x, grp, epochs=e.evaluator_epochs, batch_size=64,
                           seed=derive_seed(e.seed, "shuffle", "group"), val=(xv, grpv))
    out["nets"]["group"] = g
    out["floors"]["group"] = floor_check("age_group_classifier_acc", rep["test_accuracy"], e.floor_group_acc)
    x, age, _, _, _ = _renders(cfg, n, "age-train")
    xv, agev, _, _, _ = _renders(cfg, nv, "age-val")
    r = net("age", 3, 1)
    fit_regressor(r, x, age[:, None], e.evaluator_epochs, derive_seed(e.seed, "shuffle", "age"))
    mae = float((_batched(r, xv, e.batch_size)[:, 0] - agev).abs().mean())
    out["nets"]["age"] = r
    out["floors"]["age"] = floor_check("age_regressor_mae", mae, e.floor_age_mae, higher_is_better=False)
    people = max(16, n // 8)
    xi, li, _, _ = _identity_set(cfg, people, 8, "identity-train")
    idn = net("identity", 3, people)
    train_classifier(idn, xi, li, epochs=e.evaluator_epochs, batch_size=64, seed=derive_seed(e.seed, "shuffle", "id"))
    young, old = _young_old_pairs(cfg, max(64, nv // 2), "identity-val")
    out["nets"]["identity"] = idn
    out["floors"]["identity"] = floor_check("identity_embedding_cross_age_auc", cross_age_auc(idn, young, old, 256),
                                            e.floor_id_auc)
    xp, ap = _progressions(cfg, max(64, n // 2), "params-train")
    xpv, apv = _progressions(cfg, max(64, nv // 2), "params-val")
    pr = net("params", 3 * K, pa.NUM_AGING)
    fit_regressor(pr, xp, ap, 2 * e.evaluator_epochs, derive_seed(e.seed, "shuffle", "params"))
    pmae = float((_batched(pr, xpv, e.batch_size) - apv).abs().mean())
    out["nets"]["params"] = pr
    out["floors"]["params"] = floor_check("aging_param_regressor_mae", pmae, e.floor_param_mae, higher_is_better=False)
    out["param_mae_val_per_param"] = dict(zip(pa.AGING_PARAMS, (_batched(pr, xpv, e.batch_size) - apv).abs().mean(0).tolist()))
    out["verif_auc_none"] = verification_auc(cfg, None)
    return out


def get_evaluators(cfg: Cfg, cache_dir: str | Path | None) -> dict:
    """Train the evaluators once per key and cache them (safetensors + digests + floors) in ``cache_dir``."""
    if cache_dir is None:
        return train_evaluators(cfg)
    from reprokit.runs import exclusive

    folder = Path(cache_dir) / evaluator_key(cfg)
    meta_path = folder / "evaluators.json"
    with exclusive(Path(cache_dir) / f"{evaluator_key(cfg)}.lock", "the frozen evaluators"):
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            nets = {k: load_evaluator(folder / f"{k}.safetensors", meta["sha256"][k]) for k in EVALUATORS}
            return {"nets": nets, "floors": meta["floors"], "verif_auc_none": meta["verif_auc_none"],
                    "sha256": meta["sha256"]}
        ev = train_evaluators(cfg)
        ev["sha256"] = {k: save_evaluator(ev["nets"][k], folder / f"{k}.safetensors") for k in EVALUATORS}
        meta_path.write_text(json.dumps({"floors": ev["floors"], "verif_auc_none": ev["verif_auc_none"],
                                         "sha256": ev["sha256"]}, indent=1) + "\n")
    return ev


# ------------------------------------------------------------------------------------------- metrics

def verification_auc(cfg: Cfg, run) -> float:
    """Identity embedding trained on young images of ``verif_people`` people (+ the generator's
    older versions when ``run`` is given), tested on real young-vs-old renders of held-out people."""
    e, K = cfg.eval, cfg.model.num_groups
    x, lab, _, _ = _identity_set(cfg, e.verif_people, 4, "verif-train", ages=(0.0, 2 / K - 1e-6))
    if run is not None:
        first = x[::4]                                                        # one young image per person
        gen = [_batched(lambda b, k=k: run.age(b, torch.full((b.shape[0],), k)), first, e.batch_size)
               for k in range(2, K)]
        x = torch.cat([x, *gen])
        lab = torch.cat([lab, *[torch.arange(e.verif_people)] * (K - 2)])
    torch.manual_seed(derive_seed(e.seed, "init", "verif"))
    net = EvalNet(3, e.verif_people, cfg.model.image_size, feat_dim=64, width=16)
    train_classifier(net, x, lab, epochs=e.verif_epochs, batch_size=64, seed=derive_seed(e.seed, "shuffle", "verif"))
    young, old = _young_old_pairs(cfg, 200, "verif-test")
    return cross_age_auc(net, young, old, e.batch_size)


def progressions(run, cfg: Cfg, split: str = "test") -> dict:
    """G(x, k) for every input of ``split`` (``test``: the first ``eval.max_images``; ``val``: all
    ``data.num_val``) and every group, with the true renders: (n, K, 3, S, S) each."""
    K, S, bs = cfg.model.num_groups, cfg.model.image_size, cfg.eval.batch_size
    s = procaging_split(cfg, split)
    n = len(s["person"]) if split == "val" else min(cfg.eval.max_images, len(s["person"]))
    x = torch.from_numpy(s["images"][:n])
    p = s["person"][:n]
    fake = torch.stack([_batched(lambda b, k=k: run.age(b, torch.full((b.shape[0],), k)), x, bs)
                        for k in range(K)], 1)
    true = torch.from_numpy(pa.true_progression(s["z"][p], s["a"][p], K, S, s["nuisance"][:n]))
    return {"x": x, "group": torch.from_numpy(s["group"][:n]), "fake": fake, "true": true,
            "a": torch.from_numpy(s["a"][p]).float(), "n": n}


def validate(run, cfg: Cfg, evaluators: dict | None = None, cache_dir=None) -> dict:
    """The LR-selection metrics on the ``data.num_val`` *validation* identities (never used by a claim):
    ``val_gt_l1``, the ground-truth pixel L1 of every input aged into every other group (the selection
    metric, lower is better: it needs the right group *and* the person's own aging), and ``val_age_acc``
    (target-group accuracy under the frozen classifier, reported beside it)."""
    K, bs = cfg.model.num_groups, cfg.eval.batch_size
    ev = evaluators or get_evaluators(cfg, cache_dir)
    t = progressions(run, cfg, "val")
    n = t["n"]
    tgt_mask = torch.arange(K)[None].expand(n, K) != t["group"][:, None]            # (n, K) k != own group
    kk = torch.arange(K)[None].expand(n, K)[tgt_mask]
    fake, true = t["fake"][tgt_mask], t["true"][tgt_mask]
    pred = _batched(ev["nets"]["group"], fake, bs).argmax(1)
    return {"val_gt_l1": float((fake - true).abs().mean()), "val_age_acc": float((pred == kk).float().mean()),
            "n_val_inputs": n}


def evaluate(run, cfg: Cfg, grid_path=None, evaluators: dict | None = None, cache_dir=None) -> dict:
    """All metrics of a loaded run (``train.LoadedRun``) on ProcAging; user data: ``evaluate_real``."""
    if cfg.data.source != "procaging":
        return evaluate_real(run, cfg)
    K, S, bs = cfg.model.num_groups, cfg.model.image_size, cfg.eval.batch_size
    ev = evaluators or get_evaluators(cfg, cache_dir)
    nets, floors = ev["nets"], ev["floors"]
    t = progressions(run, cfg)
    n = t["n"]
    tgt_mask = torch.arange(K)[None].expand(n, K) != t["group"][:, None]            # (n, K) k != own group
    kk = torch.arange(K)[None].expand(n, K)[tgt_mask]                               # (M,)
    fake, true = t["fake"][tgt_mask], t["true"][tgt_mask]                           # (M, 3, S, S)
    pred_group = _batched(nets["group"], fake, bs).argmax(1)
    pred_age_all = _batched(nets["age"], t["fake"].reshape(n * K, 3, S, S), bs)[:, 0].reshape(n, K)
    centre = torch.from_numpy(pa.group_centre(np.arange(K), K)).float()
    f_fake, f_true = _batched(nets["group"].features, fake, bs), _batched(nets["group"].features, true, bs)
    p_fake = _batched(nets["params"], t["fake"].reshape(n, K * 3, S, S), bs)
    p_true = _batched(nets["params"], t["true"].reshape(n, K * 3, S, S), bs)
    e_in = embed(nets["identity"], t["x"], bs)
    e_fake = embed(nets["identity"], t["fake"].reshape(n * K, 3, S, S), bs).reshape(n, K, -1)
    e_true = embed(nets["identity"], t["true"].reshape(n * K, 3, S, S), bs).reshape(n, K, -1)
    same = (e_fake * e_true).sum(-1)[tgt_mask].numpy()
    other = (e_fake * e_true.roll(1, 0)).sum(-1)[tgt_mask].numpy()
    fids, kids = [], []
    real_f = _batched(nets["group"].features, t["true"].reshape(n * K, 3, S, S), bs).reshape(n, K, -1)
    for k in range(K):
        a_, b_ = real_f[:, k].numpy(), f_fake[(kk == k)].numpy()
        if len(a_) >= 2 and len(b_) >= 2:
            fids.append(fid_from_features(a_, b_))
            m = min(len(a_), len(b_))
            kids.append(kid_from_features(a_, b_, num_subsets=20, subset_size=m, seed=cfg.eval.seed)[0])
    diffs = pred_age_all[:, 1:] - pred_age_all[:, :-1]
    aug = verification_auc(cfg, run)
    res = {
        "age_acc": float((pred_group == kk).float().mean()),
        "age_mae": float((pred_age_all[tgt_mask] - centre[kk]).abs().mean()),
        "gt_l1": float((fake - true).abs().mean()),
        "gt_feat": float((f_fake - f_true).norm(dim=1).mean() / f_true.norm(dim=1).mean().clamp(min=1e-8)),
        "param_mae": float((p_fake - t["a"]).abs().mean()),
        "param_mae_per_param": {k: float(v) for k, v in zip(pa.AGING_PARAMS, (p_fake - t["a"]).abs().mean(0))},
        "param_mae_true": float((p_true - t["a"]).abs().mean()),
        "monotone_frac": float((diffs > 0).all(1).float().mean()),
        "age_inversions": float((diffs <= 0).float().sum(1).mean()),
        "id_cos": float((e_fake * e_in[:, None]).sum(-1)[tgt_mask].mean()),
        "id_auc": auc(same, other),
        "fid": float(np.mean(fids)) if fids else None, "kid": float(np.mean(kids)) if kids else None,
        "fid_per_group": [float(v) for v in fids], "kid_per_group": [float(v) for v in kids],
        "verif_auc_aug": aug, "verif_auc_none": ev["verif_auc_none"], "verif_gain": aug - ev["verif_auc_none"],
        "n_inputs": n, "n_targets": int(tgt_mask.sum()),
        "floors": [floors[k] for k in EVALUATORS],
        "age_trusted": floors["group"]["ok"] and floors["age"]["ok"],
        "param_trusted": floors["params"]["ok"], "id_trusted": floors["identity"]["ok"],
        "evaluator_sha256": ev.get("sha256"),
    }
    if grid_path is not None:
        save_grid(t, cfg, grid_path)
    return res


def save_grid(t: dict, cfg: Cfg, path) -> None:
    """One row per test identity: the input, G(x, 0..K-1), a blank, the true renders 0..K-1."""
    from reprokit.plots import save_image_grid

    K, S = cfg.model.num_groups, cfg.model.image_size
    rows = []
    for i in range(min(cfg.eval.grid_people, t["n"])):
        rows += [t["x"][i:i + 1], t["fake"][i], torch.full((1, 3, S, S), 1.0), t["true"][i]]
    save_image_grid(torch.cat(rows), path, nrow=2 * K + 2)


def grid_for_run(run, cfg: Cfg, path) -> None:
    save_grid(progressions(run, cfg), cfg, path)


def evaluate_real(run, cfg: Cfg) -> dict:
    """User data (no ground truth): target-group accuracy under a classifier trained on the
    even-indexed images (floor-checked on the odd ones) and FID* per group, on the odd-indexed images
    aged into every other group."""
    from .data import load_train

    K, e, bs = cfg.model.num_groups, cfg.eval, cfg.eval.batch_size
    data = load_train(cfg)
    idx = torch.arange(len(data))
    tr, held = idx[idx % 2 == 0], idx[idx % 2 == 1][: e.max_images]
    torch.manual_seed(derive_seed(e.seed, "init", "group-real"))
    net = EvalNet(3, K, cfg.model.image_size)
    rep = train_classifier(net, data.images[tr], data.group[tr], epochs=e.evaluator_epochs, batch_size=64,
                           seed=derive_seed(e.seed, "shuffle", "group-real"),
                           val=(data.images[held], data.group[held]))
    floor = floor_check("age_group_classifier_acc", rep["test_accuracy"], e.floor_group_acc)
    x, g = data.images[held], data.group[held]
    src = torch.tensor([i for i in range(len(g)) for k in range(K) if k != int(g[i])], dtype=torch.long)
    kk = torch.tensor([k for i in range(len(g)) for k in range(K) if k != int(g[i])], dtype=torch.long)
    fake = torch.cat([run.age(x[src[i:i + bs]], kk[i:i + bs]) for i in range(0, len(src), bs)])
    acc = float((_batched(net, fake, bs).argmax(1) == kk).float().mean()) if len(src) else None
    rf, ff = _batched(net.features, data.images, bs).numpy(), _batched(net.features, fake, bs).numpy()
    fids = [fid_from_features(rf[(data.group == k).numpy()], ff[(kk == k).numpy()]) for k in range(K)
            if (data.group == k).sum() >= 2 and (kk == k).sum() >= 2]
    return {"age_acc": acc, "fid": float(np.mean(fids)) if fids else None, "n_inputs": len(held),
            "floors": [floor], "age_trusted": floor["ok"],
            "note": "user data: no ground-truth renders, so no GT error, aging-parameter or verification metrics"}
