"""Text pipeline for the language-model papers: document-level split, tokenisation, memmapped ids.

``prepare_text`` splits a corpus *by whole document* (deterministically from ``seed``), tokenises each
split with a character-level vocabulary or a byte-level BPE trained locally on the train split only,
and stores the ids as ``np.memmap`` files in a cache directory keyed by a hash of every input
(corpus content, tokenizer, vocabulary size, split fractions, seed). ``WindowSampler`` draws random
training windows with a reproducible, per-rank random stream that can be checkpointed, and
``TextData.eval_batches`` walks a split in non-overlapping windows for exact evaluation.

Cache layout (``cache_dir``, default ``data_dir()/text/<key>``)::

    meta.json        vocab_size, dtype, token and UTF-8 byte counts per split, documents per split
    tokenizer.json   the tokenizer (``tokenizers`` JSON for BPE; the character list for char)
    train.bin / val.bin / test.bin   token ids (uint16 when vocab_size < 65536, else uint32)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reprokit.fetch import data_dir

__all__ = ["SEPARATOR", "SPLITS", "TextData", "WindowSampler", "prepare_text", "split_documents"]

SPLITS = ("train", "val", "test")
SEPARATOR = "\n\n"
"""Joins the documents of one split (their texts end with a newline already in the built-in corpora)."""
_FORMAT_VERSION = 1


def split_documents(
    names: Sequence[str], split: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole documents to train/val/test, deterministically from ``seed``.

    The names are sorted, permuted with ``numpy.random.default_rng(seed)``, and cut into consecutive
    groups. Sizes: ``round(frac * N)`` for val and test, except that a split with a positive fraction
    gets at least one document; train takes the rest and must be non-empty. Within a split, documents
    keep the sorted order.
    """
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(split)}")
    names = sorted(names)
    if len(set(names)) != len(names):
        raise ValueError("document names must be unique")
    n = len(names)
    sizes = [max(1, round(f * n)) if f > 0 else 0 for f in split[1:]]
    n_train = n - sum(sizes)
    if n_train < 1 or (split[0] > 0) != (n_train > 0):
        raise ValueError(
            f"cannot split {n} documents into fractions {tuple(split)} with a non-empty train split"
        )
    perm = np.random.default_rng(seed).permutation(n)
    order = [names[i] for i in perm]
    bounds = np.cumsum([0, n_train, *sizes])
    return {s: sorted(order[bounds[i] : bounds[i + 1]]) for i, s in enumerate(SPLITS)}


class _CharTokenizer:
    """Character-level tokenizer: id = index in the sorted characters of the whole corpus (+ separator)."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the character vocabulary") from e

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> _CharTokenizer:
        return cls(json.loads(path.read_text())["chars"])


class _BPETokenizer:
    """Byte-level BPE (HuggingFace ``tokenizers``); no special tokens, lossless round trip."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int) -> _BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet):
            raise ValueError(
                f"BPE vocab_size must be at least {len(alphabet)} (the byte alphabet), got {vocab_size}"
            )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            initial_alphabet=alphabet,
            show_progress=False,
            special_tokens=[],
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids]))

    def save(self, path: Path) -> None:
        self.tok.save(str(path))

    @classmethod
    def load(cls, path: Path) -> _BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def _load_tokenizer(kind: str, path: Path) -> _CharTokenizer | _BPETokenizer:
    return _CharTokenizer.load(path) if kind == "char" else _BPETokenizer.load(path)


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size < 65536 else np.uint32)


def _open_ids(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:  # np.memmap cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


@dataclass
class TextData:
    """A prepared corpus: token ids per split (read-only ``np.memmap``) and the tokenizer.

    ``bytes[split]`` is the UTF-8 byte count of the split's text (its documents joined with
    :data:`SEPARATOR`), for bits-per-byte. ``docs[split]`` lists the documents of each split.
    """

    path: Path
    vocab_size: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    bytes: dict[str, int]
    docs: dict[str, list[str]]
    tokenizer_kind: str
    meta: dict[str, Any] = field(repr=False)
    _tokenizer: _CharTokenizer | _BPETokenizer = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextData:
        """Open a prepared cache directory (as written by :func:`prepare_text`)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        ids = {s: _open_ids(path / f"{s}.bin", dtype, meta["tokens"][s]) for s in SPLITS}
        return cls(
            path=path,
            vocab_size=int(meta["vocab_size"]),
            bytes={s: int(meta["bytes"][s]) for s in SPLITS},
            docs={s: list(meta["docs"][s]) for s in SPLITS},
            tokenizer_kind=meta["tokenizer"],
            meta=meta,
            _tokenizer=_load_tokenizer(meta["tokenizer"], path / "tokenizer.json"),
            **ids,
        )

    def split(self, name: str) -> np.ndarray:
        """The token ids of split ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self._tokenizer.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """Text of token ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._tokenizer.decode(list(ids))

    def eval_batches(
        self, split: str, seq_len: int, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows covering the whole split, as ``(x, y)`` LongTensor batches.

        Window ``k`` has inputs ``ids[k*T : (k+1)*T]`` and targets shifted by one, so every token after
        the first is a target exactly once (``len(split) - 1`` targets in total). Full windows come in
        batches of ``batch_size`` (the last such batch may be smaller); the final partial window, if any,
        comes last as its own batch of shape ``(1, r)`` with ``r < seq_len``.
        """
        if seq_len < 1 or batch_size < 1:
            raise ValueError("seq_len and batch_size must be positive")
        ids = self.split(split)
        n_targets = len(ids) - 1
        n_full = max(n_targets, 0) // seq_len
        for start in range(0, n_full, batch_size):
            rows = range(start, min(start + batch_size, n_full))
            chunk = np.stack(
                [np.asarray(ids[k * seq_len : (k + 1) * seq_len + 1], dtype=np.int64) for k in rows]
            )
            t = torch.from_numpy(chunk)
            yield t[:, :-1], t[:, 1:]
        rest = n_targets - n_full * seq_len
        if rest > 0:
            t = torch.from_numpy(np.asarray(ids[n_full * seq_len :], dtype=np.int64))[None]
            yield t[:, :-1], t[:, 1:]


def _corpus_docs(corpus: str | Mapping[str, str]) -> tuple[str, dict[str, str]]:
    if isinstance(corpus, str):
        from reprokit.datasets import load_corpus

        return corpus, load_corpus(corpus)
    if not isinstance(corpus, Mapping) or not corpus:
        raise TypeError("corpus must be a corpus name or a non-empty dict {document name: text}")
    for k, v in corpus.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("corpus dict must map str document names to str texts")
    return "custom", dict(corpus)


def _content_hash(docs: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(docs):
        for part in (name, docs[name]):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def prepare_text(
    corpus: str | Mapping[str, str] = "shakespeare",
    tokenizer: Literal["char", "bpe"] = "char",
    vocab_size: int = 1024,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TextData:
    """Split, tokenise and cache a corpus; return the memmapped :class:`TextData`.

    ``corpus``: a corpus name (``"shakespeare"``, ``"austen"``, ``"brown"``) or ``{name: text}``.
    Documents are assigned whole to a split by :func:`split_documents` (no document in two splits).
    ``tokenizer="char"``: one id per character, vocabulary = the sorted characters of the whole corpus
    plus those of :data:`SEPARATOR` (``vocab_size`` is ignored; the symbol set is not a
    leak of content). ``tokenizer="bpe"``: byte-level BPE with ``vocab_size`` entries trained
    on the train split only (lossless on any text). The result is cached under ``cache_dir`` (default
    ``data_dir()/text``) in a sub-directory named by a hash of (corpus content, tokenizer, vocab_size,
    split, seed); an existing complete cache is reused.
    """
    if tokenizer not in ("char", "bpe"):
        raise ValueError(f"tokenizer must be 'char' or 'bpe', got {tokenizer!r}")
    corpus_name, docs = _corpus_docs(corpus)
    split = tuple(float(f) for f in split)
    key_fields = {
        "format": _FORMAT_VERSION,
        "corpus": _content_hash(docs),
        "tokenizer": tokenizer,
        "vocab_size": int(vocab_size) if tokenizer == "bpe" else None,
        "split": split,
        "seed": int(seed),
        "separator": SEPARATOR,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else data_dir() / "text"
    final = root / f"{corpus_name}-{tokenizer}-{key}"
    if (final / "meta.json").is_file():
        return TextData.load(final)

    assignment = split_documents(list(docs), split, seed)
    texts = {s: SEPARATOR.join(docs[d] for d in assignment[s]) for s in SPLITS}
    if tokenizer == "char":
        tok: _CharTokenizer | _BPETokenizer = _CharTokenizer(
            sorted(set("".join(texts.values())) | set(SEPARATOR))
        )
    else:
        tok = _BPETokenizer.train([docs[d] for d in assignment["train"]], int(vocab_size))
    dtype = _token_dtype(tok.vocab_size)

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        tok.save(work / "tokenizer.json")
        n_tokens: dict[str, int] = {}
        for s in SPLITS:
            ids = np.asarray(tok.encode(texts[s]), dtype=np.int64)
            if ids.size and int(ids.max()) >= tok.vocab_size:
                raise RuntimeError("tokenizer produced an id outside its vocabulary")
            n_tokens[s] = int(ids.size)
            if ids.size:
                mm = np.memmap(work / f"{s}.bin", dtype=dtype, mode="w+", shape=(ids.size,))
                mm[:] = ids
                mm.flush()
                del mm
            else:
                (work / f"{s}.bin").touch()
        meta = {
            **key_fields,
            "corpus_name": corpus_name,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "tokens": n_tokens,
            "bytes": {s: len(texts[s].encode("utf-8")) for s in SPLITS},
            "docs": assignment,
        }
        (work / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "meta.json").is_file():  # else a concurrent call finished first: use its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TextData.load(final)


class WindowSampler:
    """Random training windows from a 1-D token array, reproducible per ``(seed, rank)``.

    Each rank draws from its own stream, ``numpy.random.Generator(PCG64(SeedSequence([seed, rank])))``,
    so ranks are independent and each run is reproducible. :meth:`state_dict` /
    :meth:`load_state_dict` capture the stream position so a resumed run continues exactly.
    """

    def __init__(
        self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0
    ) -> None:
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError("seq_len and batch_size must be positive")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, got {len(tokens)}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.step = 0
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank])))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` LongTensors of shape ``(batch_size, seq_len)``; ``y`` is ``x`` shifted by one."""
        starts = self._rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        T = self.seq_len
        chunk = np.stack([np.asarray(self.tokens[s : s + T + 1], dtype=np.int64) for s in starts])
        self.step += 1
        t = torch.from_numpy(chunk)
        return t[:, :-1], t[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (configuration, step count and random-stream position)."""
        return {
            "seed": self.seed,
            "rank": self.rank,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "num_tokens": len(self.tokens),
            "step": self.step,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses a state made with a different configuration."""
        mine = self.state_dict()
        diff = [k for k in ("seed", "rank", "seq_len", "batch_size", "num_tokens") if state[k] != mine[k]]
        if diff:
            raise ValueError(
                "sampler state does not match this sampler: "
                + ", ".join(f"{k}={state[k]!r} (here {mine[k]!r})" for k in diff)
            )
        self._rng.bit_generator.state = dict(state["rng"])
        self.step = int(state["step"])
