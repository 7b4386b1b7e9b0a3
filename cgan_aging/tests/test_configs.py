"""Every config parses; the 128-px paper configs build on the meta device with parameter counts
computed by hand below from the architecture (model.py's docstring)."""

from pathlib import Path

import pytest
import torch

from cgan_aging.config import GROUP_PRESETS, Cfg, group_bounds
from cgan_aging.model import AgeDiscriminator, Generator, TransitionDiscriminator, param_count
from reprokit.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def g_count(K: int, h: int, blocks: int, skip: bool = True, cin: bool = True) -> int:
    # age-conditional IN (model.age_cin): a (K, 2 C) table per normalised layer of widths h, 2h, 4h, 2 x 4h per
    # block, 2h, h
    cond = K * 2 * (10 * h + 8 * h * blocks) if cin else 0
    inp = 7 * 7 * (3 + K) * h + 2 * h + cond                               # conv (no bias) + IN affine
    down = 4 * 4 * h * 2 * h + 2 * 2 * h + 4 * 4 * 2 * h * 4 * h + 2 * 4 * h
    c = 4 * h
    res = blocks * (3 * 3 * (c + K) * c + 2 * c + 3 * 3 * c * c + 2 * c)  # age conv takes K extra channels
    up = 4 * 4 * 4 * h * 2 * h + 2 * 2 * h + 4 * 4 * 2 * h * h + 2 * h
    return inp + down + res + up + 7 * 7 * (h + (3 if skip else 0)) * 3


def d_count(in_ch: int, h: int, n: int, proj_codes: int = 0, cls: tuple[int, int] | None = None) -> int:
    """concat: ``in_ch`` counts the code channels, 3x3 head without bias. projection (``proj_codes`` > 0):
    images only, 3x3 head with bias, a (codes, C) table, and for D_age a (K, C, s, s) classifier conv
    (``cls`` = (K, s))."""
    total, c_in, c = 0, in_ch, h
    for _ in range(n):
        total += 4 * 4 * c_in * c + c
        c_in, c = c, 2 * c
    if not proj_codes:
        return total + 3 * 3 * c_in
    total += 3 * 3 * c_in + 1 + proj_codes * c_in
    return total + (cls[0] * c_in * cls[1] ** 2 if cls else 0)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    cfg = load_config(Cfg, str(path), [])
    assert cfg.model.image_size % 2 ** cfg.model.d_depth == 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("paper_")], ids=lambda p: p.name)
def test_paper_configs_build_with_hand_counts(path):
    cfg = load_config(Cfg, str(path), [])
    m = cfg.model
    assert m.image_size == 128
    with torch.device("meta"):
        G, Da, Dt = Generator(cfg), AgeDiscriminator(cfg), TransitionDiscriminator(cfg)
    K = m.num_groups
    assert param_count(G) == g_count(K, m.hidden, m.depth, m.input_skip, m.age_cin)
    assert param_count(Da) == d_count(3 + K, m.hidden, m.d_depth)
    assert param_count(Dt) == d_count(6 + K - 1, m.hidden, m.d_depth)
    assert len(group_bounds(cfg)) == K


def test_small_config_projection_critics_hand_counts():
    cfg = load_config(Cfg, str(CONFIGS[0].parent / "small.yaml"), [])
    m = cfg.model
    assert m.d_cond == "projection" and cfg.gan.lambda_cls == 1.0 and cfg.gan.lambda_id == 10.0
    K, s = m.num_groups, m.image_size // 2 ** m.d_depth
    Da, Dt = AgeDiscriminator(cfg), TransitionDiscriminator(cfg)
    assert param_count(Da) == d_count(3, m.hidden, m.d_depth, proj_codes=K, cls=(K, s))
    assert param_count(Dt) == d_count(6, m.hidden, m.d_depth, proj_codes=K - 1)
    assert param_count(Generator(cfg)) == g_count(K, m.hidden, m.depth, m.input_skip, m.age_cin)


def test_presets_and_bad_values():
    assert [b[0] for b in GROUP_PRESETS["five"]] == [11, 21, 31, 41, 51]
    assert [b[1] for b in GROUP_PRESETS["seven"]][:6] == [10, 18, 30, 40, 50, 60]
    with pytest.raises(ConfigError, match="image_size"):
        load_config(Cfg, None, ["model.image_size=100"])
    with pytest.raises(ConfigError, match="d_cond=projection"):
        load_config(Cfg, None, ["gan.lambda_cls=1.0"])
    with pytest.raises(ConfigError, match="lambda_cls"):
        load_config(Cfg, None, ["gan.lambda_cls=-1.0", "model.d_cond=projection"])
    with pytest.raises(ConfigError, match="keep_last"):
        load_config(Cfg, None, ["train.keep_last=1"])
    with pytest.raises(ConfigError, match="model.num_groups=5"):
        load_config(Cfg, None, ["data.source=cacd", "data.groups=seven", "model.num_groups=5"])
    with pytest.raises(ConfigError, match="data.groups"):
        load_config(Cfg, None, ["data.source=cacd", "data.groups=nine"])
    with pytest.raises(ConfigError, match="group_bounds"):
        load_config(Cfg, None, ["data.source=cacd", "model.num_groups=2", "data.group_bounds=[[0, 20], [15, 30]]"])
    cfg = load_config(Cfg, None, ["data.source=cacd", "model.num_groups=2", "data.group_bounds=[[0, 20], [21, 90]]"])
    assert group_bounds(cfg) == [[0, 20], [21, 90]]
