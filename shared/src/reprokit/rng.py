"""Keyed randomness: one independent stream per (seed, key...) with no hand-made hashing.

Training draws its per-step randomness (batch indices, timesteps, noise, dropout of labels) from a
generator that is a pure function of the run's seed and named integer keys, typically
``(rank, step)`` plus a stream name. ``numpy.random.SeedSequence`` mixes the keys, so distinct keys
never share a stream by construction (a hash such as ``(seed * 7919 + step) * 131 + rank`` collides
for some pairs), and resuming at step N reproduces exactly the draws a straight run makes at step N.

    g = step_generator(seed, "batch", rank, step)          # torch.Generator (CPU)
    r = step_rng(seed, "noise", rank, step)                 # numpy.random.Generator
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "step_generator", "step_rng"]


def _entropy(seed: int, keys: tuple) -> list[int]:
    out = [int(seed)]
    for k in keys:
        if isinstance(k, str):
            out.append(zlib.crc32(k.encode()))  # a stream name; crc32 is stable across processes
        elif isinstance(k, bool | np.bool_) or not isinstance(k, int | np.integer):
            raise TypeError(f"rng keys are ints or stream names, got {k!r}")
        else:
            if k < 0:
                raise ValueError(f"rng keys must be non-negative, got {k}")
            out.append(int(k))
    return out


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for ``(seed, *keys)``; different keys give independent seeds."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    state = np.random.SeedSequence(_entropy(seed, keys)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def step_generator(seed: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


def step_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A fresh ``numpy.random.Generator`` for ``(seed, *keys)``."""
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, keys)))
