"""ProcFace: determinism, counterfactual consistency, marks only in the source render, disjoint splits."""

import numpy as np

from ugan import procface as pf


def _world(n=12, K=4, size=16, seed=3):
    rng = np.random.default_rng(seed)
    return pf.sample_identities(n, rng), rng.integers(0, K, n), rng.integers(0, 2**31 - 1, n)


def test_deterministic_and_batch_independent():
    z, k, s = _world()
    a = pf.render(z, k, 4, 16, mark_seeds=s)
    b = pf.render(z, k, 4, 16, mark_seeds=s)
    assert a.dtype == np.float32 and a.shape == (12, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, b)
    one = pf.render(z[3:4], k[3:4], 4, 16, mark_seeds=s[3:4])       # the same image rendered alone
    assert np.allclose(one[0], a[3], atol=1e-6)
    split1 = pf.make_split(20, 4, 16, seed=5, split="train")
    split2 = pf.make_split(20, 4, 16, seed=5, split="train")
    assert np.array_equal(split1["images"], split2["images"])


def test_counterfactuals_change_only_the_domain_traits():
    z, _, _ = _world()
    K = 4
    cf = np.stack([pf.render(z, j, K, 32, marks=False) for j in range(K)])   # (K, N, 3, S, S)
    for j in range(1, K):
        assert np.abs(cf[j] - cf[0]).mean() > 0.005      # the domain is visible
    # the background corner is identity-only: the domain moves it by less than the soft edges leak
    assert np.abs(cf[:, :, :, 0, 0] - cf[:1, :, :, 0, 0]).max() < 0.01
    z2 = z.copy()
    z2[:, 11:14] = 1 - z2[:, 11:14]
    assert not np.array_equal(pf.render(z2, 0, K, 32, marks=False)[:, :, 0, 0], cf[0, :, :, 0, 0])


def test_marks_only_in_the_source_render():
    z, _, s = _world(n=16)
    K = 4
    for k in range(K):
        marked, mask = pf.render(z, k, K, 32, marks=True, mark_seeds=s, return_mask=True)
        clean = pf.render(z, k, K, 32, marks=False)
        diff = np.abs(marked - clean).sum(1)                            # (N, S, S)
        if pf.mark_type(k) < 0:
            assert diff.max() == 0 and mask.max() == 0                  # domain 1 has no mark
        else:
            assert mask.sum() > 0 and diff.max() > 0.1
            assert diff[mask < 1e-3].max() < 5e-3                       # changes only inside the (soft) mark mask
            assert (mask < 1e-3).mean() > 0.5
    # marks are instance specific: two mark seeds give different marks on the same face
    a = pf.render(z[:1], 0, K, 32, mark_seeds=np.array([1]))
    b = pf.render(z[:1], 0, K, 32, mark_seeds=np.array([2]))
    assert not np.array_equal(a, b)


def test_train_and_test_identities_differ():
    tr = pf.make_split(30, 4, 16, seed=5, split="train")
    te = pf.make_split(30, 4, 16, seed=5, split="test")
    assert not np.isclose(tr["z"][:, None, :], te["z"][None]).all(-1).any()
    assert sorted(np.bincount(tr["domain"])) == [7, 7, 8, 8]          # balanced domains
