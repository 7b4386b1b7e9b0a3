import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere (parity tests)

from reprokit.testing import unshadow_package  # noqa: E402

unshadow_package("ultramem")  # the member folder ultramem/ shares the package's name

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke_cfg():
    from reprokit.config import load_config
    from ultramem.config import Cfg

    def make(*overrides):
        return load_config(Cfg, ROOT / "configs" / "smoke.yaml", list(overrides))
    return make
