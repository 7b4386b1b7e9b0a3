"""Every config parses; the paper-scale configs build on the meta device with the paper's sizes; the
common vocabulary (model.size presets, model.impl, train.warmup_frac / schedule / keep_last)."""

import math
from pathlib import Path

import pytest
import torch

from racedit.config import SIZES, Cfg, ModelCfg, TrainCfg
from racedit.model import DiT, param_counts
from racedit.train import lr_at
from reprokit.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = sorted(CONFIGS.glob("paper_*.yaml"))
ALL = sorted(CONFIGS.glob("*.yaml"))
EXPECTED_TOTAL = {"paper_table4_b2_4in32": 0.531, "paper_table4_m2_4in32": 1.106, "paper_table4_l2_4in32": 1.889,
                  "paper_table4_xl2_4in32": 2.788, "paper_table7_xl2_4in32": 2.788, "paper_table4_b2_dense": 0.127}


def test_there_are_paper_configs():
    assert len(PAPER) >= 6


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_config_parses_and_builds_on_meta(path):
    cfg = load_config(Cfg, str(path), [])
    assert min(cfg.model.dims()) > 0
    with torch.device("meta"):
        DiT(cfg.model)


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_has_the_paper_sizes(path):
    cfg = load_config(Cfg, str(path), [])
    assert cfg.model.size in SIZES and cfg.model.dims() == SIZES[cfg.model.size]
    with torch.device("meta"):
        m = DiT(cfg.model)
    assert m.num_tokens == 256
    if path.stem in EXPECTED_TOTAL:
        # the paper's absolute counts sit 3-8M below DiT's layer formulas (embeddings / final layer)
        total = param_counts(cfg.model)["total"] / 1e9
        assert 0 <= total - EXPECTED_TOTAL[path.stem] < 0.009


@pytest.mark.parametrize("name", ["smoke", "small"])
def test_depth_override_works_without_a_preset(name):
    cfg = load_config(Cfg, str(CONFIGS / f"{name}.yaml"), ["model.depth=4"])
    assert cfg.model.size is None and cfg.model.depth == 4
    assert len(DiT(cfg.model).blocks) == 4


def test_a_preset_fills_unset_fields_and_an_equal_value_is_fine():
    m = ModelCfg(size="B")
    assert (m.depth, m.hidden, m.heads) == (12, 768, 12)
    assert ModelCfg(size="XL", depth=28).dims() == (28, 1152, 16)


def test_a_field_conflicting_with_the_preset_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.depth=4 conflicts with model\.size=B .*depth=12"):
        load_config(Cfg, str(CONFIGS / "paper_b2_2in8.yaml"), ["model.depth=4"])
    with pytest.raises(ConfigError, match=r"model\.hidden=32 conflicts with model\.size=XL"):
        load_config(Cfg, str(CONFIGS / "smoke.yaml"), ["model.size=XL", "model.depth=0", "model.heads=0"])
    with pytest.raises(ConfigError, match="model.size"):
        load_config(Cfg, str(CONFIGS / "smoke.yaml"), ["model.size=Q"])


def test_without_a_preset_all_three_dims_are_needed():
    with pytest.raises(ConfigError, match=r"model\.hidden=0"):
        ModelCfg(depth=4, heads=2)
    with pytest.raises(ConfigError, match="has no size"):
        DiT(ModelCfg())   # the blank section load_config starts from


def test_impl_and_train_keys_are_checked():
    with pytest.raises(ConfigError, match="model.impl"):
        load_config(Cfg, str(CONFIGS / "smoke.yaml"), ["model.impl=cuda"])
    with pytest.raises(ConfigError, match="keep_last"):
        load_config(Cfg, str(CONFIGS / "smoke.yaml"), ["train.keep_last=1"])
    with pytest.raises(ConfigError, match="warmup_frac"):
        TrainCfg(warmup_frac=1.5)
    with pytest.raises(ConfigError, match="unknown config key 'model.moe.kernel_impl'"):
        load_config(Cfg, str(CONFIGS / "smoke.yaml"), ["model.moe.kernel_impl=torch"])


@pytest.mark.parametrize("steps,frac,old_warmup", [(400, 0.125, 50), (20, 0.25, 5), (400000, 0.0, 0)])
def test_warmup_frac_reproduces_the_old_step_warmup(steps, frac, old_warmup):
    tc = TrainCfg(steps=steps, lr=1e-3, warmup_frac=frac)
    for s in [0, 1, 4, 5, 49, 50, 51, steps - 1]:
        assert lr_at(tc, s) == 1e-3 * min(1.0, (s + 1) / max(old_warmup, 1))


def test_cosine_schedule_decays_to_min_lr_frac():
    tc = TrainCfg(steps=100, lr=1.0, warmup_frac=0.1, schedule="cosine", min_lr_frac=0.1)
    assert lr_at(tc, 9) == 1.0 and lr_at(tc, 10) == 1.0
    assert math.isclose(lr_at(tc, 55), 0.1 + 0.9 * 0.5, rel_tol=1e-9)
    assert lr_at(tc, 99) > 0.1 and math.isclose(lr_at(tc, 100), 0.1)
