"""A small domain classifier to use as the feature network for FID/KID when Inception weights
are not available.

Recipe (deterministic on CPU):

1. ``torch.manual_seed(seed); net = SmallClassifier(in_channels, num_classes, image_size)``
2. ``report = train_classifier(net, train_x, train_y, epochs=..., seed=seed, val=(test_x, test_y))``
   -- images are float ``(N, C, H, W)`` in [-1, 1], labels int64 ``(N,)``. Report the returned
   ``test_accuracy`` next to every FID number (a feature net that does not classify well gives a
   meaningless distance).
3. ``digest = save_classifier(net, "feature_net.safetensors")`` -- the architecture is stored in the
   safetensors metadata; the returned digest identifies the *network*, not the file: SHA-256 over the
   tensors' names, dtypes, shapes and bytes (:func:`state_dict_sha256`), so the same weights written
   twice (different metadata or serialisation) have the same identity. It is also written to
   ``<path>.sha256``; record it with the results so the same features can be recomputed.
4. ``net = load_classifier(path, expected_sha256=digest)`` (checks the tensor digest); then
   ``extract_features(net.features, images)`` gives ``(N, feat_dim)`` penultimate activations.

**FID computed with this network is "non-standard FID"**: it is only comparable between runs that
use the very same network weights (same tensor digest), never with the Inception FID numbers of papers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SmallClassifier",
    "file_sha256",
    "load_classifier",
    "save_classifier",
    "state_dict_sha256",
    "train_classifier",
]


class SmallClassifier(nn.Module):
    """A small conv net: 3x3 conv stages (stride-2 down to <= 8 px) -> global average pool ->
    ``feat_dim`` ReLU features (:meth:`features`) -> linear logits (:meth:`forward`).

    Args:
        in_channels: image channels.
        num_classes: number of classes of the domain (e.g. 10 for Fashion-MNIST).
        image_size: input height/width; sets the number of downsampling stages.
        feat_dim: size of the penultimate feature vector used for FID.
        width: channels of the first stage (doubled at every downsampling, capped at 8x).
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, feat_dim: int = 128, width: int = 32
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "image_size": int(image_size),
            "feat_dim": int(feat_dim),
            "width": int(width),
        }
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        ch, size = width, image_size
        while size > 8:
            out = min(ch * 2, width * 8)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            ch, size = out, (size + 1) // 2
        layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(ch, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, feat_dim)``."""
        h = self.body(x).mean(dim=(2, 3))
        return F.relu(self.proj(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.head(self.features(x))


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(x.shape[0], 1)


def train_classifier(
    model: SmallClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train ``model`` with AdamW + cross-entropy (cosine LR) on ``(images, labels)``.

    Shuffling uses a ``torch.Generator`` seeded with ``seed``, so on CPU the same initial weights
    and seed give bit-identical trained weights. Returns ``dict(train_loss, train_accuracy,
    test_accuracy, epochs, steps)``; ``test_accuracy`` is measured on ``val`` (None without it).
    The model is left in eval mode.
    """
    device = torch.device(device)
    images = torch.as_tensor(images, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = max(epochs * steps_per_epoch, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    loss_sum, seen, step = 0.0, 0, 0
    from ..runs import progress

    for _ in progress(range(epochs), total=epochs, desc=f"feature classifier ({steps_per_epoch} steps/epoch)",
                      every_s=20.0):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = images[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            step += 1
    report: dict[str, Any] = {
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": _accuracy(model, images, labels, 4 * batch_size, device),
        "test_accuracy": None,
        "epochs": epochs,
        "steps": step,
    }
    if val is not None:
        vx = torch.as_tensor(val[0], dtype=torch.float32)
        vy = torch.as_tensor(val[1], dtype=torch.int64)
        report["test_accuracy"] = _accuracy(model, vx, vy, 4 * batch_size, device)
    model.eval()
    return report


def state_dict_sha256(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and raw bytes of a state dict (sorted by name)."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_classifier(model: SmallClassifier, path: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Write the weights as safetensors (architecture + ``meta`` in the metadata); returns the
    network's identity, :func:`state_dict_sha256` of its tensors (also written to ``<path>.sha256``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(model.config), "meta": json.dumps(meta or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)
    sha = state_dict_sha256(sd)
    path.with_name(path.name + ".sha256").write_text(f"{sha}  {path.name}\n")
    return sha


def load_classifier(
    path: str | Path, expected_sha256: str | None = None, device: str | torch.device = "cpu"
) -> SmallClassifier:
    """Rebuild a :class:`SmallClassifier` saved by :func:`save_classifier` (eval mode).

    Raises ValueError if ``expected_sha256`` is given and the tensors' digest
    (:func:`state_dict_sha256`) differs.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"{path} has no SmallClassifier config in its metadata")
    sd = load_file(str(path))
    if expected_sha256 is not None:
        sha = state_dict_sha256(sd)
        if sha != expected_sha256:
            raise ValueError(f"{path}: tensor digest {sha} != expected {expected_sha256} (other weights)")
    model = SmallClassifier(**json.loads(metadata["config"]))
    model.load_state_dict(sd)
    return model.to(device).eval()
