"""Text generation from a trained LM (the ``sample`` command reloads the run with ``train.load_run``)."""

from __future__ import annotations

import torch

from reprokit.config import ConfigError
from reprokit.rng import step_generator

from .config import Cfg

__all__ = ["generate", "sample_text"]


@torch.no_grad()
def generate(model, prompt: torch.Tensor, n_new: int, temperature: float = 0.8,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Autoregressive sampling from ``prompt`` (B, T0) -> (B, T0 + n_new); the window is cropped to the
    model's context."""
    idx = prompt
    for _ in range(n_new):
        logits = model(idx[:, -model.cfg.context:])[:, -1].float()   # (B, V)
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def sample_text(model, cfg: Cfg, data, n_new: int = 200, temperature: float = 0.8, prompt_tokens: int = 16) -> str:
    """Continue the first ``prompt_tokens`` validation tokens; the draws come from the keyed stream
    ``step_generator(eval.seed, "sample")``. Token ids are printed when the data has no decoder."""
    if cfg.model.kind != "lm":
        raise ConfigError("sample: only language models (model.kind=lm) generate text")
    dev = next(model.parameters()).device
    prompt = torch.as_tensor(data.val[:prompt_tokens].astype("int64"), device=dev)[None]
    g = step_generator(cfg.eval.seed, "sample", device=dev)
    ids = generate(model, prompt, n_new, temperature, generator=g)[0].tolist()
    return data.decode(ids) if data.decode is not None else " ".join(map(str, ids))
