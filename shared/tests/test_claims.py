"""The one claim rule: statuses from paired per-seed effects and the seed noise."""

import pytest

from reprokit.claims import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    combine,
    floor_check,
    judge,
    paired_improvements,
    seed_noise,
)


def test_paired_improvements_direction_and_common_seeds():
    arm = {0: 1.0, 1: 2.0, 2: 5.0}
    ref = {0: 1.5, 1: 1.0, 3: 9.0}
    assert paired_improvements(arm, ref, lower_is_better=True) == [0.5, -1.0]
    assert paired_improvements(arm, ref, lower_is_better=False) == [-0.5, 1.0]
    assert paired_improvements({"0": 1.0}, {"0": 2.0}) == [1.0]  # JSON keys are strings


def test_seed_noise_is_the_largest_sample_std():
    assert seed_noise([{0: 1.0, 1: 3.0}, [0.0, 0.1, 0.2], [7.0]]) == pytest.approx(2 ** 0.5)
    assert seed_noise([[1.0], {}]) is None


@pytest.mark.parametrize("imp, noise, status", [
    ([0.3, 0.4, 0.5], 0.1, REPRODUCED),
    ([-0.3, -0.4, -0.5], 0.1, NOT_REPRODUCED),
    ([0.05, 0.06, 0.04], 0.1, INCONCLUSIVE),        # within the supplied noise
    ([0.5, -0.3, 0.4], 0.01, INCONCLUSIVE),         # the paired effects' own spread is the noise
    ([0.3], None, INCONCLUSIVE),                    # one seed, no estimate
    ([0.3], 0.1, REPRODUCED),                       # one seed judged against noise measured elsewhere
    ([], 0.1, INCONCLUSIVE),
])
def test_judge_better(imp, noise, status):
    assert judge(imp, noise).status == status


def test_floor_overrides_everything():
    v = judge([1.0, 1.0, 1.0], 0.0, floor_ok=False, floor_note="dense class acc. 0.50 < 0.80")
    assert v.status == NOT_TESTABLE and "0.50" in v.reason


def test_not_worse_and_not_better():
    assert judge([-0.01, -0.02], 0.05, expect="not_worse", margin=0.0).status == REPRODUCED
    assert judge([-1.0, -1.1], 0.05, expect="not_worse", margin=0.5).status == NOT_REPRODUCED
    assert judge([-0.4, -0.45], 0.05, expect="not_worse", margin=0.5).status == REPRODUCED
    assert judge([0.3, 0.31], 0.05, expect="not_better").status == NOT_REPRODUCED
    assert judge([0.01, -0.01], 0.05, expect="not_better").status == REPRODUCED
    with pytest.raises(ValueError):
        judge([0.1], 0.1, expect="bigger")


def test_combine():
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE]) == NOT_REPRODUCED
    assert combine([NOT_REPRODUCED, NOT_TESTABLE]) == NOT_TESTABLE
    assert combine([judge([1.0, 1.1], 0.1)]) == REPRODUCED
    with pytest.raises(ValueError):
        combine(["maybe"])


def test_floor_check():
    assert floor_check("top1", 0.86, 0.85)["ok"]
    assert not floor_check("top1", 0.56, 0.85)["ok"]
    assert floor_check("loss", 1.6, 1.7, higher_is_better=False)["ok"]
    assert not floor_check("loss", float("nan"), 1.7, higher_is_better=False)["ok"]
    assert not floor_check("loss", None, 1.7)["ok"]
    assert floor_check("loss", 1.7, 1.7, higher_is_better=False)["ok"]
    rec = floor_check("loss", 1.7, 1.7, higher_is_better=False, strict=True)
    assert not rec["ok"] and rec["direction"] == "<"
