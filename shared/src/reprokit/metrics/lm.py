"""Language-model evaluation accumulators: token NLL -> mean NLL, perplexity, bits per byte."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["LMAccumulator"]


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _reduce_device() -> torch.device:
    """NCCL only reduces CUDA tensors; every other backend takes CPU tensors."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class LMAccumulator:
    """Accumulates summed token negative log-likelihood (nats) and token counts in float64.

    ``update`` adds local sums; ``reduce()`` sums them over all ranks when ``torch.distributed`` is
    initialised (a no-op otherwise). ``reduce`` is idempotent: it always reduces the *local* totals,
    and the reduced totals are used by the properties until the next ``update``.

    * ``nll``  -- mean NLL per token (nats)
    * ``ppl``  -- ``exp(nll)``
    * ``bits_per_byte(n_bytes)`` -- ``nll_sum / (ln 2 * n_bytes)``, where ``n_bytes`` is the UTF-8
      size of the evaluated text (all ranks together after ``reduce``).
    """

    def __init__(self) -> None:
        self.local_nll_sum = 0.0
        self.local_tokens = 0
        self._reduced: tuple[float, int] | None = None

    def update(self, nll_sum: float | torch.Tensor, n_tokens: int | torch.Tensor) -> None:
        """Add a summed NLL (nats) over ``n_tokens`` tokens."""
        if isinstance(nll_sum, torch.Tensor):
            nll_sum = nll_sum.detach().double().sum().item()
        if isinstance(n_tokens, torch.Tensor):
            n_tokens = int(n_tokens.sum().item())
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        self.local_nll_sum += float(nll_sum)
        self.local_tokens += int(n_tokens)
        self._reduced = None

    def update_logits(self, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> None:
        """Convenience: add the cross-entropy of ``logits`` (..., V) against ``targets`` (...),
        computed in float32 or wider; positions equal to ``ignore_index`` are skipped."""
        lg = logits.reshape(-1, logits.shape[-1])
        if lg.dtype not in (torch.float32, torch.float64):
            lg = lg.float()
        tg = targets.reshape(-1)
        nll = F.cross_entropy(lg, tg, ignore_index=ignore_index, reduction="sum")
        self.update(nll, int((tg != ignore_index).sum()))

    def reduce(self) -> LMAccumulator:
        """All-reduce (sum) the local totals across ranks; no-op without torch.distributed."""
        if not _dist_ready() or torch.distributed.get_world_size() == 1:
            self._reduced = (self.local_nll_sum, self.local_tokens)
            return self
        t = torch.tensor([self.local_nll_sum, float(self.local_tokens)], dtype=torch.float64,
                         device=_reduce_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        self._reduced = (float(t[0].item()), int(round(float(t[1].item()))))
        return self

    @property
    def nll_sum(self) -> float:
        """Total NLL in nats (reduced totals after ``reduce()``)."""
        return self._reduced[0] if self._reduced is not None else self.local_nll_sum

    @property
    def n_tokens(self) -> int:
        """Number of tokens (reduced totals after ``reduce()``)."""
        return self._reduced[1] if self._reduced is not None else self.local_tokens

    @property
    def nll(self) -> float:
        """Mean NLL per token, nats."""
        if self.n_tokens == 0:
            raise ValueError("LMAccumulator: no tokens accumulated")
        return self.nll_sum / self.n_tokens

    @property
    def ppl(self) -> float:
        """Perplexity ``exp(nll)``."""
        return math.exp(self.nll)

    def bits_per_byte(self, n_bytes: int) -> float:
        """``nll_sum / (ln 2 * n_bytes)``."""
        if n_bytes <= 0:
            raise ValueError(f"n_bytes must be > 0, got {n_bytes}")
        return self.nll_sum / (math.log(2.0) * n_bytes)

    @property
    def bits_per_token(self) -> float:
        """``nll / ln 2``: what a "bpb" becomes when the bytes behind the tokens are unknown."""
        return self.nll / math.log(2.0)

    def as_dict(self, n_bytes: int | None = None) -> dict[str, Any]:
        """``{"nll", "ppl", "n_tokens", "bpt"[, "bpb"]}`` for logging: bits per byte only where the
        byte count of the evaluated text is known, bits per token always (never mislabelled)."""
        d: dict[str, Any] = {"nll": self.nll, "ppl": self.ppl, "n_tokens": self.n_tokens,
                             "bpt": self.bits_per_token}
        if n_bytes is not None:
            d["bpb"] = self.bits_per_byte(n_bytes)
        return d
