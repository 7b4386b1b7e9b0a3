"""``sample``: generate text from a trained LM run (latest checkpoint in --out-dir)."""

from __future__ import annotations

from pathlib import Path

import torch

from reprokit.checkpoint import check_config_compatible, load_checkpoint
from reprokit.config import load_config, to_dict

from .config import Cfg


@torch.no_grad()
def generate(model, prompt: torch.Tensor, n_new: int, temperature: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Autoregressive sampling (the window is cropped to the model's context)."""
    g = torch.Generator(device=prompt.device).manual_seed(seed)
    idx = prompt
    for _ in range(n_new):
        logits = model(idx[:, -model.cfg.context:])[:, -1].float()
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def cmd_sample(args) -> int:
    from .model import build_model
    from .train import make_data
    cfg = load_config(Cfg, args.config, overrides=args.overrides or [])
    if cfg.model.kind != "lm":
        raise SystemExit("sample: only language models (model.kind=lm) generate text")
    out = Path(args.out_dir or cfg.out_dir)
    data = make_data(cfg)
    ck = load_checkpoint(out / "ckpt")
    if ck is None:
        raise SystemExit(f"no checkpoint under {out / 'ckpt'}")
    check_config_compatible(ck.config, to_dict(cfg), keys=("model",))
    model = build_model(cfg.model)
    model.load_state_dict(ck.model)
    model.eval()
    prompt = torch.as_tensor(data.val[:16].astype("int64"))[None]
    ids = generate(model, prompt, 200)[0].tolist()
    text = data.decode(ids) if data.decode is not None else " ".join(map(str, ids))
    (out / "sample.txt").write_text(text)
    print(text)
    return 0
