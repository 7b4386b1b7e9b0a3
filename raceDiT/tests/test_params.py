"""Parameter counts on the meta device against the paper's Table 4 / Table 5 deltas."""

import pytest

from racedit.config import ModelCfg, MoECfg
from racedit.model import param_counts


def cfg(size, E=None, k=None):
    moe = MoECfg(enabled=E is not None, num_experts=E or 8, top_k=k or 2)
    return ModelCfg(size=size, patch=2, image_size=32, channels=4, num_classes=1000, learn_sigma=True, moe=moe)


def test_table4_b2_4in32_total_delta_and_active():
    dense, moe = param_counts(cfg("B")), param_counts(cfg("B", 32, 4))
    assert round((moe["total"] - dense["total"]) / 1e9, 3) == 0.404          # 0.531B - 0.127B
    # 0.135B - 0.127B, each rounded to 3 decimals -> within 1M of 8M
    assert abs((moe["active"] - dense["total"]) - 0.008e9) <= 1.0e6


def test_table4_xl_router_and_deltas():
    dense, moe = param_counts(cfg("XL")), param_counts(cfg("XL", 32, 4))
    assert round(moe["router"] / 1e9, 3) == 0.038                             # 0.707B - 0.669B
    assert round((moe["active"] - dense["total"]) / 1e9, 3) == 0.038
    assert round((moe["total"] - dense["total"]) / 1e9, 2) == round(2.788 - 0.669, 2)


@pytest.mark.parametrize("size,total,dense_total", [("M", 1.106, 0.265), ("L", 1.889, 0.453)])
def test_table4_other_sizes(size, total, dense_total):
    dense, moe = param_counts(cfg(size)), param_counts(cfg(size, 32, 4))
    assert round((moe["total"] - dense["total"]) / 1e9, 2) == round(total - dense_total, 2)


@pytest.mark.parametrize("k,E,total", [(1, 4, 0.297), (1, 8, 0.524), (1, 16, 0.978), (2, 8, 0.297), (2, 16, 0.524),
                                       (2, 32, 0.977), (4, 16, 0.297), (4, 32, 0.524), (4, 64, 0.977),
                                       (8, 32, 0.297), (8, 64, 0.524), (8, 128, 0.977)])
def test_table5_totals_without_router(k, E, total):
    dense, moe = param_counts(cfg("B")), param_counts(cfg("B", E, k))
    delta = (moe["total_no_router"] - dense["total"]) / 1e9
    assert abs(delta - (total - 0.127)) < 0.0015


def test_activated_ffn_equals_dense():
    dense, moe = param_counts(cfg("B")), param_counts(cfg("B", 8, 2))
    assert abs(moe["active"] - moe["router"] - dense["total"]) < 1e5  # bias terms only
