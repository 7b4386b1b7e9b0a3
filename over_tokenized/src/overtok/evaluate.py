"""Held-out evaluation: next-token loss (nats), perplexity, bits per byte where the bytes are known.

Windows are non-overlapping (``data.eval_windows``): every token of the split after the first is scored
once, with the n-gram window and the attention restarting at each window start (and the n-gram window at
document boundaries). ``bpb`` = total NLL / (ln 2 x UTF-8 bytes) where the text is known
(``reprokit.lmdata.eval_bytes``: the split's text for a whole split, the decoded scored tokens for a prefix);
otherwise (synthetic ids) only ``bpt`` (bits per token) is reported, never labelled as bits per byte. Only the next-token head is scored (the MTP head is a
training signal; Table 5 reports the next-token loss too).
"""

from __future__ import annotations

import torch

from reprokit.dist import get_rank, get_world_size
from reprokit.lmdata import eval_bytes
from reprokit.metrics.lm import LMAccumulator

from .data import LMData, eval_windows


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, data: LMData, split: str, seq_len: int, batch_size: int,
                max_tokens: int = 0) -> dict:
    """{"loss", "ppl", "bpt", ["bpb"], "tokens"} on ``split`` (its first ``max_tokens`` tokens when > 0);
    windows are spread over the ranks and the sums all-reduced."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    acc = LMAccumulator()
    for x, y, ds in eval_windows(data, split, seq_len, batch_size, max_tokens, get_rank(), get_world_size()):
        logits = model(x.to(dev), ds.to(dev))
        acc.update_logits(logits, y.to(dev))
    acc.reduce()
    d = acc.as_dict(eval_bytes(data, split, max_tokens))
    model.train(was_training)
    return {"loss": d["nll"], "ppl": d["ppl"], "bpt": d["bpt"], **({"bpb": d["bpb"]} if "bpb" in d else {}),
            "tokens": d["n_tokens"]}
