"""Samples from a trained run (``overtok sample --run DIR``): continuations of held-out prompts."""

from __future__ import annotations

import torch

from .data import LMData, eval_windows
from .model import OverTokenizedLM


@torch.no_grad()
def sample_continuations(model: OverTokenizedLM, data: LMData, n: int = 4, prompt_len: int = 16,
                         new_tokens: int = 48, temperature: float = 0.8, seed: int = 0) -> list[dict]:
    """``n`` prompts from the start of the val split's windows, each continued by sampling (the whole
    window is re-encoded every step: the n-gram ids of the new tokens follow the same hash)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x, _, _ = next(eval_windows(data, "val", prompt_len, n))
    out = []
    for row in x:
        ids = row[None].clone()
        for _ in range(new_tokens):
            ctx = ids[:, -model.cfg.context:]
            logits = model(ctx)[:, -1].float() / max(temperature, 1e-4)
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)
            ids = torch.cat([ids, nxt], dim=1)
        prompt, cont = ids[0, :prompt_len].tolist(), ids[0, prompt_len:].tolist()
        rec = {"prompt_ids": prompt, "continuation_ids": cont}
        if data.decode is not None:
            rec.update(prompt=data.decode(prompt), continuation=data.decode(cont))
        out.append(rec)
    return out
