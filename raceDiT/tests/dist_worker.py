"""One rank of the 2-process race test (run as a script by test_dist.py)."""

import os
import sys

import torch
import torch.distributed as dist

from racedit import routing as R
from reprokit import dist as rdist

if __name__ == "__main__":
    rank, port, routing, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    B, L, E, K = (int(v) for v in sys.argv[5:9])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        full = torch.randn(2 * B, L, E, generator=torch.Generator().manual_seed(0))
        s = full[rank * B:(rank + 1) * B].clone().requires_grad_(True)
        mask, kth = R.route(s, routing, K, training=True)
        loss = R.router_similarity_loss(s, mask)
        loss.backward()
        torch.save({"mask": mask, "kth": kth, "loss": float(loss.detach()), "grad": s.grad}, out)
        rdist.cleanup()   # barrier, destroy; keeps the last work for teardown (see reprokit.dist.cleanup)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
