"""The transformers backbones (paper.py): OLMo / OLMoE with our memory units inserted at the placements."""

import sys

import pytest
import torch

from reprokit.config import ConfigError
from ultramem.config import ModelCfg, MoECfg
from ultramem.memory import MemoryLayer

pytest.importorskip("transformers")


def _mem_cfg(placement="0:1", depth=3):
    cfg = ModelCfg(depth=depth, hidden=32, heads=2, vocab_size=50, arch="memory", backbone="olmo", impl="torch",
                   mlp_hidden=48)
    cfg.mem.placement, cfg.mem.n_keys, cfg.mem.topm, cfg.mem.k_dim = placement, 8, 4, 8
    cfg.mem.tucker_rank, cfg.mem.cores, cfg.mem.ive, cfg.mem.value_proj = 2, 2, 4, True
    cfg.__post_init__()
    return cfg


@pytest.mark.parametrize("placement, a, b", [("0:1", 0, 1), ("1:1", 1, 1), ("0:2", 0, 2)])
def test_memory_unit_reads_block_a_and_writes_after_block_b(placement, a, b):
    from ultramem.model import build_model

    torch.manual_seed(0)
    model = build_model(_mem_cfg(placement)).eval()
    layers = model.hf.model.layers
    seen = {}
    hooks = [layers[a].post_attention_layernorm.register_forward_hook(
        lambda m, i, o: seen.__setitem__("u", o.detach().clone()))]
    hooks.append(model.mems[0].register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0].detach())))
    outs = {}
    for tag in ("on", "off"):
        if tag == "off":
            with torch.no_grad():
                model.mems[0].values.zero_()                              # the unit now adds exactly 0
        hs = [layers[i].register_forward_hook(lambda m, inp, o, i=i, tag=tag: outs.__setitem__((tag, i), o.detach()))
              for i in range(3)]
        ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
        model(ids)
        for h in hs:
            h.remove()
        if tag == "on":
            assert torch.equal(seen["in"], seen["u"])                     # the unit's input is block a's normed FFN input
    for h in hooks:
        h.remove()
    for i in range(3):                                                    # blocks before b: untouched by the unit
        same = torch.equal(outs[("on", i)], outs[("off", i)])
        assert same == (i < b), (i, b)


def test_olmo_memory_model_trains_through_the_hooks():
    from ultramem.model import build_model

    model = build_model(_mem_cfg("0:2")).train()
    logits = model(torch.randint(0, 50, (2, 5)))
    (logits.square().mean() + model.aux).backward()
    assert model.mems[0].values.grad.abs().sum() > 0 and model.mems[0].core.grad is not None
    assert model.aux > 0                                                  # the TDQKR auxiliary loss


def test_olmoe_moe_model_and_its_balance_loss():
    from ultramem.model import build_model

    cfg = ModelCfg(depth=2, hidden=32, heads=2, vocab_size=50, arch="moe", backbone="olmoe", impl="torch",
                   moe=MoECfg(experts=4, top_k=2, expert_hidden=16, layers=[0, 1]))
    model = build_model(cfg).train()
    assert model(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)
    assert float(model.aux.detach()) > 0
    c = model.param_counts()
    assert c["sparse"] == 2 * 4 * 3 * 32 * 16                             # every expert's SwiGLU weights


def test_train_runs_on_the_olmo_backbone(tmp_path, smoke_cfg):
    from ultramem.train import train

    m = train(smoke_cfg("model.backbone=olmo", "train.steps=2", "train.log_every=1"), tmp_path / "run", quiet=True)
    assert m["val_loss"] < 5


@pytest.mark.parametrize("over, match", [
    (["model.backbone=olmo", "model.arch=moe"], "model.backbone=olmoe"),
    (["model.backbone=olmoe"], "model.arch=moe"),
    (["model.backbone=olmoe", "model.arch=moe"], "model.moe.layers"),
])
def test_backbone_config_errors(smoke_cfg, over, match):
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        smoke_cfg(*over)


def test_missing_transformers_names_the_extra(monkeypatch):
    from ultramem.model import build_model

    monkeypatch.setitem(sys.modules, "transformers", None)                # import transformers -> ImportError
    with pytest.raises(ConfigError, match="uv sync --extra paper"):
        build_model(_mem_cfg())


def test_memory_layers_are_ours():
    from ultramem.model import build_model

    model = build_model(_mem_cfg("0:0/1:2"))
    assert [type(m) for m in model.mems] == [MemoryLayer, MemoryLayer]
