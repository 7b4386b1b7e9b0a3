"""Race and the similarity loss over the global batch: 2 gloo ranks == one process on the concatenation."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from racedit import routing as R

B, L, E, K = 6, 16, 8, 2


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2 * B, L, E, generator=g)


def _worker(rank, port, routing, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        s = _data()[rank * B:(rank + 1) * B].clone().requires_grad_(True)
        mask, kth = R.route(s, routing, K, training=True)
        loss = R.router_similarity_loss(s, mask)
        loss.backward()
        q.put((rank, mask, kth, float(loss.detach()), s.grad))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("routing", ["race", "bl"])
def test_two_gloo_ranks_match_one_process(routing):
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, routing, q)) for r in range(2)]
    for p in procs:
        p.start()
    out = dict((r, rest) for r, *rest in (q.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = _data().requires_grad_(True)
    mask, kth = R.route(s, routing, K, training=True)
    loss = R.router_similarity_loss(s, mask)
    loss.backward()
    assert int(mask.sum()) == 2 * B * L * K if routing == "race" else True
    for r in range(2):
        m_r, kth_r, loss_r, grad_r = out[r]
        assert torch.equal(m_r, mask[r * B:(r + 1) * B])
        assert torch.equal(kth_r, kth)
        assert abs(loss_r - float(loss.detach())) < 1e-6
        # each rank holds sum over ranks of dL/ds_local = 2 x the single-process gradient of its slice
        # (DDP's mean over ranks then gives the exact global gradient)
        torch.testing.assert_close(grad_r, 2 * s.grad[r * B:(r + 1) * B])
