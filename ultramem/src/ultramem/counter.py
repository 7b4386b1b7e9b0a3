"""Analytic counts per token: activated multiply-accumulates (MACs) and parameters of every arm.

Counted per token (what ``torch.utils.flop_counter`` sees as matmul / conv FLOPs = 2 x MACs, tested):
attention projections 4 D^2; dense SwiGLU 3 D F; MoE gate D E + top_k 3 D F_e; memory unit: query conv
k D, query D H_q D_k, key scoring H r n D_k, coarse rank combination 2 H r n (for r > 1; at r = 1 it is a scaling), Tucker grid H h (m r^2 +
m^2 r), projection E D_v D (when present); the LM head D V. Counted separately (an index_add that the FLOP
counter does not see): the weighted value reads H m D_v ("gather"). Not counted: the T-dependent attention
scores (identical across arms at equal context), norms, softmax, top-k selections.
"""

from __future__ import annotations

from .config import ModelCfg


def memory_unit_counts(cfg: ModelCfg) -> dict[str, int]:
    mc, D = cfg.mem, cfg.hidden
    H, m, n, dk, h, E = mc.heads, mc.topm, mc.n_keys, mc.k_dim, mc.cores, mc.ive
    r = max(mc.tucker_rank, 1)
    Dv = mc.value_width(D)
    Hq = H // 2 if mc.share_query else H
    proj = E > 1 or Dv != D
    matmul = (mc.query_conv * D + D * Hq * dk + H * r * n * dk + (2 * H * r * n if r > 1 else 0)
              + (H * h * (m * r * r + m * m * r) if mc.tucker_rank >= 1 else 0)
              + (E * Dv * D if proj else 0))
    params_dense = (mc.query_conv * D + D * Hq * dk + 2 * dk + H * 2 * r * n * (dk // 2)
                    + (dk if mc.key_norm else 0) + (H * h * r * r if mc.tucker_rank >= 1 else 0)
                    + (E * Dv * D if proj else 0))
    return {"matmul_macs": matmul, "gather_macs": H * m * Dv, "sparse_params": mc.n_physical() * Dv,
            "dense_params": params_dense}


def moe_counts(cfg: ModelCfg) -> dict[str, int]:
    mc, D = cfg.moe, cfg.hidden
    return {"matmul_macs": D * mc.experts + mc.top_k * 3 * D * mc.expert_hidden, "gather_macs": 0,
            "sparse_params": mc.experts * 3 * D * mc.expert_hidden, "dense_params": D * mc.experts}


def model_counts(cfg: ModelCfg) -> dict[str, int]:
    """Per-token activated MACs (``activated_macs`` = everything but the LM head) and parameter groups."""
    D, L = cfg.hidden, cfg.depth
    attn = 4 * D * D
    ffn = 3 * D * cfg.ffn_hidden
    macs = L * attn
    sparse = dense = 0
    moe_layers = {i % L for i in cfg.moe.layers} if cfg.arch == "moe" else set()
    for i in range(L):
        if i in moe_layers:
            c = moe_counts(cfg)
            macs += c["matmul_macs"]
            sparse += c["sparse_params"]
            dense += c["dense_params"]
        else:
            macs += ffn
            dense += ffn
    if cfg.arch == "memory":
        for _ in cfg.mem.units(L):
            c = memory_unit_counts(cfg)
            macs += c["matmul_macs"] + c["gather_macs"]
            sparse += c["sparse_params"]
            dense += c["dense_params"]
    dense += L * (attn + 2 * D) + D                                     # attention + norms + final norm
    return {"activated_macs": macs, "lm_head_macs": D * cfg.vocab_size, "sparse_params": sparse,
            "dense_non_embedding_params": dense, "embedding_params": D * cfg.vocab_size}
