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
