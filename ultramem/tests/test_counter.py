"""The analytic counter (counter.py) against the modules' actual parameters and a FLOP count."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ultramem.counter import memory_unit_counts, model_counts, moe_counts
from ultramem.memory import MemoryLayer, MoE
from ultramem.model import build_model
from ultramem.plan import PLANS, job_config, plan_arms

ARMS = ["dense", "moe", "pkm", "ladder1", "ladder2", "ultramem"]


def _cfg(arm, scale="smoke"):
    cfg = job_config(PLANS[scale], plan_arms(PLANS[scale])[arm], 1e-3, 0)
    cfg.model.vocab_size = cfg.model.vocab_size or 2048
    cfg.model.impl = "torch"
    return cfg


@pytest.mark.parametrize("arm", ARMS)
def test_counter_matches_the_parameters(arm):
    cfg = _cfg(arm)
    model = build_model(cfg.model)
    pc, c = model.param_counts(), model_counts(cfg.model)
    assert pc["sparse"] == c["sparse_params"]
    assert pc["dense_non_embedding"] == c["dense_non_embedding_params"]
    assert pc["embedding"] == c["embedding_params"]


def _flops(module, x):
    with FlopCounterMode(display=False) as fc:
        module(x)
    return fc.get_total_flops()


@pytest.mark.parametrize("arm", ["pkm", "ladder1", "ladder2", "ultramem"])
def test_memory_macs_match_the_flop_counter(arm):
    cfg = _cfg(arm)
    model = build_model(cfg.model)
    x = torch.randn(2, 5, cfg.model.hidden)
    mem = next(m for m in model.modules() if isinstance(m, MemoryLayer))
    c = memory_unit_counts(cfg.model)
    assert _flops(mem, x) == 2 * 10 * c["matmul_macs"]          # the value reads are the separate gather term
    assert c["gather_macs"] == cfg.model.mem.heads * cfg.model.mem.topm * mem.Dv


def test_moe_and_ffn_macs_match_the_flop_counter():
    cfg = _cfg("moe")
    model = build_model(cfg.model)
    x = torch.randn(2, 5, cfg.model.hidden)
    moe = next(m for m in model.modules() if isinstance(m, MoE))
    assert _flops(moe, x) == 2 * 10 * moe_counts(cfg.model)["matmul_macs"]
    ffn = model.blocks[0].mlp
    assert _flops(ffn, x) == 2 * 10 * 3 * cfg.model.hidden * cfg.model.ffn_hidden


def test_whole_model_flops_are_the_counted_macs_plus_attention_scores():
    cfg = _cfg("ultramem")
    model = build_model(cfg.model)
    B, T = 2, 6
    flops = _flops(model, torch.randint(0, cfg.model.vocab_size, (B, T)))
    c = model_counts(cfg.model)
    gather = memory_unit_counts(cfg.model)["gather_macs"] * len(model.mems)
    counted = 2 * B * T * (c["activated_macs"] - gather + c["lm_head_macs"])
    attn_scores = flops - counted                       # Q K^T and A V: 2 x 2 B T^2 D per layer (uncounted)
    assert attn_scores == 2 * 2 * B * T * T * cfg.model.hidden * cfg.model.depth


@pytest.mark.parametrize("arm", ARMS[1:])
def test_small_plan_arms_are_matched(arm):
    """+-5 % activated MACs against dense; +-5 % sparse parameters against the UltraMem arm."""
    dense = model_counts(_cfg("dense", "small").model)
    ultra = model_counts(_cfg("ultramem", "small").model)
    c = model_counts(_cfg(arm, "small").model)
    assert abs(c["activated_macs"] / dense["activated_macs"] - 1) <= 0.05
    assert abs(c["sparse_params"] / ultra["sparse_params"] - 1) <= 0.05


def test_arm_keys_list_every_arm_of_each_plan():
    from ultramem.plan import ARM_KEYS

    for scale in PLANS:
        assert tuple(plan_arms(PLANS[scale])) == ARM_KEYS
