"""Every config parses; the paper-scale configs build on the meta device with the paper's sizes."""

from pathlib import Path

import pytest
import torch

from racedit.config import Cfg
from racedit.model import DiT, param_counts
from reprokit.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = sorted(CONFIGS.glob("paper_*.yaml"))
EXPECTED_TOTAL = {"paper_table4_b2_4in32": 0.531, "paper_table4_m2_4in32": 1.106, "paper_table4_l2_4in32": 1.889,
                  "paper_table4_xl2_4in32": 2.788, "paper_table7_xl2_4in32": 2.788, "paper_table4_b2_dense": 0.127}


def test_there_are_paper_configs():
    assert len(PAPER) >= 6


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_builds_on_meta(path):
    cfg = load_config(Cfg, str(path), [])
    with torch.device("meta"):
        m = DiT(cfg.model)
    assert m.num_tokens == 256
    if path.stem in EXPECTED_TOTAL:
        # the paper's absolute counts sit 3-8M below DiT's layer formulas (embeddings / final layer)
        total = param_counts(cfg.model)["total"] / 1e9
        assert 0 <= total - EXPECTED_TOTAL[path.stem] < 0.009


@pytest.mark.parametrize("name", ["smoke", "small"])
def test_member_configs_parse(name):
    cfg = load_config(Cfg, str(CONFIGS / f"{name}.yaml"), [])
    DiT(cfg.model)
