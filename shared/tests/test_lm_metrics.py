"""LMAccumulator on hand-computed numbers; distributed reduce of LM and segmentation metrics."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from reprokit.metrics.lm import LMAccumulator


def test_bits_per_byte_hand_computed() -> None:
    # model distribution over 4 tokens: 1/2, 1/4, 1/8, 1/8; targets 0, 1, 2, 3 cost 1 + 2 + 3 + 3 = 9 bits
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])
    logits = probs.log().expand(4, 4).clone()
    acc = LMAccumulator()
    acc.update_logits(logits[None], torch.tensor([[0, 1, 2, 3]]))
    assert acc.n_tokens == 4
    assert acc.nll_sum == pytest.approx(9 * math.log(2), rel=1e-6)
    # the 4 tokens encode 3 bytes of text -> 9 bits / 3 bytes = 3 bits per byte
    assert acc.bits_per_byte(3) == pytest.approx(3.0, rel=1e-6)
    assert acc.nll == pytest.approx(9 * math.log(2) / 4, rel=1e-6)
    assert acc.ppl == pytest.approx(2 ** (9 / 4), rel=1e-6)


def test_update_sums_in_float64_and_ignore_index() -> None:
    acc = LMAccumulator()
    for _ in range(1000):
        acc.update(torch.tensor(0.1, dtype=torch.float32), 1)
    acc.update(1e8, 0)
    acc.update(-1e8, 0)
    assert acc.nll_sum == pytest.approx(1000 * float(torch.tensor(0.1, dtype=torch.float32)), abs=1e-6)
    acc2 = LMAccumulator()
    acc2.update_logits(torch.zeros(1, 3, 5), torch.tensor([[1, -100, 2]]))
    assert acc2.n_tokens == 2 and acc2.nll == pytest.approx(math.log(5), rel=1e-6)
    assert acc2.reduce() is acc2 and acc2.n_tokens == 2  # no process group: no-op
    with pytest.raises(ValueError):
        LMAccumulator().nll  # noqa: B018


_WORKER = textwrap.dedent(
    """
    import sys, json, torch, torch.distributed as dist
    from reprokit.metrics.lm import LMAccumulator
    from reprokit.metrics.segmentation import ConfusionMatrix
    rank, init = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    acc = LMAccumulator(); acc.update(1.5 * (rank + 1), 10 * (rank + 1))
    acc.reduce(); acc.reduce()  # idempotent
    cm = ConfusionMatrix(2); cm.update(torch.tensor([rank, 1]), torch.tensor([0, 1]))
    cm.reduce()
    print(json.dumps({"nll_sum": acc.nll_sum, "n": acc.n_tokens, "mat": cm.matrix.tolist()}))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
@pytest.mark.distributed
def test_reduce_across_two_gloo_ranks(tmp_path) -> None:
    import json

    init = f"file://{tmp_path / 'store'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(r), init], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for r in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for o in outs:
        assert o["nll_sum"] == pytest.approx(4.5) and o["n"] == 30
        # rank 0: (0,0) (1,1); rank 1: (0,1) (1,1)
        assert o["mat"] == [[1, 1], [0, 2]]
