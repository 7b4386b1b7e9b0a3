import os

import pytest
import torch
import torch.nn as nn

from reprokit.checkpoint import (
    CheckpointMismatch,
    check_config_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from reprokit.dist import seed_everything


def _train(steps, ckpt_root=None, resume=False, save_at=None):
    """A tiny training loop with dropout and random batches (both consume the RNG)."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    start = 0
    if resume:
        ck = load_checkpoint(ckpt_root)
        model.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        sched.load_state_dict(ck.scheduler)
        ck.restore_rng()
        start = ck.step
    losses = []
    for step in range(start, steps):
        x = torch.randn(8, 4)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if save_at is not None and step + 1 == save_at:
            save_checkpoint(ckpt_root, step + 1, model, optimizer=opt, scheduler=sched, config={"model": {"w": 16}})
            break
    return losses


def test_resume_is_exact(tmp_path):
    straight = _train(10)
    first = _train(10, tmp_path, save_at=5)
    second = _train(10, tmp_path, resume=True)
    assert len(first) == 5 and len(second) == 5
    assert first + second == straight  # bit-identical on CPU


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path, 1, model, state={"k": 1})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    import reprokit.checkpoint as ck

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 1 and loaded.state == {"k": 1}
    assert torch.equal(loaded.model["weight"], good["weight"])


def test_keep_last_and_ema_and_weights_only(tmp_path):
    model = nn.Linear(3, 2)
    for s in range(1, 6):
        save_checkpoint(tmp_path, s, model, ema=model, keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step_00000004", "step_00000005"]
    ck = load_checkpoint(tmp_path / "step_00000004")
    assert ck.step == 4 and torch.equal(ck.ema["bias"], model.bias.detach())
    torch.load(tmp_path / "step_00000005" / "optim.pt", weights_only=True)  # must not raise


def test_tied_weights_roundtrip(tmp_path):
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    m = nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path, 1, m)
    ck = load_checkpoint(tmp_path)
    assert torch.equal(ck.model["head.weight"], ck.model["emb.weight"])
    m2 = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    m2.load_state_dict(ck.model)
    assert torch.equal(m2["head"].weight, emb.weight)


def test_config_mismatch_names_keys():
    with pytest.raises(CheckpointMismatch, match=r"model\.depth"):
        check_config_compatible({"model": {"depth": 2, "w": 4}}, {"model": {"depth": 3, "w": 4}})
    check_config_compatible({"model": {"depth": 2}, "lr": 1}, {"model": {"depth": 2}, "lr": 2})


def test_empty_root(tmp_path):
    assert load_checkpoint(tmp_path) is None
    os.makedirs(tmp_path / ".tmp-step_00000003-1")
    assert latest_checkpoint(tmp_path) is None
