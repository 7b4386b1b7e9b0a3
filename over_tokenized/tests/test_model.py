"""Algorithm 1 shapes and counts, the 1/(1 + k(n-1)) scaling, zeroed tables, MTP-DS, bad input."""

import pytest
import torch

from overtok.config import ModelCfg, MTPCfg, OECfg
from overtok.embedding import OverEncoding, TokenEmbedding
from overtok.model import OverTokenizedLM, build_model, lm_losses
from reprokit.config import ConfigError
from reprokit.errors import ShapeError
from reprokit.testing import assert_close


def _cfg(**oe):
    return ModelCfg(depth=2, hidden=32, heads=2, vocab_size=64, impl="torch",
                    oe=OECfg(**{"enabled": True, "n": 3, "k": 2, "m": 101, **oe}))


def test_algorithm_1_shapes_and_parameter_counts():
    cfg = _cfg()
    emb = OverEncoding(64, 32, cfg.oe)
    S = 2 * (3 - 1)
    assert emb.width == 32 // S == 8
    assert emb.ngram.weight.shape == (sum(101 + 2 * i for i in range(S)), 8)
    assert emb.proj.shape == (S * 8, 32)                 # S projections w -> D, stacked
    assert emb.wte.weight.shape == (64, 32)
    model = build_model(cfg)
    pc = model.param_counts()
    assert pc["ngram_tables"] == (4 * 101 + 2 * (0 + 1 + 2 + 3)) * 8
    assert pc["embedding"] == 64 * 32 + 32 * 32
    base = build_model(ModelCfg(depth=2, hidden=32, heads=2, vocab_size=64))
    assert base.param_counts()["non_embedding"] == pc["non_embedding"]   # OE adds no trunk parameters
    assert model(torch.randint(0, 64, (2, 5))).shape == (2, 5, 64)


def test_scale_is_one_over_the_number_of_terms():
    assert OverEncoding(64, 32, _cfg().oe).scale == pytest.approx(1 / (1 + 2 * 2))
    assert OverEncoding(64, 32, _cfg(n=2, k=1).oe).scale == pytest.approx(1 / 2)
    assert OverEncoding(64, 32, _cfg(n=2, k=1, unigram=False).oe).scale == pytest.approx(1.0)


def test_oe_with_zeroed_tables_is_the_scaled_baseline_embedding():
    emb = OverEncoding(64, 32, _cfg(n=5, k=1, m=101).oe, impl="torch")
    torch.nn.init.normal_(emb.wte.weight)
    torch.nn.init.normal_(emb.proj)
    with torch.no_grad():
        emb.ngram.weight.zero_()
    ids = torch.randint(0, 64, (3, 7))
    assert_close(emb(ids), emb.wte.weight[ids] / (1 + 1 * 4))


@pytest.mark.parametrize("init", ["std", "zero"])
def test_table_init_switch(init):
    """model.oe.table_init: N(0, init_std) rows, or zero rows (an n-gram the run never saw adds nothing), in
    which case the model's first embedding is the baseline's, scaled by 1 / (1 + k (n - 1))."""
    model = build_model(_cfg(table_init=init), seed=1)
    w = model.embed.ngram.weight
    if init == "zero":
        assert torch.count_nonzero(w) == 0
        ids = torch.randint(0, 64, (2, 6))
        assert_close(model.embed(ids), model.embed.wte.weight[ids] * model.embed.scale)
    else:
        assert float(w.detach().std()) == pytest.approx(model.cfg.init_std, rel=0.1)
    assert torch.count_nonzero(model.embed.proj) > 0          # the projections stay random: rows get gradients


def test_oe_is_the_average_of_its_terms():
    emb = OverEncoding(64, 32, _cfg().oe, impl="torch")
    for p in emb.parameters():
        torch.nn.init.normal_(p)
    ids = torch.randint(0, 64, (2, 6))
    from overtok.ngram import history_lengths, ngram_rows
    rows = ngram_rows(ids, history_lengths((2, 6), 3), emb.spec_tensors())
    terms = [emb.wte.weight[ids]] + [emb.ngram.weight[rows[..., s]] @ emb.proj[s * 8:(s + 1) * 8] for s in range(4)]
    assert_close(emb(ids), sum(terms) / 5)


def test_document_boundaries_isolate_the_embedding():
    emb = OverEncoding(64, 32, _cfg().oe, impl="torch")
    torch.nn.init.normal_(emb.ngram.weight)
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[9, 9, 9, 4, 5, 6]])
    ds = torch.tensor([[0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(emb(a, ds)[:, 3:], emb(b, ds)[:, 3:])
    assert not torch.equal(emb(a)[:, 3:], emb(b)[:, 3:])


def test_shared_weights_start_identical_across_arms():
    base = build_model(ModelCfg(depth=2, hidden=32, heads=2, vocab_size=64), seed=3)
    oe = build_model(_cfg(), seed=3)
    sb, so = base.state_dict(), oe.state_dict()
    shared = [k for k in sb if k in so]
    assert "blocks.0.attn.qkv.weight" in shared and "embed.wte.weight" in shared
    assert all(torch.equal(sb[k], so[k]) for k in shared)


def test_mtp_ds_head_and_loss():
    cfg = _cfg()
    cfg.mtp = MTPCfg(heads=1, weight=0.1)
    model = build_model(cfg)
    x = torch.randint(0, 64, (2, 9))
    y = torch.randint(0, 64, (2, 9))
    logits, mtp = model(x, return_mtp=True)
    assert logits.shape == (2, 9, 64) and mtp.shape == (2, 8, 64)
    total, ce, ce2 = lm_losses(logits, y, mtp, 0.1)
    ref2 = torch.nn.functional.cross_entropy(mtp.reshape(-1, 64), y[:, 1:].reshape(-1))   # token t+2
    assert_close(ce2, ref2)
    assert_close(total, ce + 0.1 * ce2)
    assert torch.equal(model(x), logits)                # the next-token path ignores the head


def test_sparse_table_gradients():
    model = build_model(_cfg())
    model(torch.randint(0, 64, (2, 5))).sum().backward()
    g = model.embed.ngram.weight.grad
    assert g.is_sparse and model.embed.wte.weight.grad.layout == torch.strided
    dense = build_model(_cfg(), sparse_tables=False)
    dense(torch.randint(0, 64, (2, 5))).sum().backward()
    assert not dense.embed.ngram.weight.grad.is_sparse


@pytest.mark.parametrize("oe, culprit", [
    ({"n": 1}, "model.oe.n=1"),
    ({"m": 1}, "model.oe.m=1"),
    ({"k": 3}, "model.oe.k=3"),                          # 32 / (3 * 2) is not an integer
    ({"k": 0}, "model.oe.k=0"),
    ({"orders": [2, 5]}, "model.oe.orders"),
    ({"m": 2**31}, "2\\*\\*31"),
])
def test_bad_oe_values_are_config_errors(oe, culprit):
    with pytest.raises(ConfigError, match=culprit):
        _cfg(**oe)


def test_modulus_sharing_a_factor_with_v_fails_at_build():
    with pytest.raises(ConfigError, match="shares the factor 2 with the vocabulary size V=64"):
        OverTokenizedLM(_cfg(m=102))


@pytest.mark.parametrize("emb", [lambda: TokenEmbedding(64, 32), lambda: OverEncoding(64, 32, _cfg().oe)])
def test_token_ids_outside_the_vocabulary(emb):
    e = emb()
    with pytest.raises(ShapeError, match=r"token id 64 is outside the vocabulary \[0, 64\)"):
        e(torch.tensor([[1, 64]]))
    with pytest.raises(ShapeError, match="token id -1"):
        e(torch.tensor([[-1, 3]]))


def test_size_preset_and_unset_sizes():
    assert ModelCfg(size="tiny").hidden == 32
    with pytest.raises(ConfigError, match="model.hidden=64 conflicts with model.size='tiny'"):
        ModelCfg(size="tiny", hidden=64)
    with pytest.raises(ConfigError, match="unset"):
        OverTokenizedLM(ModelCfg(vocab_size=64))
