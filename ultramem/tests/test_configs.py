"""Every config parses; the paper configs build on the meta device with the paper's parameter counts;
bad values raise a ConfigError naming the key."""

from pathlib import Path

import pytest
import torch

from reprokit.config import ConfigError, load_config
from reprokit.errors import ShapeError
from ultramem.config import Cfg
from ultramem.counter import model_counts
from ultramem.model import UltraMemLM

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path):
    cfg = load_config(Cfg, path)
    assert cfg.model.depth >= 1


def _meta(path: Path) -> UltraMemLM:
    cfg = load_config(Cfg, path)
    with torch.device("meta"):
        return UltraMemLM(cfg.model)


def test_public_227m_1_2b_run_has_1b_sparse_parameters():
    path = [p for p in CONFIGS if "227m" in p.stem][0]
    model = _meta(path)
    counts = model.param_counts()
    assert len(model.mems) == 4 and model.mems[0].n_phys == 652_864          # knum 808^2
    assert counts["sparse"] == 4 * 652_864 * 384                               # ~1.0B (notes Sec. 3.4)
    assert 0.99e9 < counts["sparse"] < 1.01e9
    assert counts["sparse"] == model_counts(load_config(Cfg, path).model)["sparse_params"]


def test_151m_x12_has_about_x12_sparse_parameters():
    path = [p for p in CONFIGS if "151m" in p.stem][0]
    counts = _meta(path).param_counts()
    ratio = counts["sparse"] / counts["dense_non_embedding"]
    assert 10 < ratio < 14, ratio


@pytest.mark.parametrize("over, key", [
    (["model.mem.topm=20"], "model.mem.topm"),                     # top-m larger than the n sub-keys
    (["model.mem.n_keys=15"], "model.mem.ive"),                    # n^2 = 225 not divisible by E = 4
    (["model.mem.cores=3"], "model.mem.cores"),                    # the value width 16 not divisible by h
    (['model.mem.placement="0:2"'], "model.mem.placement"),        # block 2 does not exist (depth 2)
    (['model.mem.placement="1:0"'], "model.mem.placement"),        # reads after it writes
    (["model.mem.placement=oops"], "model.mem.placement"),
    (["model.mem.k_dim=15"], "model.mem.k_dim"),
    (["model.moe.top_k=9", "model.arch=moe"], "model.moe.top_k"),
])
def test_bad_values_name_the_key(smoke_cfg, over, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        smoke_cfg(*over)


def test_input_width_mismatch_is_a_shape_error(smoke_cfg):
    from ultramem.model import build_model

    mem = build_model(smoke_cfg().model).mems[0]
    with pytest.raises(ShapeError, match="model.hidden"):
        mem(torch.randn(1, 3, 7))
