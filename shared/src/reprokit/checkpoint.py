"""Atomic, resumable checkpoints: safetensors weights plus a ``weights_only`` loadable state.

Layout of one checkpoint ``<root>/step_00000100/``::

    model.safetensors   model weights (shared/tied tensors stored once, restored by load_state_dict)
    ema.safetensors     EMA weights (optional)
    optim.pt            optimizer / scheduler state dicts and RNG states (torch.load(weights_only=True))
    state.json          step, free-form run state, the resolved config, and the sha256 and size of
                        every other file (written last)

It is written into ``<root>/.tmp-step_...`` and renamed into place, so a crash mid-save leaves
the previous checkpoint untouched. Loading verifies every file against ``state.json``: a corrupt or
partial newest checkpoint is reported and :func:`load_checkpoint` falls back to the newest complete
one; when checkpoints exist but none is complete it raises :class:`CheckpointError` (a run never
silently restarts from scratch).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import UserError

__all__ = ["Checkpoint", "CheckpointMismatch", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "verify_checkpoint", "check_config_compatible", "rng_state", "set_rng_state"]

_PREFIX = "step_"


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint does not belong to the current configuration."""


class CheckpointError(UserError):
    """A checkpoint folder is corrupt or partial (the message names the folder and the file)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict:
    """Python, numpy and torch RNG states in a ``weights_only``-safe form."""
    st = {"torch": torch.get_rng_state(), "python": _py_state_to_list(random.getstate()),
          "numpy": _np_state_to_plain(np.random.get_state())}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(_py_state_from_list(st["python"]))
    np.random.set_state(_np_state_from_plain(st["numpy"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s):
    return (s[0], tuple(s[1]), s[2])


def _np_state_to_plain(s):
    return [s[0], torch.from_numpy(np.asarray(s[1]).astype(np.int64)), int(s[2]), int(s[3]), float(s[4])]


def _np_state_from_plain(s):
    return (s[0], s[1].numpy().astype(np.uint32), s[2], s[3], s[4])


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    sd = obj.state_dict() if hasattr(obj, "state_dict") else obj
    # unwrap DDP / compiled prefixes so checkpoints are portable between 1 process and torchrun
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in sd.items()}


def _save_tensors(sd: dict[str, torch.Tensor], path: Path) -> None:
    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if key in seen and v.numel() > 0:
            aliases[k] = seen[key]
            continue
        seen[key] = k
        out[k] = v.detach().contiguous().cpu()
    save_file(out, str(path), metadata={"aliases": json.dumps(aliases)})


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    sd = load_file(str(path))
    for k, src in aliases.items():
        sd[k] = sd[src]
    return sd


@dataclass
class Checkpoint:
    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict | None
    scheduler: dict | None
    state: dict
    config: dict | None
    rng: dict | None = field(default=None, repr=False)

    def restore_rng(self) -> None:
        if self.rng is None:
            raise ValueError(f"{self.path} holds no RNG state")
        set_rng_state(self.rng)


def save_checkpoint(root: str | Path, step: int, model: Any, ema: Any = None, optimizer: Any = None,
                    scheduler: Any = None, state: dict | None = None, config: dict | None = None,
                    keep_last: int | None = 3) -> Path:
    """Write checkpoint ``step`` atomically under ``root``; keep the ``keep_last`` newest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = ["model.safetensors"]
    _save_tensors(_state_dict(model), tmp / "model.safetensors")
    if ema is not None:
        _save_tensors(_state_dict(ema), tmp / "ema.safetensors")
        files.append("ema.safetensors")
    blob = {"rng": rng_state()}
    if optimizer is not None:
        blob["optimizer"] = optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer
    if scheduler is not None:
        blob["scheduler"] = scheduler.state_dict() if hasattr(scheduler, "state_dict") else scheduler
    torch.save(blob, tmp / "optim.pt")
    files.append("optim.pt")
    for f in files:  # make the bytes durable before state.json vouches for them
        with open(tmp / f, "rb") as fh:
            os.fsync(fh.fileno())
    manifest = {f: {"sha256": _sha256(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files}
    meta = {"step": int(step), "state": state or {}, "config": config, "files": manifest}
    with open(tmp / "state.json", "w") as fh:  # written last: its presence means the rest is complete
        fh.write(json.dumps(meta, indent=1, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last is not None and keep_last > 0:
        for old in _complete(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file():
            try:
                int(p.name[len(_PREFIX):])
            except ValueError:
                continue
            out.append(p)
    return sorted(out, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest checkpoint folder under ``root`` that has a ``state.json`` (not verified)."""
    c = _complete(Path(root))
    return c[-1] if c else None


def _read_meta(p: Path) -> dict:
    try:
        meta = json.loads((p / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p / 'state.json'}: unreadable ({e})") from e
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"{p / 'state.json'}: not a checkpoint state (no 'step')")
    return meta


def verify_checkpoint(path: str | Path) -> dict:
    """Check every file of a checkpoint folder against the sizes and sha256 in its ``state.json``;
    return the parsed state or raise :class:`CheckpointError` naming the bad file."""
    p = Path(path)
    meta = _read_meta(p)
    files = meta.get("files", [])
    if isinstance(files, list):  # written before manifests existed: presence only
        files = {f: None for f in files}
    for name, rec in files.items():
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (listed in state.json)")
        if rec is None:
            continue
        size = f.stat().st_size
        if size != rec["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, state.json records {rec['bytes']} (truncated or replaced)")
        if _sha256(f) != rec["sha256"]:
            raise CheckpointError(f"{f}: sha256 differs from state.json (corrupt)")
    return meta


def _load_folder(p: Path, map_location) -> Checkpoint:
    meta = verify_checkpoint(p)
    try:
        blob = torch.load(p / "optim.pt", map_location=map_location, weights_only=True)
        ema = _load_tensors(p / "ema.safetensors") if (p / "ema.safetensors").is_file() else None
        model = _load_tensors(p / "model.safetensors")
    except Exception as e:  # unreadable although the digests matched (e.g. a pre-manifest checkpoint)
        raise CheckpointError(f"{p}: cannot be read ({type(e).__name__}: {e})") from e
    return Checkpoint(path=p, step=meta["step"], model=model, ema=ema,
                      optimizer=blob.get("optimizer"), scheduler=blob.get("scheduler"),
                      state=meta.get("state", {}), config=meta.get("config"), rng=blob.get("rng"))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint | None:
    """Load a checkpoint folder, or the newest *complete* one under a root.

    A root without any checkpoint gives None (start from scratch). Under a root, a corrupt or partial
    checkpoint is reported on stderr and the next older one is tried; if checkpoints exist but none is
    complete, :class:`CheckpointError` lists each and why. A checkpoint folder given directly must be
    complete.
    """
    p = Path(path)
    if (p / "state.json").is_file() or p.name.startswith(_PREFIX):
        return _load_folder(p, map_location)
    candidates = _complete(p)
    partial = sorted(q for q in p.glob(f"{_PREFIX}*") if q.is_dir() and q not in candidates) if p.is_dir() else []
    problems = [f"{q}: no state.json (partial)" for q in partial]
    for q in reversed(candidates):
        try:
            ck = _load_folder(q, map_location)
        except CheckpointError as e:
            problems.append(str(e))
            print(f"warning: skipping checkpoint {q.name}: {e}", file=sys.stderr, flush=True)
            continue
        newer = [x for x in problems if not x.startswith(str(q))]
        if newer:
            print(f"warning: resuming from {q.name}, the newest complete checkpoint under {p} "
                  f"(skipped: {'; '.join(newer)})", file=sys.stderr, flush=True)
        return ck
    if problems:
        raise CheckpointError(f"no complete checkpoint under {p}; refusing to restart from scratch "
                              f"(delete the folder to do so): " + "; ".join(problems))
    return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def check_config_compatible(saved: dict | None, current: dict, keys: tuple[str, ...] = ("model",),
                            ignore: tuple[str, ...] = ()) -> None:
    """Raise CheckpointMismatch naming every differing key under ``keys`` (e.g. the model config).

    ``ignore``: dotted names (``model.eval_norm``) that may differ or be missing on either side -- settings that
    change no weight or buffer, e.g. inference-only switches added after a checkpoint was written."""
    if saved is None:
        raise CheckpointMismatch("checkpoint holds no config; cannot check it matches the current one")
    diffs = []
    for k in keys:
        a, b = _flatten(saved.get(k, {}), k + "."), _flatten(current.get(k, {}), k + ".")
        for name in sorted((set(a) | set(b)) - set(ignore)):
            if a.get(name, "<missing>") != b.get(name, "<missing>"):
                diffs.append(f"{name}: checkpoint={a.get(name, '<missing>')!r} current={b.get(name, '<missing>')!r}")
    if diffs:
        raise CheckpointMismatch("checkpoint was written by a different configuration: " + "; ".join(diffs))
