"""Every config parses; the 128-px paper configs build on the meta device with StarGAN's parameter
counts, computed by hand below from the architecture (notes §2.3)."""

from pathlib import Path

import pytest
import torch

from reprokit.config import ConfigError, load_config
from ugan.config import Cfg
from ugan.model import Discriminator, Generator, param_count

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def g_count(K: int, h: int = 64, blocks: int = 6, extra_in: int = 0) -> int:
    conv_in = 7 * 7 * (3 + K + extra_in) * h + 2 * h            # 7x7 conv (no bias) + IN affine
    down = 4 * 4 * h * 2 * h + 2 * 2 * h + 4 * 4 * 2 * h * 4 * h + 2 * 4 * h
    res = blocks * 2 * (3 * 3 * 4 * h * 4 * h + 2 * 4 * h)
    up = 4 * 4 * 4 * h * 2 * h + 2 * 2 * h + 4 * 4 * 2 * h * h + 2 * h
    return conv_in + down + res + up + 7 * 7 * h * 3


def d_count(K: int, h: int = 64, n: int = 6, size: int = 128, trace: bool = True) -> int:
    total, c_in, c = 0, 3, h
    for _ in range(n):
        total += 4 * 4 * c_in * c + c
        c_in, c = c, 2 * c
    k = size // 2 ** n
    return total + 3 * 3 * c_in + (2 if trace else 1) * k * k * c_in * K


def test_hand_counts_equal_stargans_published_totals():
    # StarGAN (CelebA, 5 attributes) prints 8,430,528 for G and 44,762,048 for D
    assert g_count(5) == 8_430_528
    assert d_count(5, trace=False) == 44_762_048


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    cfg = load_config(Cfg, str(path), [])
    assert cfg.model.image_size % 2 ** cfg.model.d_depth == 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("paper_")],
                         ids=lambda p: p.name)
def test_paper_configs_have_stargan_counts(path):
    cfg = load_config(Cfg, str(path), [])
    assert cfg.model.image_size == 128
    with torch.device("meta"):
        G, D = Generator(cfg, proto_dim=2048), Discriminator(cfg)
    K = cfg.model.num_domains
    extra = 3 if cfg.ugan.prototype == "pixel" else 0
    assert param_count(G) == g_count(K, extra_in=extra)
    assert param_count(D) == d_count(K)           # the trace head is always built (unused when lambda_tr=0)
    assert param_count(D) - param_count(D.trace) == d_count(K, trace=False)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="image_size"):
        load_config(Cfg, None, ["model.image_size=100"])
    with pytest.raises(ConfigError, match="keep_last"):
        load_config(Cfg, None, ["train.keep_last=1"])
