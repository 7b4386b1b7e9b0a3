"""Data: character-level Shakespeare (reprokit.text, split by whole plays), Fashion-MNIST, synthetic stand-ins."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Cfg


@dataclass
class LMData:
    vocab_size: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    decode: object = None            # ids -> str (None for synthetic data: one byte per token)

    def n_bytes(self, ids: np.ndarray) -> int:
        """UTF-8 bytes of the text whose ids are the *targets* ``ids`` (bits-per-byte denominator)."""
        if self.decode is None:
            return int(len(ids))
        return len(self.decode(ids).encode("utf-8"))


def load_lm_data(cfg: Cfg) -> LMData:
    d = cfg.data
    if d.source == "synthetic":
        from reprokit.testing import synthetic_tokens
        v = cfg.model.vocab_size
        toks = synthetic_tokens(d.synthetic_tokens, vocab=v, seed=d.split_seed).numpy().astype(np.int64)
        n = len(toks)
        return LMData(v, toks[: int(0.8 * n)], toks[int(0.8 * n): int(0.9 * n)], toks[int(0.9 * n):])
    if d.source == "shakespeare":
        from reprokit.text import prepare_text
        td = prepare_text(corpus="shakespeare", tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                          split=(0.8, 0.1, 0.1), seed=d.split_seed)
        return LMData(td.vocab_size, td.train, td.val, td.test, decode=td.decode)
    if d.source == "memmap":
        paths = {"train": d.train_path, "val": d.val_path, "test": d.test_path or d.val_path}
        missing = [f"{k}={v!r}" for k, v in paths.items() if not v or not Path(v).is_file()]
        if missing:
            raise FileNotFoundError(f"data.source=memmap needs existing token files; missing: {', '.join(missing)}")
        arr = {k: np.memmap(v, dtype=d.memmap_dtype, mode="r") for k, v in paths.items()}
        return LMData(cfg.model.vocab_size, arr["train"], arr["val"], arr["test"])
    raise ValueError(f"data.source={d.source!r} is not a text source; valid: synthetic, shakespeare, memmap")


def lm_batch(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int, step: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows; a pure function of (seed, rank, step), so a resumed run sees exactly the same data."""
    rng = np.random.default_rng([seed, rank, step])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len + 1)[None]
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return chunk[:, :-1], chunk[:, 1:]


@dataclass
class ImageData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def __post_init__(self):
        if self.x_val is None:  # hold out the last 10% of the training images for LR selection
            k = len(self.y_train) - max(len(self.y_train) // 10, 1)
            self.x_train, self.x_val = self.x_train[:k], self.x_train[k:]
            self.y_train, self.y_val = self.y_train[:k], self.y_train[k:]


def load_image_data(cfg: Cfg) -> ImageData:
    d = cfg.data
    if d.source == "synthetic_images":
        from reprokit.testing import synthetic_images
        x, y = synthetic_images(d.synthetic_images, cfg.model.channels, cfg.model.image_size,
                                cfg.model.num_classes, seed=d.split_seed)
        xt, yt = synthetic_images(max(d.synthetic_images // 4, 16), cfg.model.channels, cfg.model.image_size,
                                  cfg.model.num_classes, seed=d.split_seed + 1)
        return ImageData(x, y, xt, yt)
    if d.source == "fashion_mnist":
        from reprokit.datasets import load_fashion_mnist

        def prep(split):
            x, y = load_fashion_mnist(split)
            x = torch.from_numpy(np.asarray(x)).float().div(255.0).sub(0.2860).div(0.3530)[:, None]
            return x, torch.from_numpy(np.asarray(y)).long()
        return ImageData(*prep("train"), *prep("test"))
    raise ValueError(f"data.source={d.source!r} is not an image source; valid: synthetic_images, fashion_mnist")


def image_batch(data: ImageData, batch_size: int, seed: int, rank: int, step: int):
    rng = np.random.default_rng([seed, rank, step])
    i = torch.from_numpy(rng.integers(0, len(data.y_train), size=batch_size))
    return data.x_train[i], data.y_train[i]
