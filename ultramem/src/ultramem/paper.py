"""Paper-scale models: transformers' OLMo (dense / UltraMem / PKM arms) and OLMoE (MoE arms) decoders with our
memory units inserted at the configured placements.

``model.backbone: olmo | olmoe`` (needs the ``paper`` extra, i.e. transformers: ``uv sync --extra paper``).
The official UltraMem code is a fork of OLMo / OLMoE (notes Sec. 3.7), so these are the paper's own
baseline architectures: OLMo-1 blocks (non-parametric LayerNorm, SwiGLU, RoPE) and OLMoE blocks (RMSNorm,
q/k norm, top-k of E SwiGLU experts, softmax gate without renormalisation, the Switch balance loss).

Insertion (paper Fig. 3, ``model.mem.placement`` "a:b"): a forward hook on block a's
``post_attention_layernorm`` hands the normed FFN input u_a (B, T, D) to memory unit k, and a forward hook
on block b adds the unit's output to the residual stream that block b returns. For a == b the unit runs
parallel to block a's FFN (the PKM layout). The wrapper has ``model.UltraMemLM``'s interface
(``forward(ids, doc_start=None) -> logits``, ``aux``, ``mems``, ``value_parameters``, ``param_counts``), so
``train.train`` runs it unchanged; our own decoder (``model.backbone: ours``) stays the CPU backbone.
The tests build every paper config on the meta device and check its parameter counts against Table 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reprokit.config import ConfigError

from .config import ModelCfg
from .memory import MemoryLayer


def _transformers(cfg: ModelCfg):
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"model.backbone={cfg.backbone} needs transformers, which is not installed: "
                          "uv sync --extra paper") from e
    return transformers


def hf_config(cfg: ModelCfg):
    """The transformers config of the backbone (sizes from ``cfg``; MHA, no biases, no dropout)."""
    tf = _transformers(cfg)
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.depth,
                  num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                  max_position_embeddings=cfg.context, tie_word_embeddings=cfg.tie_embeddings,
                  initializer_range=cfg.init_std, rope_theta=cfg.rope_theta, attention_bias=False,
                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    if cfg.backbone == "olmo":
        return tf.OlmoConfig(intermediate_size=cfg.ffn_hidden, **common)
    if cfg.backbone == "olmoe":
        mc = cfg.moe
        return tf.OlmoeConfig(intermediate_size=mc.expert_hidden, num_experts=mc.experts,
                              num_experts_per_tok=mc.top_k, norm_topk_prob=False,
                              router_aux_loss_coef=mc.balance, rms_norm_eps=cfg.norm_eps, **common)
    raise ConfigError(f"model.backbone={cfg.backbone!r} is not a transformers backbone (olmo, olmoe)")


class PaperLM(nn.Module):
    """OLMo / OLMoE from transformers + our memory units; ``forward(ids, doc_start=None) -> (B, T, V)``."""

    def __init__(self, cfg: ModelCfg, seed: int = 0):
        super().__init__()
        cfg.check_complete()
        tf = _transformers(cfg)
        self.cfg = cfg
        cls = tf.OlmoeForCausalLM if cfg.backbone == "olmoe" else tf.OlmoForCausalLM
        self.hf = cls(hf_config(cfg))
        self.units = cfg.mem.units(cfg.depth) if cfg.arch == "memory" else []
        self.mems = nn.ModuleList(MemoryLayer(cfg, k, seed) for k in range(len(self.units)))
        self._pending: dict[int, list[torch.Tensor]] = {}
        layers = self.hf.model.layers
        for k, (a, b) in enumerate(self.units):
            layers[a].post_attention_layernorm.register_forward_hook(self._reader(k, b))
        for b in sorted({b for _, b in self.units}):
            layers[b].register_forward_hook(self._writer(b))
        self.aux = torch.zeros(())

    @property
    def wte(self) -> nn.Embedding:
        """The token embedding (tied to the output head), named as in ``UltraMemLM`` for the optimiser."""
        return self.hf.model.embed_tokens

    def _reader(self, k: int, b: int):
        def hook(module, args, u):                                       # u: (B, T, D) normed FFN input
            self._pending.setdefault(b, []).append(self.mems[k](u))
        return hook

    def _writer(self, b: int):
        def hook(module, args, h):                                       # h: (B, T, D) block b's output
            for o in self._pending.pop(b, []):
                h = h + o
            return h
        return hook

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None) -> torch.Tensor:
        self._pending = {}
        moe = self.cfg.backbone == "olmoe"
        out = self.hf(input_ids=ids, use_cache=False, **({"output_router_logits": True} if moe else {}))
        if self._pending:                                                # pragma: no cover - a hook was skipped
            raise RuntimeError(f"memory outputs for blocks {sorted(self._pending)} were never added")
        aux = [m.aux.to(out.logits.dtype) for m in self.mems]
        if moe and self.training and self.cfg.moe.balance > 0 and out.aux_loss is not None:
            aux.append(self.cfg.moe.balance * out.aux_loss.to(out.logits.dtype))
        self.aux = torch.stack(aux).sum() if aux else out.logits.new_zeros(())
        return out.logits                                                # (B, T, V)

    def value_parameters(self) -> list[nn.Parameter]:
        return [m.values for m in self.mems]

    def param_counts(self) -> dict[str, int]:
        """total; sparse (memory values or MoE experts); embedding (tied head); dense non-embedding."""
        total = sum(p.numel() for p in self.parameters())
        emb = self.wte.weight.numel()
        if not self.cfg.tie_embeddings:
            emb += self.hf.lm_head.weight.numel()
        sparse = sum(p.numel() for p in self.value_parameters())
        sparse += sum(p.numel() for n, p in self.hf.named_parameters() if ".mlp.experts." in n)
        return {"total": total, "sparse": sparse, "embedding": emb, "non_embedding": total - emb,
                "dense_non_embedding": total - emb - sparse}
