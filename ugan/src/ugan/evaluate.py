"""Evaluation of a frozen translator on ProcFace (notes §2.5, §6.2); never imports train.py.

Frozen evaluators, trained on *real* renders from a world seed derived from ``eval.seed`` (so they
never see the translator's training images), each with an accuracy floor on held-out real renders
that is checked before its metric is trusted (``floors`` in the output, ``*_trusted`` flags):

* domain classifier (reprokit.metrics.feature_net.SmallClassifier): target accuracy, and its
  penultimate features give FID*/KID* (non-standard: not Inception features);
* mark detector: 4 classes (no mark / freckles / stubble / spots), trained on renders whose mark type
  is drawn independently of the domain, so it reads the mark and not the domain;
* the tracer's controls (``tracer_controls``): the same tracer recipe on two ideal translators of the test
  sources, built from the renderer: the counterfactual render *with the source's marks* (every trace a
  perfect translator could leave; the tracer must find it: floor ``eval.floor_tracer_control``) and the
  clean counterfactual (no trace; the tracer must stay within 0.1 of chance). A tracer too weak to find the
  marks would report every translator as untraceable, so its tracer accuracy is trusted only with both.

Metrics of the translations of ``eval.max_images`` test sources into every other domain:

* ``tracer_acc``: a fresh classifier trained, after the translator is frozen, on the translations of
  half of the sources to predict the source domain, tested on the other half (chance 1/(K-1));
* ``mark_retention``: fraction of translations from a marked source into a domain with another mark
  type on which the detector still sees the source's mark;
* ``target_acc``; ``cf_l1``: L1 to the counterfactual render (same identity, target domain, no
  marks) outside the source's mark region; ``fid`` / ``kid``: mean over target domains of FID*/KID*
  between translations and real test renders of that domain; ``cycle_l1``: |x - G(G(x,c_t),c_s)|.

LR selection (``validate``) uses the separate *validation* identities (``data.num_val``, disjoint from
training and test): ``val_cf_l1`` (the selection metric) and ``val_target_acc``; no claim reads them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reprokit.claims import floor_check
from reprokit.metrics.feature_net import SmallClassifier, train_classifier
from reprokit.metrics.fid import fid_from_features, kid_from_features
from reprokit.rng import derive_seed

from . import procface as pf
from .config import Cfg
from .data import procface_split


def _renders(cfg: Cfg, n: int, key: str, independent_marks: bool):
    K, S = cfg.model.num_domains, cfg.model.image_size
    rng = np.random.default_rng(derive_seed(cfg.eval.seed, "evaluator", key))
    z = pf.sample_identities(n, rng)
    dom = rng.integers(0, K, n)
    seeds = rng.integers(0, 2**31 - 1, n)
    types = rng.integers(-1, 3, n) if independent_marks else pf.mark_type(dom)
    x = pf.render(z, dom, K, S, marks=True, mark_seeds=seeds, mark_types=types, strength=cfg.data.mark_strength)
    return torch.from_numpy(x), torch.from_numpy(dom), torch.from_numpy(types + 1)


def train_evaluators(cfg: Cfg) -> dict:
    """The frozen domain classifier and mark detector with their held-out real accuracies (floors)."""
    e, K, S = cfg.eval, cfg.model.num_domains, cfg.model.image_size
    n, nv = e.evaluator_train, max(64, e.evaluator_train // 4)
    out = {}
    for name, indep, ncls, floor in (("domain", False, K, e.floor_domain_acc), ("mark", True, 4, e.floor_mark_acc)):
        x, dom, mk = _renders(cfg, n, f"{name}-train", indep)
        xv, domv, mkv = _renders(cfg, nv, f"{name}-val", indep)
        y, yv = (dom, domv) if name == "domain" else (mk, mkv)
        torch.manual_seed(derive_seed(e.seed, "init", name))
        net = SmallClassifier(3, ncls, S, feat_dim=64, width=16)
        rep = train_classifier(net, x, y, epochs=e.evaluator_epochs, batch_size=64,
                               seed=derive_seed(e.seed, "shuffle", name), val=(xv, yv))
        out[name] = net
        out[f"{name}_floor"] = floor_check(f"{name}_classifier_acc", rep["test_accuracy"], floor)
    if cfg.data.source == "procface":
        out.update(tracer_controls(cfg))
    return out


def tracer_controls(cfg: Cfg) -> dict:
    """``tracer_accuracy`` on ideal translations of the test sources (the pairs ``translations`` makes): the
    counterfactual with the source's marks (positive control) and without them (negative control)."""
    K, S = cfg.model.num_domains, cfg.model.image_size
    s = procface_split(cfg, "test")
    n = min(cfg.eval.max_images, len(s["domain"]))
    dom = s["domain"][:n]
    src, tgt = _pairs(dom, K)
    z = s["z"][:n][src]
    marked = pf.render(z, tgt, K, S, marks=True, mark_seeds=s["mark_seeds"][:n][src],
                       mark_types=pf.mark_type(dom[src]), strength=cfg.data.mark_strength)
    clean = pf.render(z, tgt, K, S, marks=False)
    sd, sid = torch.from_numpy(dom[src]), torch.from_numpy(src)
    pos = tracer_accuracy(torch.from_numpy(marked), sd, sid, K, cfg)
    neg = tracer_accuracy(torch.from_numpy(clean), sd, sid, K, cfg)
    return {"tracer_pos_floor": floor_check("tracer_control_marks_kept_acc", pos, cfg.eval.floor_tracer_control),
            "tracer_neg_floor": floor_check("tracer_control_no_trace_acc", neg, round(1 / (K - 1) + 0.1, 4),
                                            higher_is_better=False)}


@torch.no_grad()
def _batched(fn, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def _pairs(dom: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """(source index, target domain) of every source translated into every domain but its own, source-major."""
    n = len(dom)
    src = np.repeat(np.arange(n, dtype=np.int64), K)
    tgt = np.tile(np.arange(K, dtype=np.int64), n)
    keep = tgt != np.repeat(np.asarray(dom, dtype=np.int64), K)
    return src[keep], tgt[keep]


def translations(run, cfg: Cfg, split: str = "test") -> dict:
    """Every source of ``split`` (``test``: up to eval.max_images; ``val``: all data.num_val) translated
    into every other domain."""
    K = cfg.model.num_domains
    s = procface_split(cfg, split)
    n = len(s["domain"]) if split == "val" else min(cfg.eval.max_images, len(s["domain"]))
    x = torch.from_numpy(s["images"][:n])
    dom = torch.from_numpy(s["domain"][:n])
    _, mask = pf.render(s["z"][:n], s["domain"][:n], K, cfg.model.image_size, marks=True,
                        mark_seeds=s["mark_seeds"][:n], strength=cfg.data.mark_strength, return_mask=True)
    src, tgt, fake, rec = _translate_all(run, x, dom, K, cfg.eval.batch_size)
    cf = torch.from_numpy(pf.render(s["z"][:n][src.numpy()], tgt.numpy(), K, cfg.model.image_size, marks=False))
    return {"x": x, "dom": dom, "src": src, "tgt": tgt, "fake": fake, "rec": rec, "cf": cf,
            "mask": torch.from_numpy(mask)[src], "real_test": x, "n": n}


def tracer_accuracy(fake: torch.Tensor, src_dom: torch.Tensor, src_id: torch.Tensor, K: int, cfg: Cfg) -> float:
    """Fresh classifier: translations of the even-numbered sources train it, the odd ones test it."""
    tr, te = src_id % 2 == 0, src_id % 2 == 1
    torch.manual_seed(derive_seed(cfg.eval.seed, "init", "tracer"))
    net = SmallClassifier(3, K, cfg.model.image_size, feat_dim=64, width=16)
    rep = train_classifier(net, fake[tr], src_dom[tr], epochs=cfg.eval.tracer_epochs, batch_size=32,
                           seed=derive_seed(cfg.eval.seed, "shuffle", "tracer"), val=(fake[te], src_dom[te]))
    return float(rep["test_accuracy"])


def evaluate(run, cfg: Cfg, grid_path=None, evaluators: dict | None = None) -> dict:
    """All metrics of a loaded run (``train.LoadedRun``); user data: ``evaluate_real``."""
    K = cfg.model.num_domains
    if cfg.data.source != "procface":
        return evaluate_real(run, cfg)
    ev = evaluators or train_evaluators(cfg)
    t = translations(run, cfg)
    fake, src, tgt, bs = t["fake"], t["src"], t["tgt"], cfg.eval.batch_size
    src_dom = t["dom"][src]
    dom_net, mark_net = ev["domain"], ev["mark"]
    target_acc = float((_batched(dom_net, fake, bs).argmax(1) == tgt).float().mean())
    mk_pred = _batched(mark_net, fake, bs).argmax(1) - 1                  # -1 none, 0..2 mark types
    src_mark, tgt_mark = torch.from_numpy(pf.mark_type(src_dom.numpy())), torch.from_numpy(pf.mark_type(tgt.numpy()))
    sel = (src_mark >= 0) & (tgt_mark != src_mark)
    retention = float((mk_pred[sel] == src_mark[sel]).float().mean()) if sel.any() else float("nan")
    keep = (1 - t["mask"])[:, None]                                       # (M, 1, S, S) outside source marks
    cf_l1 = float(((fake - t["cf"]).abs() * keep).sum() / (keep.sum() * 3))
    cycle = float((t["rec"] - t["x"][src]).abs().mean())
    fids, kids = [], []
    real_f = _batched(dom_net.features, t["real_test"], bs).numpy()
    fake_f = _batched(dom_net.features, fake, bs).numpy()
    for j in range(K):
        a, b = real_f[(t["dom"] == j).numpy()], fake_f[(tgt == j).numpy()]
        if len(a) >= 2 and len(b) >= 2:
            fids.append(fid_from_features(a, b))
            m = min(len(a), len(b))
            kids.append(kid_from_features(a, b, num_subsets=20, subset_size=m, seed=cfg.eval.seed)[0])
    tracer = tracer_accuracy(fake, src_dom, src, K, cfg)
    res = {"tracer_acc": tracer, "tracer_chance": 1 / (K - 1), "mark_retention": retention,
           "target_acc": target_acc, "cf_l1": cf_l1, "cycle_l1": cycle,
           "fid": float(np.mean(fids)) if fids else None, "kid": float(np.mean(kids)) if kids else None,
           "fid_per_domain": [float(v) for v in fids], "n_sources": t["n"], "n_translations": int(len(src)),
           "floors": [ev[k] for k in ("domain_floor", "mark_floor", "tracer_pos_floor", "tracer_neg_floor") if k in ev],
           "target_acc_trusted": ev["domain_floor"]["ok"], "mark_retention_trusted": ev["mark_floor"]["ok"],
           "tracer_trusted": all(ev[k]["ok"] for k in ("tracer_pos_floor", "tracer_neg_floor") if k in ev)}
    if grid_path is not None:
        save_grid(run, cfg, grid_path)
    return res



@torch.no_grad()
def validate(run, cfg: Cfg, evaluators: dict | None = None) -> dict:
    """The LR-selection metrics on the ``data.num_val`` *validation* identities (never read by a claim):
    ``val_cf_l1`` (the selection metric, lower is better): L1 of every translation to its counterfactual
    render (same identity, target domain) outside the source's mark region -- it needs the right domain
    *and* the identity kept, and it neither rewards nor penalises the source marks the trace claims are
    about; ``val_target_acc`` (frozen domain classifier) is reported beside it."""
    ev = evaluators or train_evaluators(cfg)
    t = translations(run, cfg, "val")
    keep = (1 - t["mask"])[:, None]                                       # (M, 1, S, S) outside source marks
    cf_l1 = float(((t["fake"] - t["cf"]).abs() * keep).sum() / (keep.sum() * 3))
    acc = float((_batched(ev["domain"], t["fake"], cfg.eval.batch_size).argmax(1) == t["tgt"]).float().mean())
    return {"val_cf_l1": cf_l1, "val_target_acc": acc, "n_val_sources": t["n"]}


def save_grid(run, cfg: Cfg, path) -> None:
    """Rows: a source then its counterfactuals; columns: the source then every target domain."""
    from reprokit.plots import save_image_grid

    K, S = cfg.model.num_domains, cfg.model.image_size
    s = procface_split(cfg, "test")
    n = min(cfg.eval.grid_sources, len(s["domain"]))
    rows = []
    for i in range(n):
        x = torch.from_numpy(s["images"][i:i + 1]).expand(K, -1, -1, -1)
        c_s = F.one_hot(torch.full((K,), int(s["domain"][i])), K).float()
        fake = run.translate(x, torch.eye(K), c_s)
        cf = torch.from_numpy(pf.render(np.repeat(s["z"][i:i + 1], K, 0), np.arange(K), K, S, marks=False))
        rows += [x[:1], fake, torch.full((1, 3, S, S), -1.0), cf]
    save_image_grid(torch.cat(rows), path, nrow=K + 1)


def _translate_all(run, x: torch.Tensor, dom: torch.Tensor, K: int, bs: int):
    """Every source into every other domain: (src index, target, translation, cycle reconstruction)."""
    src, tgt = (torch.from_numpy(a) for a in _pairs(dom.numpy(), K))
    c_s, c_t = F.one_hot(dom[src], K).float(), F.one_hot(tgt, K).float()
    fake = torch.cat([run.translate(x[src[i:i + bs]], c_t[i:i + bs], c_s[i:i + bs]) for i in range(0, len(src), bs)])
    rec = torch.cat([run.translate(fake[i:i + bs], c_s[i:i + bs], c_t[i:i + bs]) for i in range(0, len(src), bs)])
    return src, tgt, fake, rec


def evaluate_with_validation(run, cfg: Cfg, grid_path=None, evaluators: dict | None = None) -> dict:
    """A ProcFace run's test metrics (:func:`evaluate`) and LR-selection metrics (:func:`validate`) with one set
    of frozen evaluators: what ``reproduce`` records per run and ``ugan evaluate`` writes."""
    ev = evaluators or train_evaluators(cfg)
    return {**evaluate(run, cfg, grid_path=grid_path, evaluators=ev), **validate(run, cfg, evaluators=ev)}


def evaluate_real(run, cfg: Cfg) -> dict:
    """User data (folder / CelebA): no counterfactuals and no marks, so tracer accuracy, target accuracy
    (a domain classifier trained on the even-indexed images, floor-checked on the odd ones), FID*/KID*
    and cycle L1 on translations of odd-indexed images. Single-label data only for the classifiers;
    multi-label data get cycle L1 only."""
    from .data import load_train

    K, e, bs = cfg.model.num_domains, cfg.eval, cfg.eval.batch_size
    data = load_train(cfg)
    idx = torch.arange(len(data))
    held = idx[idx % 2 == 1][: e.max_images]
    x = data.images[held]
    if cfg.data.label_mode == "multi":
        rng = torch.Generator().manual_seed(e.seed)
        c_t = data.labels[held][torch.randperm(len(held), generator=rng)]
        fake = torch.cat([run.translate(x[i:i + bs], c_t[i:i + bs], data.labels[held][i:i + bs])
                          for i in range(0, len(held), bs)])
        rec = torch.cat([run.translate(fake[i:i + bs], data.labels[held][i:i + bs], c_t[i:i + bs])
                         for i in range(0, len(held), bs)])
        return {"cycle_l1": float((rec - x).abs().mean()), "n_sources": len(held),
                "note": "multi-label data: only cycle L1 (no domain of origin to trace)"}
    dom = data.domain[held]
    tr = idx[idx % 2 == 0]
    torch.manual_seed(derive_seed(e.seed, "init", "domain-real"))
    net = SmallClassifier(3, K, cfg.model.image_size, feat_dim=64, width=16)
    rep = train_classifier(net, data.images[tr], data.domain[tr], epochs=e.evaluator_epochs, batch_size=64,
                           seed=derive_seed(e.seed, "shuffle", "domain-real"), val=(x, dom))
    floor = floor_check("domain_classifier_acc", rep["test_accuracy"], e.floor_domain_acc)
    src, tgt, fake, rec = _translate_all(run, x, dom, K, bs)
    real_f, fake_f = _batched(net.features, x, bs).numpy(), _batched(net.features, fake, bs).numpy()
    fids = [fid_from_features(real_f[(dom == j).numpy()], fake_f[(tgt == j).numpy()]) for j in range(K)
            if (dom == j).sum() >= 2 and (tgt == j).sum() >= 2]
    return {"tracer_acc": tracer_accuracy(fake, dom[src], src, K, cfg), "tracer_chance": 1 / (K - 1),
            "target_acc": float((_batched(net, fake, bs).argmax(1) == tgt).float().mean()),
            "fid": float(np.mean(fids)) if fids else None, "cycle_l1": float((rec - x[src]).abs().mean()),
            "n_sources": len(held), "n_translations": len(src), "floors": [floor],
            "target_acc_trusted": floor["ok"], "note": "user data: no counterfactuals or marks"}
