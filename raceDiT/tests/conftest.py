import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

from racedit.config import MoECfg  # noqa: E402
from racedit.moe import MoEFFN  # noqa: E402


@pytest.fixture
def make_layer():
    def make(routing="race", gating="identity", E=8, k=2, d=16, L=16, seed=0, **kw):
        torch.manual_seed(seed)
        return MoEFFN(d, MoECfg(num_experts=E, top_k=k, routing=routing, gating=gating, **kw),
                      target_dim=4, num_tokens=L, impl="torch")
    return make
