"""Paper-scale models: transformers' OLMoE / OLMo2 decoders with our Over-Encoding as the input embedding.

``build_paper_model(cfg)`` (``model.backbone: olmoe | olmo2``; needs the ``paper`` extra, i.e. transformers)
builds ``OlmoeForCausalLM`` / ``Olmo2ForCausalLM`` from their config classes and swaps our embedding
(``embedding.OverEncoding``, or the plain table for the baseline) in for ``model.embed_tokens``. The wrapper
has the interface of ``model.OverTokenizedLM`` (``forward(ids, doc_start, return_mtp)``, ``table_parameters``,
``param_counts``), so ``train.train`` runs it unchanged under torchrun. The OT configs add one MTP-DS head
(our ``MTPHead`` block on the backbone's final, normalised state; the backbone's own output head).
The tests build these models on the meta device and check the parameter counts against Table 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reprokit.config import ConfigError

from .config import ModelCfg
from .embedding import build_embedding
from .layers import MTPHead, rope_tables


def hf_config(cfg: ModelCfg):
    """The transformers config of the backbone (sizes from ``cfg``)."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ConfigError(f"model.backbone={cfg.backbone} needs transformers: uv sync --extra paper") from e
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.depth,
                  num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                  max_position_embeddings=cfg.context, tie_word_embeddings=cfg.tie_embeddings,
                  rms_norm_eps=cfg.norm_eps, initializer_range=cfg.init_std)
    if cfg.backbone == "olmoe":
        return transformers.OlmoeConfig(intermediate_size=cfg.expert_hidden, num_experts=cfg.experts,
                                        num_experts_per_tok=cfg.top_k, **common)
    if cfg.backbone == "olmo2":
        return transformers.Olmo2Config(intermediate_size=cfg.ffn_hidden, **common)
    raise ConfigError(f"model.backbone={cfg.backbone!r} is not a transformers backbone (olmoe, olmo2)")


class PaperLM(nn.Module):
    """A transformers backbone whose input embedding is ours; forward(ids, doc_start=None, return_mtp=False)."""

    def __init__(self, cfg: ModelCfg, sparse_tables: bool = True):
        super().__init__()
        cfg.check_complete()
        import transformers

        self.cfg = cfg
        hcfg = hf_config(cfg)
        cls = transformers.OlmoeForCausalLM if cfg.backbone == "olmoe" else transformers.Olmo2ForCausalLM
        self.hf = cls(hcfg)
        self.hf.set_input_embeddings(build_embedding(cfg.vocab_size, cfg.hidden, cfg.oe, sparse=sparse_tables,
                                                     impl=cfg.impl))
        if cfg.tie_embeddings:
            self.hf.lm_head.weight = self.embed.wte.weight
        self.mtp = nn.ModuleList(MTPHead(cfg) for _ in range(cfg.mtp.heads))

    @property
    def embed(self):
        return self.hf.model.embed_tokens

    def forward(self, ids: torch.Tensor, doc_start: torch.Tensor | None = None, return_mtp: bool = False):
        e = self.embed(ids, doc_start)                                   # (B, T, D)
        h = self.hf.model(inputs_embeds=e).last_hidden_state             # (B, T, D), after the final norm
        logits = self.hf.lm_head(h)                                      # (B, T, V)
        if not return_mtp:
            return logits
        if not self.mtp or ids.shape[1] < 2:
            return logits, None
        T = ids.shape[1]
        cos, sin = rope_tables(T - 1, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, ids.device)
        z = self.mtp[0](h[:, :-1], e[:, 1:], cos, sin)                   # (B, T-1, D)
        return logits, self.hf.lm_head(self.hf.model.norm(z))

    def table_parameters(self) -> list[nn.Parameter]:
        return [self.embed.ngram.weight] if hasattr(self.embed, "ngram") else []

    def param_counts(self) -> dict[str, int]:
        tables = sum(p.numel() for p in self.table_parameters())
        emb = sum(p.numel() for p in self.embed.parameters()) - tables
        total = sum(p.numel() for p in self.parameters())
        return {"total": total, "ngram_tables": tables, "embedding": emb, "non_embedding": total - tables - emb}


def build_paper_model(cfg: ModelCfg, sparse_tables: bool = True) -> PaperLM:
    return PaperLM(cfg, sparse_tables=sparse_tables)
