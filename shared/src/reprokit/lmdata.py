"""Language-model data for the LM papers: synthetic Markov tokens, the Brown corpus, a user's text folder or
token memmaps, with document starts, train batches and evaluation windows.

Each split is a 1-D token array plus a 0/1 array marking the first token of every document (papers that stop
an n-gram window at document boundaries use it; others may ignore it):

* ``brown``: ``reprokit.text.prepare_text(corpus="brown", tokenizer="bpe")`` (document-level split, BPE
  trained on the train split). Document starts: each document is re-encoded alone and the concatenation
  (with the separator tokens ending the previous document) is checked to equal the stored split; the result
  is cached under ``data_dir()/<cache_name>/``. UTF-8 bytes per split are known (bits per byte).
* ``corpus``: the named corpora of ``data.corpora`` (``reprokit.datasets.load_corpus``: e.g. ``[brown, gcide,
  austen]``) pooled into one document set (names prefixed ``<corpus>/``), then split and tokenised like
  ``brown``: a corpus large enough that a small LM run need not repeat its training data.
* ``text``: the same for a folder of ``*.txt`` files (one document each).
* ``memmap``: ``train.bin`` / ``val.bin`` [/ ``test.bin``] of ``data.dtype`` ids; a document ends with
  ``data.eos_id`` (the token after it starts the next one). Bytes unknown (bits per token) unless a
  ``meta.json`` gives them.
* ``synthetic``: ``reprokit.testing.synthetic_tokens`` (V = the model's vocabulary), cut into documents of
  ``data.synthetic_doc_len`` tokens. Bytes unknown.

Problems (a missing path, an empty folder, a malformed file) raise ``DataError`` naming the path and the
config key (``data.path``, ``model.vocab_size``). Moved here from over_tokenized/ and ultramem/, which used it
unchanged.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import ConfigError
from .errors import DataError
from .rng import step_rng

__all__ = ["LMDataCfg", "LMData", "SPLITS", "load_lm_data", "train_batch", "eval_windows", "eval_targets",
           "eval_bytes"]

SPLITS = ("train", "val", "test")


@dataclass
class LMDataCfg:
    """The ``data`` section of an LM paper's config (used as is by over_tokenized and ultramem)."""

    source: Literal["synthetic", "brown", "corpus", "text", "memmap"] = "synthetic"
    corpora: list[str] = field(default_factory=list)   # corpus: named corpora pooled, e.g. [brown, gcide, austen]
    # text: a folder of *.txt files (one document each), split and BPE-tokenised like brown;
    # memmap: a folder with train.bin / val.bin [/ test.bin] of token ids (data.dtype), model.vocab_size set
    path: str = ""
    dtype: Literal["uint16", "uint32"] = "uint16"
    eos_id: int = -1                 # memmap: the token that ends a document (-1: one long document)
    vocab_size: int = 2048           # BPE vocabulary (brown / text)
    split_seed: int = 0              # document-level split (reprokit.text.split_documents)
    synthetic_tokens: int = 20000    # synthetic: Markov tokens (reprokit.testing.synthetic_tokens), V = model.vocab_size
    synthetic_doc_len: int = 200     # synthetic: documents of this many tokens (exercises the boundary rule)


@dataclass
class LMData:
    vocab_size: int
    tokens: dict[str, np.ndarray]          # split -> token ids (1-D)
    starts: dict[str, np.ndarray]          # split -> uint8, 1 at the first token of each document
    n_bytes: dict[str, int] | None         # split -> UTF-8 bytes of its text, when known
    source: str
    decode: Callable[[list[int]], str] | None = None   # ids -> text (None: no tokenizer, e.g. synthetic)

    def split(self, name: str) -> np.ndarray:
        if name not in self.tokens:
            raise DataError(f"no split {name!r} in the {self.source} data (splits: {', '.join(self.tokens)})")
        return self.tokens[name]


def _starts_from_eos(ids: np.ndarray, eos_id: int) -> np.ndarray:
    starts = np.zeros(len(ids), dtype=np.uint8)
    if eos_id >= 0 and len(ids) > 1:
        starts[1:] = np.asarray(ids[:-1]) == eos_id
    if len(ids):
        starts[0] = 1
    return starts


def _synthetic(cfg: LMDataCfg, V: int) -> LMData:
    from .testing import synthetic_tokens

    if V < 2:
        raise ConfigError(f"model.vocab_size={V}: data.source=synthetic needs the vocabulary size set (e.g. 64)")
    toks = synthetic_tokens(cfg.synthetic_tokens, vocab=V, seed=cfg.split_seed).numpy()
    n = len(toks)
    cuts = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
    L = max(cfg.synthetic_doc_len, 1)
    tokens, starts = {}, {}
    for s, (a, b) in cuts.items():
        tokens[s] = toks[a:b]
        st = np.zeros(b - a, dtype=np.uint8)
        st[::L] = 1
        starts[s] = st
    return LMData(V, tokens, starts, None, "synthetic")


def _doc_starts_cache(td, cache_name: str) -> Path:
    from reprokit.fetch import data_dir

    return data_dir() / cache_name / f"docstarts-{Path(td.path).name}.npz"


def _document_starts(td, docs: dict[str, str], cache_name: str) -> dict[str, np.ndarray]:
    """Per split, 1 at each document's first token: the documents re-encoded one by one must reproduce the
    stored ids exactly (else a warning and no boundaries for that split)."""
    from .text import SEPARATOR

    cache = _doc_starts_cache(td, cache_name)
    if cache.is_file():
        with np.load(cache) as z:
            return {s: z[s] for s in SPLITS}
    sep = td.encode(SEPARATOR)
    out = {}
    for s in SPLITS:
        ids = np.asarray(td.split(s))
        starts = np.zeros(len(ids), dtype=np.uint8)
        pos, ok = 0, True
        for i, name in enumerate(td.docs[s]):
            if i:
                pos += len(sep)
            if pos < len(ids):
                starts[pos] = 1
            enc = td.encode(docs[name])
            if not np.array_equal(ids[pos:pos + len(enc)], enc):
                ok = False
                break
            pos += len(enc)
        if not ok or pos != len(ids):
            warnings.warn(f"{td.path}: the {s} split's tokens do not split at document boundaries; "
                          "using the sequence start only", stacklevel=2)
            starts[:] = 0
            if len(ids):
                starts[0] = 1
        out[s] = starts
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.stem}-{os.getpid()}.npz")
    np.savez(tmp, **out)
    os.replace(tmp, cache)
    return out


def _from_text_data(td, docs: dict[str, str], source: str, cache_name: str) -> LMData:
    starts = _document_starts(td, docs, cache_name)
    return LMData(td.vocab_size, {s: td.split(s) for s in SPLITS}, starts, dict(td.bytes), source, td.decode)


def _bpe_documents(cfg: LMDataCfg, docs: dict[str, str], source: str, cache_name: str) -> LMData:
    """``docs`` split 80/10/10 by whole document and tokenised by a BPE of ``data.vocab_size`` trained on the
    train split (``reprokit.text.prepare_text``, cached): the path of ``brown``, ``corpus`` and ``text``."""
    from .text import prepare_text

    td = prepare_text(corpus=docs, tokenizer="bpe", vocab_size=cfg.vocab_size, split=(0.8, 0.1, 0.1),
                      seed=cfg.split_seed)
    return _from_text_data(td, docs, source, cache_name)


def _brown(cfg: LMDataCfg, cache_name: str) -> LMData:
    from .datasets import load_corpus

    return _bpe_documents(cfg, load_corpus("brown"), "brown", cache_name)


def _named_corpora(cfg: LMDataCfg, cache_name: str) -> LMData:
    from .datasets import corpus_names, load_corpus

    names = list(cfg.corpora)
    if not names or set(names) - set(corpus_names()) or len(set(names)) != len(names):
        raise ConfigError(f"data.corpora={names}: data.source=corpus wants distinct corpus names from "
                          f"{corpus_names()} (e.g. data.corpora=[brown,gcide])")
    docs = {f"{n}/{k}": v for n in names for k, v in load_corpus(n).items()}
    return _bpe_documents(cfg, docs, "+".join(names), cache_name)


def _text_folder(cfg: LMDataCfg, cache_name: str) -> LMData:

    root = Path(cfg.path).expanduser()
    if not cfg.path or not root.is_dir():
        raise DataError(f"data.path={str(root)!r}: no such folder (data.source=text wants a folder of .txt files, "
                        "one document each)")
    files = sorted(root.rglob("*.txt"))
    if len(files) < 3:
        raise DataError(f"data.path={str(root)!r}: found {len(files)} .txt files; need at least 3 documents "
                        "(train / val / test are split by whole document)")
    docs = {}
    for f in files:
        try:
            docs[str(f.relative_to(root))] = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: unreadable as UTF-8 text ({e})") from e
    return _bpe_documents(cfg, docs, "text", cache_name)


def _memmap(cfg: LMDataCfg, V: int) -> LMData:
    root = Path(cfg.path).expanduser()
    if not cfg.path or not root.is_dir():
        raise DataError(f"data.path={str(root)!r}: no such folder (data.source=memmap wants train.bin and val.bin)")
    if V < 2:
        raise ConfigError("model.vocab_size: data.source=memmap needs the vocabulary size of the ids set")
    dtype = np.dtype(cfg.dtype)
    tokens, starts = {}, {}
    for s in SPLITS:
        f = root / f"{s}.bin"
        if not f.is_file():
            if s == "test":
                continue
            raise DataError(f"{f}: missing (data.source=memmap wants {s}.bin of {cfg.dtype} token ids)")
        if f.stat().st_size % dtype.itemsize or f.stat().st_size == 0:
            raise DataError(f"{f}: {f.stat().st_size} bytes is not a whole, non-empty number of {cfg.dtype} ids")
        tokens[s] = np.memmap(f, dtype=dtype, mode="r")
        starts[s] = _starts_from_eos(tokens[s], cfg.eos_id)
    meta = root / "meta.json"
    n_bytes = None
    if meta.is_file():  # optional {"bytes": {"val": ..., "test": ...}} for bits per byte
        try:
            n_bytes = {k: int(v) for k, v in json.loads(meta.read_text()).get("bytes", {}).items()} or None
        except (OSError, ValueError, AttributeError) as e:
            raise DataError(f"{meta}: not a JSON object with 'bytes' ({e})") from e
    return LMData(V, tokens, starts, n_bytes, "memmap")


def load_lm_data(cfg: LMDataCfg, vocab_size: int = 0, cache_name: str = "lmdata") -> LMData:
    """The data of a config's ``data`` section. ``vocab_size``: the model's vocabulary (``model.vocab_size``),
    needed by the synthetic and memmap sources; ``cache_name``: the folder under ``reprokit.fetch.data_dir()``
    for the cached document starts (the paper's name)."""
    src = cfg.source
    if src == "synthetic":
        return _synthetic(cfg, vocab_size)
    if src == "brown":
        return _brown(cfg, cache_name)
    if src == "corpus":
        return _named_corpora(cfg, cache_name)
    if src == "text":
        return _text_folder(cfg, cache_name)
    if src == "memmap":
        return _memmap(cfg, vocab_size)
    raise ConfigError(f"data.source={src!r}; valid: synthetic, brown, corpus, text, memmap")


def _windows(tokens: np.ndarray, starts: np.ndarray, begins: np.ndarray, T: int):
    idx = begins[:, None] + np.arange(T + 1)[None]                      # (B, T+1)
    chunk = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    st = torch.from_numpy(np.asarray(starts[idx[:, :-1]], dtype=np.bool_))
    return chunk[:, :-1], chunk[:, 1:], st


def train_batch(data: LMData, seq_len: int, batch_size: int, seed: int, rank: int, step: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random windows of the train split: (x, y, doc_start), each (B, T); a pure function of
    (seed, rank, step) through ``reprokit.rng.step_rng``, so a resumed run sees the same batches."""
    tokens, starts = data.tokens["train"], data.starts["train"]
    if len(tokens) < seq_len + 2:
        raise DataError(f"the train split has {len(tokens)} tokens; train.seq_len={seq_len} needs more")
    rng = step_rng(seed, "batch", rank, step)
    begins = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    return _windows(tokens, starts, begins, seq_len)


def eval_windows(data: LMData, split: str, seq_len: int, batch_size: int, max_tokens: int = 0,
                 rank: int = 0, world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows over the split (its first ``max_tokens`` tokens when > 0); every token after
    the first is a target once. Full windows in batches (round-robin over ranks), then the partial rest."""
    tokens, starts = data.split(split), data.starts[split]
    n = len(tokens) if not max_tokens else min(len(tokens), max_tokens)
    n_targets = max(n - 1, 0)
    n_full = n_targets // seq_len
    for i, b0 in enumerate(range(0, n_full, batch_size)):
        if i % world != rank:
            continue
        begins = np.arange(b0, min(b0 + batch_size, n_full)) * seq_len
        yield _windows(tokens, starts, begins, seq_len)
    rest = n_targets - n_full * seq_len
    if rest > 0 and (len(range(0, n_full, batch_size)) % world) == rank:
        yield _windows(tokens, starts, np.array([n_full * seq_len]), rest)


def eval_targets(data: LMData, split: str, max_tokens: int = 0) -> int:
    n = len(data.split(split))
    return max((min(n, max_tokens) if max_tokens else n) - 1, 0)


def eval_bytes(data: LMData, split: str, max_tokens: int = 0) -> int | None:
    """UTF-8 bytes behind an evaluation of ``split`` (``eval_windows`` with the same ``max_tokens``), the
    denominator of bits per byte; None where the text is unknown (synthetic, memmap without metadata).

    The whole split: the bytes of its text (``n_bytes``). A prefix (``max_tokens`` below the split's length):
    the bytes of the decoded scored targets, tokens 1..n-1, so a capped evaluation still reports bits per byte
    (the two definitions differ by the first token and the document separators; every arm of a comparison
    uses the same one)."""
    tokens = data.split(split)
    if not max_tokens or max_tokens >= len(tokens):
        return data.n_bytes.get(split) if data.n_bytes else None
    if data.decode is None:
        return None
    return len(data.decode(tokens[1:max_tokens].tolist()).encode("utf-8"))
