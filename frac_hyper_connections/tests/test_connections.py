import pytest
import torch

from hyperfrac.config import ModelCfg
from hyperfrac.connections import Connection, ConnSpec, connection_param_count, param_groups, parse_variant
from hyperfrac.model import DecoderLM, ViT

VARIANTS = ["shcx1", "dhcx1", "shcx2", "dhcx2", "shcx4", "dhcx4", "dhcx4-notanh", "sfcx1", "sfcx2", "dfcx2",
            "sfcx4", "dfcx4", "dfcx4-notanh"]


def _cfg(conn, **kw):
    base = dict(connection=conn, hidden=32, depth=3, heads=4, context=16, vocab_size=40,
                norm_eps=1e-12, sqrt_n_out_init=False)
    base.update(kw)
    return ModelCfg(**base)


def _shared_load(dst, src):
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected
    names = ("static_alpha", "static_beta", "W", "s_alpha", "s_beta", "norm_w")
    assert all(m.split(".")[-1] in names for m in missing), missing


@pytest.mark.parametrize("variant", VARIANTS)
def test_lm_equals_prenorm_at_init(variant):
    torch.manual_seed(0)
    ref = DecoderLM(_cfg("prenorm"))
    model = DecoderLM(_cfg(variant))
    _shared_load(model, ref)
    idx = torch.randint(0, 40, (2, 16))
    a, b = ref(idx), model(idx)
    assert (a - b).abs().max().item() < 1e-5, (a - b).abs().max().item()


@pytest.mark.parametrize("variant", ["shcx2", "dhcx2", "dfcx2"])
def test_vit_equals_prenorm_at_init(variant):
    kw = dict(kind="vit", mlp="gelu", norm_affine=True, pos="learned", image_size=8, patch=4)
    torch.manual_seed(0)
    ref = ViT(_cfg("prenorm", **kw))
    model = ViT(_cfg(variant, **kw))
    _shared_load(model, ref)
    x = torch.randn(3, 1, 8, 8)
    assert (ref(x) - model(x)).abs().max().item() < 1e-5


def test_equivalence_detects_a_difference():
    """The init test can fail: a read of the wrong stream after a change of the streams is caught."""
    torch.manual_seed(0)
    ref = DecoderLM(_cfg("prenorm"))
    model = DecoderLM(_cfg("dhcx2"))
    _shared_load(model, ref)
    with torch.no_grad():
        model.trunk.blocks[0].conn_attn.static_beta[1] = 0.0  # stream 1 misses the first attention output
    idx = torch.randint(0, 40, (2, 16))
    assert (ref(idx) - model(idx)).abs().max().item() > 1e-3


def test_sqrt_n_scaling_changes_out_proj_std():
    torch.manual_seed(0)
    a = DecoderLM(_cfg("dhcx4", hidden=256, sqrt_n_out_init=True))
    torch.manual_seed(0)
    b = DecoderLM(_cfg("dhcx4", hidden=256, sqrt_n_out_init=False))
    ra = a.trunk.blocks[0].attn.proj.weight.std() / b.trunk.blocks[0].attn.proj.weight.std()
    assert abs(ra.item() - 2.0) < 1e-4
    assert torch.equal(a.trunk.blocks[0].attn.qkv.weight, b.trunk.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("variant", ["dhcx4", "shcx4", "dfcx4", "sfcx4"])
def test_stream_mixing_perturbation_changes_output(variant):
    torch.manual_seed(0)
    model = DecoderLM(_cfg(variant))
    # give the streams distinct content first (otherwise equal HC streams make mixing invisible)
    with torch.no_grad():
        for c in model.trunk.connections():
            c.static_alpha[:, c.r:] += 0.05 * torch.randn(c.s, c.s)
    idx = torch.randint(0, 40, (2, 16))
    base = model(idx)
    c = model.trunk.connections()[2]
    for name, sl in (("mix", slice(c.r, None)), ("read", slice(0, c.r))):
        with torch.no_grad():
            saved = c.static_alpha.clone()
            c.static_alpha[:, sl] += 0.3 * torch.randn_like(c.static_alpha[:, sl])
            out = model(idx)
            c.static_alpha.copy_(saved)
        assert (out - base).abs().max().item() > 1e-4, name
    with torch.no_grad():
        c.static_beta += 0.5
    assert (model(idx) - base).abs().max().item() > 1e-4


def test_gradients_reach_static_and_dynamic_params():
    torch.manual_seed(0)
    model = DecoderLM(_cfg("dfcx2"))
    c = model.trunk.connections()[1]
    loss = model(torch.randint(0, 40, (2, 16))).square().mean()
    loss.backward()
    assert c.W.grad.abs().sum() > 0  # at init only W (and the static part) get gradient: tanh(0) = 0
    assert c.s_alpha.grad.item() == 0.0
    model.zero_grad()
    with torch.no_grad():
        c.W.normal_(0, 0.1)
    model(torch.randint(0, 40, (2, 16))).square().mean().backward()
    for p in (c.static_alpha, c.static_beta, c.W, c.s_alpha, c.s_beta, c.norm_w):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_module_param_count_matches_formula(variant):
    spec = parse_variant(variant)
    c = Connection(spec, 64, 0)
    assert sum(p.numel() for p in c.parameters()) == connection_param_count(spec, 64)
    k = spec.rate
    if not spec.dynamic:
        assert connection_param_count(spec, 64) == (k * (k + 2) if spec.kind == "hc" else k * (2 * k + 1))


@pytest.mark.parametrize("variant,expected", [("shcx2", 256), ("shcx4", 768), ("dhcx2", 262_464),
                                              ("dhcx4", 394_048), ("sfcx4", 1_152), ("dfcx4", 165_056)])
def test_paper_examples_d2048_L16(variant, expected):
    """HC App. B / Table 7 and FC Sec. 4.4: two modules per block, 16 blocks, d = 2048."""
    spec = parse_variant(variant)
    assert 32 * connection_param_count(spec, 2048) == expected
    assert 32 * sum(p.numel() for p in Connection(spec, 2048, 0, ).parameters()) == expected


def test_param_groups_static_without_decay():
    model = DecoderLM(_cfg("dhcx2"))
    g = {grp["name"]: {id(p) for p in grp["params"]} for grp in param_groups(model, 0.1)}
    c = model.trunk.connections()[0]
    for p in (c.static_alpha, c.static_beta, c.s_alpha, c.s_beta):
        assert id(p) in g["no_decay"]
    assert id(c.W) in g["decay"]
    assert id(model.trunk.blocks[0].attn.qkv.weight) in g["decay"]
    assert len(g["decay"] | g["no_decay"]) == len(list(model.parameters()))


@pytest.mark.parametrize("bad,frag", [("dhcx0", "got 0"), ("shcx-1", "got -1"), ("foo", "'foo'"),
                                      ("mhcx4", "'mhcx4'"), ("shcx2-notanh", "'shcx2-notanh'")])
def test_bad_variant_names(bad, frag):
    with pytest.raises(ValueError, match=frag):
        parse_variant(bad)


def test_frac_rate_must_divide_width():
    with pytest.raises(ValueError, match="m=3 .* hidden=32|m=3 must divide"):
        DecoderLM(_cfg("dfcx3"))


def test_sequence_longer_than_context():
    model = DecoderLM(_cfg("dhcx2"))
    with pytest.raises(ValueError, match="17.*context 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_spec_labels():
    assert parse_variant("DHCx4-notanh") == ConnSpec("hc", 4, True, False)
    assert parse_variant("DFC×4").label() == "DFCx4"
