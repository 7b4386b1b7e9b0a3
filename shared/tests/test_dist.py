import subprocess
import sys
import textwrap

import pytest
import torch

from reprokit.dist import all_gather_cat, all_reduce, init_distributed, seed_everything, wrap_ddp


def test_single_process_noops():
    info = init_distributed("cpu")
    assert info.world_size == 1 and info.rank == 0 and info.backend is None
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce(t.clone(), "mean"), t)
    assert torch.equal(all_gather_cat(t), t)
    m = torch.nn.Linear(2, 2)
    assert wrap_ddp(m, info) is m
    with pytest.raises(ValueError, match="unknown reduce op"):
        all_reduce(t, "avg")


def test_seed_everything_per_rank():
    seed_everything(3, rank=0)
    a = torch.rand(3)
    seed_everything(3, rank=1)
    b = torch.rand(3)
    seed_everything(3, rank=0)
    assert torch.equal(torch.rand(3), a) and not torch.equal(a, b)


@pytest.mark.distributed
def test_two_rank_gloo_collectives(tmp_path):
    script = tmp_path / "w.py"
    script.write_text(textwrap.dedent("""
        import torch
        from reprokit.dist import init_distributed, all_reduce, all_gather_cat, print0, cleanup
        info = init_distributed("cpu")
        assert info.world_size == 2 and info.backend == "gloo"
        r = info.rank
        t = all_reduce(torch.tensor([float(r + 1)]), "mean")
        assert t.item() == 1.5, t
        m = all_reduce(torch.tensor([float(r)]), "max")
        assert m.item() == 1.0
        # ranks hold different numbers of rows; gradient flows back to the local slice
        x = torch.full((r + 1, 2), float(r + 1), requires_grad=True)
        g = all_gather_cat(x)
        assert g.shape == (3, 2) and g[0, 0] == 1 and g[1, 0] == 2
        (g * torch.arange(3.0).unsqueeze(1)).sum().backward()
        # loss identical on both ranks -> DDP-style sum of both ranks' gradients = 2 * d/dx
        expected = 2 * torch.arange(3.0)[: r + 1] if r == 0 else 2 * torch.arange(3.0)[1:]
        assert torch.allclose(x.grad[:, 0], expected), (r, x.grad)
        print0("OK")
        cleanup()
    """))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_cleanup_keeps_the_final_barrier_work_then_destroys_the_group(tmp_path):
    """cleanup() holds the last barrier's work handle: the main thread, not a gloo worker thread, must drop the
    last reference to it (a worker dropping it during interpreter teardown aborts the rank; see cleanup)."""
    import torch.distributed as tdist

    import reprokit.dist as rdist

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    n = len(rdist._FINAL_WORK)
    try:
        rdist.cleanup()
        assert not tdist.is_initialized()
        assert len(rdist._FINAL_WORK) == n + 1 and rdist._FINAL_WORK[-1].is_completed()
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


_TEARDOWN = textwrap.dedent("""
    import sys, torch, torch.distributed as tdist
    from reprokit import dist as rdist
    rdist.init_distributed("cpu")
    def train():
        m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
        for _ in range(20):
            m(torch.randn(8, 64)).sum().backward()
    train()
    if sys.argv[1] == "cleanup":
        rdist.cleanup()
    else:   # the pattern cleanup() replaced
        tdist.barrier()
        tdist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_rank_teardown_never_aborts_after_cleanup(tmp_path):
    """The measurement behind cleanup()'s docstring: 2-rank torchrun runs of a small DDP model, each ended
    either by cleanup() or by a plain barrier + destroy. None may abort after cleanup(). The plain ending's
    aborts are counted and shown for comparison only; it aborted in 11 of 30 runs here. About 10 minutes:
    ``pytest -m slow shared/tests/test_dist.py -k teardown``."""
    import os

    script = tmp_path / "teardown.py"
    script.write_text(_TEARDOWN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    aborts = {"cleanup": 0, "plain": 0}
    for _ in range(30):
        for mode in aborts:
            r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                str(script), mode], capture_output=True, text=True, timeout=300, env=env)
            aborts[mode] += r.returncode != 0
    assert aborts["cleanup"] == 0, aborts
    print(f"aborted runs out of 30: {aborts}")
