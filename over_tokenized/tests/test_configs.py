"""Every config parses; the paper-scale configs build on the meta device with the paper's parameter counts."""

import math
from pathlib import Path

import pytest
import torch

from overtok.config import Cfg
from overtok.model import build_model
from reprokit.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = sorted(CONFIGS.glob("paper_*.yaml"))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_parses(path):
    cfg = load_config(Cfg, path)
    assert cfg.model.depth and cfg.model.hidden and cfg.model.heads


def test_every_paper_row_has_a_config():
    names = {p.stem for p in PAPER}
    assert {"paper_olmoe1b3_oe12m8", "paper_olmoe7b_oe12m8", "paper_olmoe1b3_ot12m8", "paper_olmoe1b3_vocab_law",
            "paper_olmo2_151m_oe12m8", "paper_olmo2_400m_oe12m8", "paper_olmo2_1b_oe12m8"} <= names


def _meta(path, *over):
    pytest.importorskip("transformers")
    cfg = load_config(Cfg, path, list(over))
    with torch.device("meta"):
        return cfg, build_model(cfg.model)


def truncate(x: float, digits: int = 3) -> float:
    """The paper prints parameter counts truncated, not rounded, to the digits it shows (13.160B -> 13.1B)."""
    e = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10**e) * 10**e


@pytest.mark.parametrize("name, oe, emb_params, paper, digits", [
    # Table 1 "# Emb. P.": the 1-gram table (V = 50,280) plus, with OE, the n-gram tables
    ("paper_olmoe1b3_oe12m8", False, 51_486_720, 51e6, 2),      # 51.49M printed as 51M
    ("paper_olmoe1b3_oe12m8", True, None, 13.1e9, 3),           # 13.160B printed as 13.1B (rounding: 13.2B)
    ("paper_olmoe7b_oe12m8", False, 102_973_440, 102e6, 3),     # 102.97M printed as 102M (rounding: 103M)
    ("paper_olmoe7b_oe12m8", True, None, 26.3e9, 3),            # 26.322B printed as 26.3B
])
def test_table_1_embedding_parameter_counts(name, oe, emb_params, paper, digits):
    cfg, model = _meta(CONFIGS / f"{name}.yaml", f"model.oe.enabled={str(oe).lower()}")
    pc = model.param_counts()
    wte = cfg.model.vocab_size * cfg.model.hidden
    if oe:
        D = cfg.model.hidden
        moduli = model.embed.spec.moduli
        assert pc["ngram_tables"] == D // len(moduli) * sum(moduli)
        assert abs(pc["ngram_tables"] - 12.8e6 * D) / (12.8e6 * D) < 1e-5    # OE-12.8M = 12.8M x D
        emb_params = wte + pc["ngram_tables"]
    assert wte + pc["ngram_tables"] == emb_params
    assert truncate(emb_params, digits) == pytest.approx(paper)


def test_olmoe_backbones():
    cfg, model = _meta(CONFIGS / "paper_olmoe7b_oe12m8.yaml")
    pc = model.param_counts()
    # OLMoE-1B-7B: 6.9B parameters besides the OE tables and projections, 1.3B active
    assert 6.85e9 < pc["total"] - pc["ngram_tables"] - model.embed.proj.numel() < 6.95e9
    assert type(model.hf).__name__ == "OlmoeForCausalLM" and model.hf.config.num_experts_per_tok == 8
    assert type(model.embed).__name__ == "OverEncoding" and model.embed.spec.orders == (2,) * 4 + (3,) * 4
    cfg, model = _meta(CONFIGS / "paper_olmoe1b3_oe12m8.yaml")
    assert model.embed.width == 256 and cfg.model.oe.k == 2
    cfg, model = _meta(CONFIGS / "paper_olmoe1b3_ot12m8.yaml")
    assert len(model.mtp) == 1 and cfg.model.mtp.weight == 0.1


@pytest.mark.parametrize("name, non_embedding", [("151m", 151e6), ("400m", 400e6), ("1b", 1.0e9)])
def test_olmo2_sizes_match_their_names(name, non_embedding):
    cfg, model = _meta(CONFIGS / f"paper_olmo2_{name}_oe12m8.yaml")
    pc = model.param_counts()
    trunk = pc["non_embedding"] - cfg.model.vocab_size * cfg.model.hidden   # less the untied output head
    assert abs(trunk - non_embedding) / non_embedding < 0.08
    assert type(model.hf).__name__ == "Olmo2ForCausalLM"
    assert pc["ngram_tables"] == pytest.approx(12.8e6 * cfg.model.hidden, rel=1e-5)


def test_vocab_law_config_sweeps_m():
    for m in (20_000, 200_000, 800_000, 3_200_000, 12_800_000):
        cfg, model = _meta(CONFIGS / "paper_olmoe1b3_vocab_law.yaml", f"model.oe.m={m}")
        assert model.embed.spec.orders == (2,) and model.embed.width == 1024
        assert model.param_counts()["ngram_tables"] == pytest.approx(m * 1024, rel=1e-3)


@pytest.mark.parametrize("over", [
    ["model.oe.enabled=true", "model.oe.n=2", "model.oe.k=2"],                 # Table 2 rows 4-5: slicing
    ["model.oe.enabled=true", "model.oe.n=3", "model.oe.k=1", "model.oe.orders=[3]"],   # Table 3: no 2-gram
    ["model.oe.enabled=true", "model.oe.n=2", "model.oe.unigram=false"],       # Table 3: no 1-gram
    ["model.oe.enabled=true", "model.oe.n=2", "model.oe.m=131072", "model.oe.allow_shared_factor=true"],  # Table 4
])
def test_ablation_switches(over):
    cfg = load_config(Cfg, CONFIGS / "small.yaml", ["model.vocab_size=2048", *over])
    model = build_model(cfg.model)
    assert model.param_counts()["ngram_tables"] > 0


def test_multiple_of_v_needs_the_explicit_flag():
    cfg = load_config(Cfg, CONFIGS / "small.yaml", ["model.vocab_size=2048", "model.oe.enabled=true",
                                                   "model.oe.n=2", "model.oe.m=131072"])
    with pytest.raises(ConfigError, match="allow_shared_factor"):
        build_model(cfg.model)
