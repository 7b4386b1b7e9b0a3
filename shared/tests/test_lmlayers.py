"""reprokit.lmlayers: RoPE is a rotation that makes q.k depend on the offset only; attention is causal."""

import torch

from reprokit.lmlayers import Attention, RMSNorm, SwiGLU, apply_rope, rope_tables


def test_rope_is_a_rotation_with_relative_positions():
    torch.manual_seed(0)
    cos, sin = rope_tables(16, 8, 10000.0, "cpu")
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    Q, K = apply_rope(q.expand(1, 1, 16, 8), cos, sin), apply_rope(k.expand(1, 1, 16, 8), cos, sin)
    torch.testing.assert_close(Q.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 16))
    dots = (Q[0, 0, :, None] * K[0, 0, None, :]).sum(-1)              # (16, 16): q at i, k at j
    torch.testing.assert_close(dots[5, 2], dots[13, 10])              # same offset, same score
    assert not torch.isclose(dots[5, 2], dots[5, 4])


def test_attention_is_causal_and_blocks_have_the_checkpoint_names():
    torch.manual_seed(0)
    att = Attention(16, 4)
    cos, sin = rope_tables(7, 4, 10000.0, "cpu")
    x = torch.randn(2, 7, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 3, 16)
    torch.testing.assert_close(att(x, cos, sin)[:, :4], att(y, cos, sin)[:, :4])
    assert not torch.allclose(att(x, cos, sin)[:, 4:], att(y, cos, sin)[:, 4:])
    assert set(dict(att.named_parameters())) == {"qkv.weight", "out.weight"}
    assert set(dict(SwiGLU(16, 32).named_parameters())) == {"gate.weight", "up.weight", "down.weight"}
    n = RMSNorm(16)
    torch.testing.assert_close(n(3 * x).pow(2).mean(-1), torch.ones(2, 7), rtol=1e-4, atol=1e-4)
