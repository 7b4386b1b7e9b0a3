"""Smoke training: exact resume (SparseAdam state included), golden losses, evaluate --run, optimiser paths."""

import json
from pathlib import Path

import pytest
import torch

from overtok.train import load_run, make_optimizers, train
from reprokit.checkpoint import CheckpointMismatch, load_checkpoint
from reprokit.testing import check_golden

GOLDEN = Path(__file__).parent / "golden" / "smoke_loss.json"


def _losses(run: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r["loss"] for r in recs if r.get("split") == "train"}


def test_smoke_train_golden_losses(tmp_path, smoke_cfg):
    m = train(smoke_cfg("train.log_every=1"), tmp_path / "run", quiet=True)
    losses = _losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 9))
    assert m["val_loss"] < 4.2 and "val_bpb" not in m and "val_bpt" in m   # synthetic: bits per token only
    check_golden(GOLDEN, [losses[s] for s in sorted(losses)], note="configs/smoke.yaml, train.log_every=1")


@pytest.mark.parametrize("extra", [[], ["train.sparse_tables=false"], ["model.oe.enabled=false", "model.mtp.heads=0"]])
def test_exact_resume(tmp_path, smoke_cfg, extra):
    over = ["train.log_every=1", "train.ckpt_every=2", *extra]
    straight = train(smoke_cfg(*over), tmp_path / "a", quiet=True)
    assert train(smoke_cfg(*over, "train.stop_after=4"), tmp_path / "b", quiet=True) == {"stopped_at": 4}
    ck = load_checkpoint(tmp_path / "b" / "ckpt")
    if not extra:   # the SparseAdam state of the n-gram tables travels with the checkpoint
        assert ck.optimizer["sparse"]["state"], "no SparseAdam state in the checkpoint"
    resumed = train(smoke_cfg(*over), tmp_path / "b", quiet=True)
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(la) == sorted(lb) == list(range(1, 9))
    assert la == lb                                       # bit-identical on the CPU
    assert straight["val_loss"] == resumed["val_loss"] and straight["test_loss"] == resumed["test_loss"]


def test_resume_with_another_model_is_refused(tmp_path, smoke_cfg):
    train(smoke_cfg("train.stop_after=2"), tmp_path, quiet=True)
    with pytest.raises(CheckpointMismatch, match="model.oe.m"):
        train(smoke_cfg("model.oe.m=129"), tmp_path, quiet=True)


def test_sparse_and_dense_optimiser_paths_agree_on_a_step(smoke_cfg):
    """SparseAdam (touched rows only) and AdamW (whole table, no decay on tables) give the same first step:
    an untouched row has zero gradient and zero moments, so Adam leaves it unchanged too. (The two place
    epsilon differently relative to the bias correction; with a negligible epsilon they agree to rounding.)"""
    from overtok.data import train_batch
    from overtok.model import build_model, lm_losses
    from overtok.train import clip_gradients, prepare_data

    models = {}
    for sparse in (True, False):
        cfg = smoke_cfg(f"train.sparse_tables={str(sparse).lower()}", "model.mtp.heads=0", "train.eps=1e-12")
        data = prepare_data(cfg)
        model = build_model(cfg.model, seed=0, sparse_tables=sparse)
        opts = make_optimizers(model, cfg)
        x, y, ds = train_batch(data, cfg.train.seq_len, cfg.train.batch_size, 0, 0, 0)
        loss, _, _ = lm_losses(model(x, ds), y)
        loss.backward()
        clip_gradients(list(model.parameters()), cfg.train.grad_clip)
        for o in opts:
            if o is not None:
                o.step()
        models[sparse] = model
    a, b = models[True].state_dict(), models[False].state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")


def test_evaluate_via_run_without_config(tmp_path, smoke_cfg, capsys):
    from overtok.cli import main

    run = tmp_path / "run"
    train(smoke_cfg(), run, quiet=True)
    assert main(["evaluate", "--run", str(run)]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["step"] == 8 and res["val_loss"] > 0 and "val_bpb" not in res
    lr = load_run(run, ["eval.max_tokens=256"])
    assert lr.cfg.eval.max_tokens == 256 and lr.step == 8
    with pytest.raises(CheckpointMismatch, match="model.depth"):
        load_run(run, ["model.depth=3"])
    assert main(["sample", "--run", str(run)]) == 0 and (run / "samples.json").is_file()


def test_bits_per_byte_where_the_text_is_known(tmp_path, smoke_cfg, monkeypatch):
    monkeypatch.setenv("REPROKIT_DATA", str(tmp_path / "cache"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.txt").write_text(" ".join(f"word{(i * 7 + j) % 23} and the thing" for j in range(80)) + "\n")
    m = train(smoke_cfg("data.source=text", f"data.path={docs}", "data.vocab_size=300", "model.vocab_size=0", "model.oe.moduli=prime",
                        "eval.max_tokens=0", "train.steps=2"), tmp_path / "run", quiet=True)
    assert m["val_bpb"] > 0 and m["test_bpb"] > 0


def test_missing_text_folder_is_a_data_error(tmp_path, smoke_cfg):
    from reprokit.errors import DataError

    with pytest.raises(DataError, match="no_such"):
        train(smoke_cfg("data.source=text", f"data.path={tmp_path / 'no_such'}"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
