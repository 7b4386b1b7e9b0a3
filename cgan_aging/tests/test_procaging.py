"""ProcAging: determinism, batch independence, ground-truth consistency (same person, only the
age-dependent features change), the aging parameters act only through age, the longitudinal share
and its adjacency, disjoint splits."""

import numpy as np

from cgan_aging import procaging as pa


def _people(n=8, seed=3):
    return pa.sample_people(n, np.random.default_rng(seed))


def test_deterministic_and_batch_independent():
    z, a = _people()
    ages = np.linspace(0, 1, 8)
    x = pa.render(z, a, ages, 16)
    assert x.dtype == np.float32 and x.shape == (8, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(x, pa.render(z, a, ages, 16))
    assert np.allclose(pa.render(z[3:4], a[3:4], ages[3:4], 16)[0], x[3], atol=1e-6)
    s1, s2 = pa.make_split(30, 5, 16, seed=5, split="train"), pa.make_split(30, 5, 16, seed=5, split="train")
    assert np.array_equal(s1["images"], s2["images"]) and np.array_equal(s1["person"], s2["person"])


def test_ground_truth_consistency_only_age_features_change():
    z, a = _people(12)
    prog = pa.true_progression(z, a, 5, 32)                              # (N, K, 3, S, S)
    for k in range(1, 5):
        assert np.abs(prog[:, k] - prog[:, k - 1]).mean() > 0.003       # every step of age is visible
    corner = prog[:, :, :, 0, 0]                                         # background: identity only
    assert np.abs(corner - corner[:, :1]).max() < 5e-3                   # (soft edges leak a little)
    # the truth at group k is the render at the group's centre, and groups are equal bins
    assert np.array_equal(prog[:, 2], pa.render(z, a, 0.5, 32))
    assert pa.group_of(np.array([0.0, 0.19, 0.2, 0.99, 1.0]), 5).tolist() == [0, 0, 1, 4, 4]


def test_aging_parameters_act_only_through_age():
    z, a = _people(10)
    a2 = np.random.default_rng(9).random(a.shape)
    assert np.array_equal(pa.render(z, a, 0.0, 32), pa.render(z, a2, 0.0, 32))   # newborns age alike
    assert np.abs(pa.render(z, a, 0.9, 32) - pa.render(z, a2, 0.9, 32)).mean() > 0.005
    for j in range(pa.NUM_AGING):                                        # each parameter is visible when old
        b = a.copy()
        b[:, j] = np.where(a[:, j] > 0.5, 0.05, 0.95)
        assert np.abs(pa.render(z, a, 0.95, 32) - pa.render(z, b, 0.95, 32)).max() > 0.05, pa.AGING_PARAMS[j]
    # hair lightness carries the greying onset (a young-face cue): positive correlation
    z, a = _people(2000, seed=1)
    assert np.corrcoef(z[:, 8:11].mean(1), a[:, 1])[0, 1] > 0.5


def test_longitudinal_share_and_adjacency():
    s = pa.make_split(1000, 5, 8, seed=2, split="train")
    counts = np.bincount(s["person"])
    assert 0.33 < (counts >= 2).mean() < 0.47                             # ~40 % have >= 2 images
    for p in np.flatnonzero(counts >= 2)[:200]:
        g = np.sort(s["group"][s["person"] == p])
        assert (np.diff(g) == 1).all()                                    # consecutive groups, one image each
    assert np.array_equal(s["group"], pa.group_of(s["age"], 5))
    t = pa.make_split(100, 5, 8, seed=2, split="test")
    assert len(t["person"]) == 100 and (np.bincount(t["person"]) == 1).all()
    assert not np.isclose(s["z"][:, None, :], t["z"][None]).all(-1).any()   # disjoint identities


def test_validation_identities_are_disjoint_from_train_and_test():
    """The LR is chosen on the validation identities; the claims read the test identities: no person is in two
    splits (independent keyed streams of the world seed), and the sizes come from data.num_val / num_test."""
    from pathlib import Path

    from cgan_aging.config import Cfg
    from cgan_aging.data import procaging_split
    from reprokit.config import load_config

    cfg = load_config(Cfg, str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"),
                      ["data.num_val=40", "data.num_test=50", "data.num_train=60"])
    sp = {k: procaging_split(cfg, k) for k in ("train", "val", "test")}
    assert len(sp["val"]["z"]) == 40 and len(sp["test"]["z"]) == 50
    assert (np.bincount(sp["val"]["person"]) == 1).all()                      # one input per validation person
    for a, b in (("val", "test"), ("val", "train"), ("train", "test")):
        assert not np.isclose(sp[a]["z"][:, None, :], sp[b]["z"][None]).all(-1).any(), (a, b)
