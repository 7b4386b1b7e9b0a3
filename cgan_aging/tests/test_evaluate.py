"""The evaluators: AUC against a hand count, the floors reached at the small configuration's size
(slow: ~2 minutes), and a verification embedding that tells people apart."""

import numpy as np
import pytest

from cgan_aging.config import Cfg
from cgan_aging.evaluate import auc, train_evaluators
from reprokit.config import load_config

SMALL = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "small.yaml"


def test_auc_matches_pair_count():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 30)
    pos[:3] = neg[:3]                                                    # ties count half
    hand = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(hand)
    assert auc([2, 3], [0, 1]) == 1.0 and auc([0], [1]) == 0.0


@pytest.mark.slow
def test_evaluators_pass_their_floors_at_the_small_size():
    cfg = load_config(Cfg, str(SMALL), [])
    ev = train_evaluators(cfg)
    bad = {k: f for k, f in ev["floors"].items() if not f["ok"]}
    assert not bad, bad
    assert ev["verif_auc_none"] > 0.6
