import os

import pytest
import torch
import torch.nn as nn

from reprokit.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    check_config_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
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
    # ignored names may differ or be missing on either side; every other key is still checked
    check_config_compatible({"model": {"depth": 2}}, {"model": {"depth": 2, "eval": "a"}}, ignore=("model.eval",))
    check_config_compatible({"model": {"depth": 2, "eval": "b"}}, {"model": {"depth": 2, "eval": "a"}}, ignore=("model.eval",))
    with pytest.raises(CheckpointMismatch, match=r"model\.depth") as e:
        check_config_compatible({"model": {"depth": 2, "eval": "b"}}, {"model": {"depth": 3}}, ignore=("model.eval",))
    assert "model.eval" not in str(e.value)


def test_empty_root(tmp_path):
    assert load_checkpoint(tmp_path) is None
    os.makedirs(tmp_path / ".tmp-step_00000003-1")
    assert latest_checkpoint(tmp_path) is None


def _two_checkpoints(root):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(root, 1, model, ema=model, optimizer=opt, keep_last=None)
    with torch.no_grad():
        model.weight.add_(1.0)
    save_checkpoint(root, 2, model, ema=model, optimizer=opt, keep_last=None)
    return model


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "optim.pt", "state.json"])
@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, capsys, name, how):
    _two_checkpoints(tmp_path)
    f = tmp_path / "step_00000002" / name
    data = f.read_bytes()
    if how == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        f.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    else:
        f.unlink()
    ck = load_checkpoint(tmp_path)
    assert ck is not None and ck.step == 1
    err = capsys.readouterr().err
    assert "step_00000002" in err and "step_00000001" in err
    with pytest.raises(CheckpointError, match=name if how != "delete" or name != "state.json" else "state"):
        load_checkpoint(tmp_path / "step_00000002")


def test_no_complete_checkpoint_refuses_to_restart(tmp_path):
    _two_checkpoints(tmp_path)
    for step in (1, 2):
        f = tmp_path / f"step_{step:08d}" / "optim.pt"
        f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="no complete checkpoint") as e:
        load_checkpoint(tmp_path)
    assert "step_00000001" in str(e.value) and "step_00000002" in str(e.value)
    assert load_checkpoint(tmp_path / "nothing-here") is None  # no checkpoint at all: start from scratch


def test_state_json_records_digests(tmp_path):
    import json

    _two_checkpoints(tmp_path)
    meta = json.loads((tmp_path / "step_00000002" / "state.json").read_text())
    assert set(meta["files"]) == {"model.safetensors", "ema.safetensors", "optim.pt"}
    for name, rec in meta["files"].items():
        assert rec["bytes"] == (tmp_path / "step_00000002" / name).stat().st_size
        assert len(rec["sha256"]) == 64
    assert verify_checkpoint(tmp_path / "step_00000002")["step"] == 2
