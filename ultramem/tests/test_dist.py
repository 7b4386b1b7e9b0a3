"""Two gloo ranks: DDP keeps the memory value tables (and everything else) identical across ranks."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.mark.distributed
def test_two_rank_training_keeps_values_in_sync(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        import torch.distributed as dist
        from reprokit.config import load_config
        from reprokit import dist as rdist
        from ultramem.config import Cfg
        import ultramem.train as T
        cfg = load_config(Cfg, sys.argv[1], ["train.steps=3", "train.log_every=1", "train.eval_every=0"])
        captured = {}
        orig = T.build_model
        def spy(*a, **k):
            m = orig(*a, **k)
            captured["model"] = m
            return m
        T.build_model = spy
        T.train(cfg, sys.argv[2], quiet=True)
        w = captured["model"].mems[0].values.detach().clone()
        parts = [torch.empty_like(w) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, w)
        assert torch.equal(parts[0], parts[1]), "the value tables differ between ranks"
        assert not torch.equal(parts[0], orig(cfg.model, seed=0).mems[0].values), "values did not train"
        print("RANKS AGREE", flush=True)
        rdist.cleanup()
    """))
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(smoke), str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("RANKS AGREE") == 2
