"""Every config parses and builds (also with ``model.depth=4``); paper-scale configs are built on the meta device
and their parameter counts checked against the papers' tables."""

from pathlib import Path

import pytest
import torch

from hyperfrac.config import Cfg
from hyperfrac.connections import connection_param_count, parse_variant
from hyperfrac.model import build_model
from reprokit.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


ALL = sorted(p.name for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("over", [[], ["model.depth=4"]])
def test_every_config_parses_and_builds(name, over):
    cfg = load_config(Cfg, CONFIGS / name, overrides=over)
    if over:
        assert cfg.model.depth == 4
    if cfg.model.vocab_size == 0:   # resolved from the tokenizer at run time
        cfg.model.vocab_size = 83
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert len(model.trunk.blocks) == cfg.model.depth
    assert cfg.train.keep_last >= 2 and cfg.train.schedule in ("constant", "cosine")


def test_old_key_names_are_rejected_with_the_valid_ones():
    from reprokit.config import ConfigError
    with pytest.raises(ConfigError, match="d_model"):
        load_config(Cfg, CONFIGS / "smoke.yaml", overrides=["model.d_model=64"])
    with pytest.raises(ConfigError, match="eval_tokens"):
        load_config(Cfg, CONFIGS / "smoke.yaml", overrides=["data.eval_tokens=64"])


def _count(cfg):
    with torch.device("meta"):
        model = build_model(cfg.model)
    conn = sum(p.numel() for c in model.trunk.connections() for p in c.parameters())
    return sum(p.numel() for p in model.parameters()), conn


def _load(name, conn=None):
    cfg = load_config(Cfg, CONFIGS / name)
    if conn:
        cfg.model.connection = conn
    return cfg


@pytest.mark.parametrize("name,base_b,extra,pct,digits", [
    # base (billions, as printed), extra connection params, overhead % as printed, decimals of that %
    ("paper_olmo1b_dhc4.yaml", 1.17676442, 394_048, 0.03349, 5),        # FC Table 1 base; HC Table 7
    ("paper_olmo7b_dhc4.yaml", 6.9, 1_574_528, 0.02286, 5),             # HC Table 5 (6.9B), Table 7
    ("paper_olmoe1b7b_dhc4.yaml", 6.91909427, 394_048, 0.00570, 5),     # FC Table 1 base; HC Table 7
    ("paper_olmoe7b_dfc4.yaml", 6.91909427, 165_056, 0.0024, 4),        # FC Table 1 (+0.000165B, +0.0024%)
    ("paper_olmo2_1b2_dfc4.yaml", 1.17676442, 165_056, 0.014, 3),       # FC Table 1 (+0.000165B, +0.014%)
])
def test_paper_config_param_counts(name, base_b, extra, pct, digits):
    cfg = _load(name)
    total, conn = _count(cfg)
    base = total - conn
    decimals = len(str(base_b).split(".")[1])
    assert round(base / 1e9, decimals) == base_b, base
    assert conn == extra
    spec = parse_variant(cfg.model.connection)
    assert conn == 2 * cfg.model.depth * connection_param_count(spec, cfg.model.hidden)
    assert round(100 * conn / base, digits) == pct
    prenorm_total, prenorm_conn = _count(_load(name, "prenorm"))
    assert prenorm_conn == 0 and prenorm_total == base


@pytest.mark.parametrize("conn,pct", [("shcx2", 0.00002), ("shcx4", 0.00007), ("dhcx2", 0.02230)])
def test_hc_table7_other_olmo1b_variants(conn, pct):
    total, extra = _count(_load("paper_olmo1b_dhc4.yaml", conn))
    assert round(100 * extra / (total - extra), 5) == pct


def test_fc_table1_fc_params_in_billions():
    _, extra = _count(_load("paper_olmoe7b_dfc4.yaml"))
    assert round(extra / 1e9, 6) == 0.000165
