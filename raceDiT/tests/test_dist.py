"""Race and the similarity loss over the global batch: 2 gloo ranks == one process on the concatenation."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from racedit import routing as R

B, L, E, K = 6, 16, 8, 2
WORKER = Path(__file__).with_name("dist_worker.py")


@pytest.mark.distributed
@pytest.mark.parametrize("routing", ["race", "bl"])
def test_two_gloo_ranks_match_one_process(routing, tmp_path):
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(port), routing, str(tmp_path / f"r{r}.pt"),
                               str(B), str(L), str(E), str(K)], env=env, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    s = torch.randn(2 * B, L, E, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    mask, kth = R.route(s, routing, K, training=True)
    loss = R.router_similarity_loss(s, mask)
    loss.backward()
    if routing == "race":
        assert int(mask.sum()) == 2 * B * L * K
    for r in range(2):
        got = torch.load(tmp_path / f"r{r}.pt")
        assert torch.equal(got["mask"], mask[r * B:(r + 1) * B])
        assert torch.equal(got["kth"], kth)
        assert abs(got["loss"] - float(loss.detach())) < 1e-6
        # each rank holds the sum over ranks of dL/ds_local = 2x the single-process gradient of its slice;
        # DDP's mean over ranks then gives the exact global gradient
        torch.testing.assert_close(got["grad"], 2 * s.grad[r * B:(r + 1) * B])
