"""The memory layer: exact top-m retrieval, TDQKR's two-stage search, IVE, improved init, causality."""

import math

import pytest
import torch

from ultramem.config import ModelCfg
from ultramem.memory import top1_singular_vectors, tucker_aux_loss

PKM = dict(n_keys=12, heads=2, topm=5, k_dim=8)


def _layer(depth=2, hidden=16, **mem):
    cfg = ModelCfg(depth=depth, hidden=hidden, heads=2, vocab_size=32, arch="memory", impl="torch")
    for k, v in mem.items():
        setattr(cfg.mem, k, v)
    cfg.mem.validate(hidden, depth)
    from ultramem.model import build_model

    cfg.mem.placement = "0:0"
    return build_model(cfg, seed=0).mems[0]


def test_pkm_top_m_equals_brute_force_over_all_product_keys():
    torch.manual_seed(0)
    mem = _layer(**PKM)
    x = torch.randn(3, 7, 16)
    q, keys = mem.queries(x)
    slots, sc = mem.select(q, keys)
    s_row = torch.einsum("bhd,hrnd->bhrn", q[..., :4], keys[:, 0])
    s_col = torch.einsum("bhd,hrnd->bhrn", q[..., 4:], keys[:, 1])
    full = (s_row[:, :, 0, :, None] + s_col[:, :, 0, None, :]).flatten(-2)    # (N, H, n^2) every key
    bv, bi = full.topk(PKM["topm"], dim=-1)
    torch.testing.assert_close(sc[:, :, 0], bv)
    assert torch.equal(slots.sort(-1)[0], bi.sort(-1)[0])


def test_tdqkr_two_stage_equals_exhaustive_for_a_rank_1_core():
    """C = sum_c C_c of rank 1 with positive singular vectors and positive rank scores: the coarse
    top-m rows x top-m columns contain the exhaustive top-m of S_row^T C S_col (see memory.py)."""
    mem = _layer(n_keys=10, heads=2, topm=4, k_dim=8, tucker_rank=2, cores=2, value_proj=True)
    g = torch.Generator().manual_seed(1)
    u, t = torch.rand(2, 2, generator=g) + 0.1, torch.rand(2, 2, generator=g) + 0.1
    C = 0.7 * u[:, :, None] * t[:, None, :]                                  # (H, r, r), rank 1
    with torch.no_grad():
        mem.core.copy_(torch.stack([0.3 * C, 0.7 * C], dim=1) / 0.7)
    s_row = torch.rand(6, 2, 2, 10, generator=g)
    s_col = torch.rand(6, 2, 2, 10, generator=g)
    slots, sc = mem.select_from_scores(s_row, s_col)
    grid = torch.einsum("bhri,hcrs,bhsj->bhcij", s_row, mem.core, s_col)     # (N, H, h, n, n) exhaustive
    ev, ei = grid.sum(2).flatten(-2).topk(4, dim=-1)
    assert torch.equal(slots.sort(-1)[0], ei.sort(-1)[0])
    torch.testing.assert_close(sc.sum(2).sort(-1)[0], ev.sort(-1)[0])
    uu, tt = top1_singular_vectors(mem.core.sum(1))
    assert (uu > 0).all() and (tt > 0).all()


def test_tucker_aux_loss_penalises_only_the_second_singular_value_above_tau():
    core = torch.diag(torch.tensor([2.0, 0.1]))[None]
    assert float(tucker_aux_loss(core, 0.001, 0.15)) == 0.0
    core = torch.diag(torch.tensor([2.0, 0.35]))[None]
    assert float(tucker_aux_loss(core, 0.001, 0.15)) == pytest.approx(0.001 * 0.2 ** 2, rel=1e-4)


@pytest.mark.parametrize("shuffle", [True, False])
def test_ive_equals_the_expanded_table_it_emulates(shuffle):
    """IVE read == a lookup in the virtual table V~ (n^2, D) with V~[v] = V[row(v)] W_p(v)."""
    mem = _layer(n_keys=8, heads=2, topm=3, k_dim=8, ive=4, ive_shuffle=shuffle, value_proj=True)
    n2, Dv, E = 64, mem.Dv, 4
    v = mem.perm if mem.perm is not None else torch.arange(n2)
    group, row = v // mem.n_phys, v % mem.n_phys
    W = mem.proj.weight.T.view(E, Dv, 16)                                    # W_p (D_v, D)
    virtual = torch.einsum("vd,vde->ve", mem.values[row], W[group])          # (n^2, D)
    g = torch.Generator().manual_seed(0)
    slots = torch.randint(0, n2, (5, 2, 3), generator=g)
    w = torch.randn(5, 2, 1, 3, generator=g)
    want = (virtual[slots] * w[:, :, 0, :, None]).sum((1, 2))
    torch.testing.assert_close(mem.read(slots, w), want, rtol=1e-5, atol=1e-6)


def test_mcs_cores_weight_their_own_value_slices():
    mem = _layer(n_keys=8, heads=1, topm=2, k_dim=8, tucker_rank=2, cores=2)     # D_v = D = 16, no proj
    slots = torch.tensor([[[3, 9]]])
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])                          # (N, H, h, m)
    out = mem.read(slots, w)[0]
    V = mem.values
    torch.testing.assert_close(out[:8], 1.0 * V[3, :8] + 2.0 * V[9, :8])
    torch.testing.assert_close(out[8:], 3.0 * V[3, 8:] + 4.0 * V[9, 8:])


@pytest.mark.parametrize("ive", [1, 4])
def test_improved_init_output_variance_matches_the_formula(ive):
    """Var(V) = E / (2 m H L) and Var(W_p) = 1 / (E D_v): for unit scores the block output has
    variance 1 / (2 L) (statistically: many tokens and dimensions, 15 % tolerance)."""
    depth = 3
    mem = _layer(depth=depth, hidden=64, n_keys=64, heads=2, topm=8, k_dim=8, ive=ive, value_proj=True,
                 init="improved")
    assert float(mem.values.detach().var()) == pytest.approx(ive / (2 * 8 * 2 * depth), rel=0.05)
    g = torch.Generator().manual_seed(0)
    slots = torch.randint(0, 64 * 64, (4000, 2, 8), generator=g)
    out = mem.read(slots, torch.ones(4000, 2, 1, 8))
    assert float(out.detach().var()) == pytest.approx(1 / (2 * depth), rel=0.15)


def test_memory_is_causal():
    """LayerNorm (not BatchNorm) on the query and a left-padded conv: no position sees the future."""
    mem = _layer(n_keys=8, heads=2, topm=3, k_dim=8, query_conv=3, share_query=True, key_norm=True,
                 tucker_rank=2, cores=2, ive=4, value_proj=True, softmax=False)
    x = torch.randn(2, 9, 16)
    y = x.clone()
    y[:, 5:] = torch.randn(2, 4, 16)
    torch.testing.assert_close(mem(x)[:, :5], mem(y)[:, :5])


def test_skip_layer_unit_reads_block_a_and_adds_after_block_b():
    from ultramem.model import build_model

    cfg = ModelCfg(depth=3, hidden=16, heads=2, vocab_size=32, arch="memory", impl="torch")
    cfg.mem.n_keys, cfg.mem.topm, cfg.mem.k_dim, cfg.mem.placement = 8, 2, 8, "0:2"
    model = build_model(cfg)
    seen = {}
    model.mems[0].register_forward_hook(lambda m, i, o: seen.update(inp=i[0]) and None)
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.update(u0=o[1]) and None)
    model(torch.randint(0, 32, (1, 5)))
    assert torch.equal(seen["inp"], seen["u0"])


def test_query_conv_starts_as_the_identity():
    """The causal depthwise query conv is initialised to pass the current token through (our choice, see
    memory.py): at init the layer equals the same layer without the conv."""
    mem = _layer(n_keys=8, heads=2, topm=3, k_dim=8, query_conv=5, key_norm=True, softmax=False)
    x = torch.randn(2, 7, 16)
    with_conv = mem(x)
    mem.conv = None
    torch.testing.assert_close(with_conv, mem(x))


def test_expected_topm_mean_matches_closed_forms():
    from ultramem.memory import expected_topm_mean

    assert expected_topm_mean(2, 1) == pytest.approx(1 / math.sqrt(math.pi), rel=0.03)   # E[max of 2 N(0,1)]
    assert expected_topm_mean(16, 16) == pytest.approx(0.0, abs=0.02)                  # all of them: the mean


@pytest.mark.parametrize("init,key_norm", [("improved", True), ("pkm", True), ("pkm", False)])
def test_layernorm_gains_at_init(init, key_norm):
    """improved: query gain 1 / sqrt(E[mean top-m of n]), key gain 1 / sqrt(D_k / 2); q/k LN before it: the
    official code's 1 / D_k^0.33 on both; the query LN alone (PKM): 1."""
    from ultramem.memory import expected_topm_mean

    mem = _layer(n_keys=32, heads=2, topm=4, k_dim=16, key_norm=key_norm, init=init)
    q = float(mem.q_norm.weight.detach()[0])
    if init == "improved":
        assert q == pytest.approx(expected_topm_mean(32, 4) ** -0.5)
        assert float(mem.k_norm.weight.detach()[0]) == pytest.approx(8 ** -0.5)
    elif key_norm:
        assert q == pytest.approx(16 ** -0.33) and float(mem.k_norm.weight.detach()[0]) == pytest.approx(16 ** -0.33)
    else:
        assert q == 1.0 and mem.k_norm is None
    assert torch.all(mem.q_norm.weight == q)


def test_a_standalone_layer_is_initialised():
    """Built on its own (not through build_model), a memory layer or MoE holds no uninitialised memory."""
    from ultramem.memory import MemoryLayer, MoE

    cfg = ModelCfg(depth=2, hidden=16, heads=2, vocab_size=32, arch="memory", impl="torch")
    cfg.mem.n_keys, cfg.mem.topm, cfg.mem.k_dim, cfg.mem.tucker_rank, cfg.mem.cores = 8, 2, 8, 2, 2
    cfg.mem.query_conv = 3
    torch.manual_seed(0)
    mem = MemoryLayer(cfg)
    for p in (mem.keys, mem.values, mem.core):
        assert torch.isfinite(p).all() and 0 < float(p.detach().abs().max()) < 20
    assert torch.isfinite(mem(torch.randn(1, 4, 16))).all()
    moe = MoE(ModelCfg(depth=2, hidden=16, heads=2, vocab_size=32, arch="moe"))
    assert all(float(w.detach().std()) == pytest.approx(0.02, rel=0.2) for w in (moe.w_gate, moe.w_up, moe.w_down))
