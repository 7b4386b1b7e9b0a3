"""The status rules behind the README's claim table (racedit.reproduce)."""

from racedit.reproduce import _compare, _noise, _status


def test_compare_counts_gaps_within_seed_spread_as_ties():
    a = {"loss": (1.00, 0.0)}
    b = {"loss": (1.05, 0.0)}
    assert _compare(a, b, "loss") == "better"
    assert _compare(b, a, "loss") == "worse"
    assert _compare(a, b, "loss", noise=0.06) == "tie"  # seed noise measured on other arms
    assert _compare(a, {"loss": (1.05, 0.1)}, "loss") == "tie"  # b's own spread
    assert _compare({"acc": (0.9, 0.0)}, {"acc": (0.8, 0.0)}, "acc", lower_better=False) == "better"


def test_noise_uses_only_multi_seed_arms():
    st = {"race": {"loss": (1.0, 0.02)}, "tc": {"loss": (1.1, 0.05)}, "dense": {"loss": (1.2, 0.0)}}
    assert _noise(st, {"race": 2, "tc": 2, "dense": 1}, "loss") == 0.05
    assert _noise(st, {"race": 2, "tc": 1, "dense": 1}, "loss") == 0.02
    assert _noise(st, {"race": 1, "tc": 1, "dense": 1}, "loss") == 0.0


def test_status_of_a_claim_over_several_comparisons():
    assert _status(["better", "better"]) == "reproduced"
    assert _status(["better", "tie"]) == "inconclusive"
    assert _status(["better", "worse", "tie"]) == "not reproduced"
