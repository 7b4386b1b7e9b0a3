"""Every data construction: character-level Shakespeare (reprokit.text, split by whole plays), Fashion-MNIST,
synthetic stand-ins and user token files (memmap), plus the per-step batches.

* :func:`make_data` is the one entry point (train, load_run and reproduce call it); for an LM it resolves
  ``model.vocab_size`` from the data when the source has a tokenizer.
* A user path that does not exist, or a file that cannot hold the configured windows, is a
  :class:`reprokit.errors.DataError` naming the path and its config key; nothing is written before the check.
* Batches are a pure function of ``(train.seed, rank, step)`` through ``reprokit.rng.step_rng(seed, "batch",
  rank, step)``, so a resumed run sees exactly the data of a straight run.
* Bits per byte need the bytes behind the tokens: :meth:`LMData.n_bytes` is known for text with a decoder
  (Shakespeare, char or BPE) and None otherwise (synthetic Markov tokens, user token files), where the
  evaluation reports bits per token only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reprokit.config import ConfigError
from reprokit.errors import DataError
from reprokit.rng import step_rng

from .config import Cfg

__all__ = ["LMData", "ImageData", "make_data", "load_lm_data", "load_image_data", "lm_batch", "image_batch",
           "analysis_inputs"]

_NPY_MAGIC = b"\x93NUMPY"
_VOCAB_CHECK_TOKENS = 1 << 20   # token ids of a user file are checked against the vocabulary on this prefix


@dataclass
class LMData:
    vocab_size: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    decode: object = None            # ids -> str; None when the bytes behind the tokens are unknown

    def n_bytes(self, ids: np.ndarray) -> int | None:
        """UTF-8 bytes of the text whose ids are the *targets* ``ids`` (the bits-per-byte denominator);
        None without a decoder (bits per byte are then not defined, only bits per token)."""
        if self.decode is None:
            return None
        return len(self.decode(ids).encode("utf-8"))


def _memmap(path: str, key: str, dtype: str, min_tokens: int) -> np.ndarray:
    p = Path(path)
    if not path or not p.is_file():
        raise DataError(f"{key}: token file {path!r} does not exist (data.source=memmap needs pre-tokenized "
                        "flat token files; see the README, 'Scaling out')")
    try:
        with open(p, "rb") as fh:
            npy = fh.read(len(_NPY_MAGIC)) == _NPY_MAGIC
        arr = np.load(p, mmap_mode="r") if npy else np.memmap(p, dtype=dtype, mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{key}: {path} cannot be read as {'a .npy array' if npy else dtype + ' tokens'} "
                        f"({e})") from e
    if arr.ndim != 1:
        raise DataError(f"{key}: {path} holds an array of shape {arr.shape}; expected a flat token stream")
    if len(arr) < min_tokens:
        raise DataError(f"{key}: {path} holds {len(arr)} tokens, fewer than one window of "
                        f"train.seq_len + 1 = {min_tokens}")
    return arr


def load_lm_data(cfg: Cfg) -> LMData:
    d = cfg.data
    if d.source == "synthetic":
        from reprokit.testing import synthetic_tokens
        v = cfg.model.vocab_size
        if v < 1:
            raise ConfigError(f"model.vocab_size must be >= 1 for data.source=synthetic, got {v}")
        toks = synthetic_tokens(d.synthetic_tokens, vocab=v, seed=d.split_seed).numpy().astype(np.int64)
        n = len(toks)
        return LMData(v, toks[: int(0.8 * n)], toks[int(0.8 * n): int(0.9 * n)], toks[int(0.9 * n):])
    if d.source == "shakespeare":
        from reprokit.text import prepare_text
        td = prepare_text(corpus="shakespeare", tokenizer=d.tokenizer, vocab_size=d.vocab_size,
                          split=(0.8, 0.1, 0.1), seed=d.split_seed)
        return LMData(td.vocab_size, td.train, td.val, td.test, decode=td.decode)
    if d.source == "memmap":
        need = cfg.train.seq_len + 1
        paths = {"train": ("data.train_path", d.train_path), "val": ("data.val_path", d.val_path),
                 "test": ("data.test_path", d.test_path) if d.test_path else ("data.val_path", d.val_path)}
        arr = {k: _memmap(v, key, d.memmap_dtype, need) for k, (key, v) in paths.items()}  # paths first
        v = cfg.model.vocab_size
        if v < 1:
            raise ConfigError(f"model.vocab_size must be >= 1 for data.source=memmap (a token file carries no "
                              f"vocabulary), got {v}")
        for k, (key, path) in paths.items():
            top = int(np.max(arr[k][:_VOCAB_CHECK_TOKENS]))
            if top >= v:
                raise DataError(f"{key}: {path} holds token id {top} >= model.vocab_size={v}")
        return LMData(v, arr["train"], arr["val"], arr["test"])
    raise ConfigError(f"data.source={d.source!r} is not a text source for model.kind=lm; "
                      "valid: synthetic, shakespeare, memmap")


def lm_batch(tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int, step: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows ``(x, y)``, each (B, T) with y shifted by one; a pure function of (seed, rank, step)."""
    rng = step_rng(seed, "batch", rank, step)
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len + 1)[None]          # (B, T + 1)
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
    d, m = cfg.data, cfg.model
    if d.source == "synthetic_images":
        from reprokit.testing import synthetic_images
        x, y = synthetic_images(d.synthetic_images, m.channels, m.image_size, m.num_classes, seed=d.split_seed)
        xt, yt = synthetic_images(max(d.synthetic_images // 4, 16), m.channels, m.image_size, m.num_classes,
                                  seed=d.split_seed + 1)
        return ImageData(x, y, xt, yt)
    if d.source == "fashion_mnist":
        from reprokit.datasets import load_fashion_mnist
        if (m.channels, m.image_size, m.num_classes) != (1, 28, 10):
            raise ConfigError(f"data.source=fashion_mnist is 1 x 28 x 28 with 10 classes; got model.channels="
                              f"{m.channels}, model.image_size={m.image_size}, model.num_classes={m.num_classes}")

        def prep(split):
            x, y = load_fashion_mnist(split)
            x = torch.from_numpy(np.asarray(x)).float().div(255.0).sub(0.2860).div(0.3530)[:, None]
            return x, torch.from_numpy(np.asarray(y)).long()
        return ImageData(*prep("train"), *prep("test"))
    raise ConfigError(f"data.source={d.source!r} is not an image source for model.kind=vit; "
                      "valid: synthetic_images, fashion_mnist")


def image_batch(data: ImageData, batch_size: int, seed: int, rank: int, step: int):
    """Images sampled with replacement; a pure function of (seed, rank, step)."""
    rng = step_rng(seed, "batch", rank, step)
    i = torch.from_numpy(rng.integers(0, len(data.y_train), size=batch_size))
    return data.x_train[i], data.y_train[i]


def make_data(cfg: Cfg) -> LMData | ImageData:
    """The data of ``cfg`` (LM: sets ``cfg.model.vocab_size`` from a tokenizer's vocabulary)."""
    if cfg.model.kind == "lm":
        data = load_lm_data(cfg)
        cfg.model.vocab_size = data.vocab_size
        return data
    return load_image_data(cfg)


def analysis_inputs(cfg: Cfg, data: LMData | ImageData, n: int | None = None) -> torch.Tensor:
    """The fixed validation inputs of the analysis figures: LM ``n`` (default 16) windows of ``train.seq_len``
    tokens drawn by ``step_rng(eval.seed, "analysis")``, (n, T); ViT the first ``n`` (default 64) validation
    images, (n, C, H, W)."""
    if cfg.model.kind == "lm":
        T = cfg.train.seq_len
        rng = step_rng(cfg.eval.seed, "analysis")
        starts = rng.integers(0, len(data.val) - T - 1, size=n or 16)
        idx = starts[:, None] + np.arange(T)[None]                 # (n, T)
        return torch.from_numpy(np.asarray(data.val[idx], dtype=np.int64))
    return data.x_val[: n or 64]
