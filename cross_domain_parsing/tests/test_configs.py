"""Every config parses; the paper config builds on the meta device with the hand-counted parameter
totals of DeepLab-v2 VGG-16 (ASPP) and the receptive-field / stride layout at 241x121."""

from pathlib import Path

import pytest
import torch

from crossparse.config import Cfg
from crossparse.model import CrossParse, Parser, param_count
from reprokit.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses_and_builds_on_meta(path):
    cfg = load_config(Cfg, str(path), [])
    with torch.device("meta"):
        net = CrossParse(cfg)
    assert param_count(net.parser) > 0


def vgg16_convs() -> int:
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
             (512, 512), (512, 512), (512, 512), (512, 512)]
    return sum(9 * a * b + b for a, b in chans)


def test_paper_parser_parameter_count():
    cfg = load_config(Cfg, str(CONFIGS[0].parent / "paper_lip_indoor.yaml"), [])
    with torch.device("meta"):
        p = Parser(cfg)
    branch = 9 * 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 12 + 12
    assert vgg16_convs() == 14_714_688                      # VGG-16 conv layers (torchvision's total minus FCs)
    assert param_count(p) == vgg16_convs() + 4 * branch


def test_layout_at_241x121():
    """pool strides 2, 2, 2, 1, 1 (ceil mode) and dilated conv5: f1 at 1/2, f5 and logits at 1/8."""
    cfg = load_config(Cfg, None, ["model.width_mult=0.0625", "model.aspp_hidden=64"])
    p = Parser(cfg).eval()
    x = torch.zeros(1, 3, 241, 121)
    f1 = p.p1(x)
    f5 = p.p2(f1)
    assert f1.shape[-2:] == (121, 61) and f5.shape[-2:] == (31, 16)
    assert p(x).shape == (1, 12, 31, 16) and p.upsample(p(x)).shape == (1, 12, 241, 121)
    pools = [m for m in [*p.p1, *p.p2] if isinstance(m, torch.nn.MaxPool2d)]
    assert [m.stride for m in pools] == [2, 2, 2, 1, 1] and all(m.kernel_size == 3 for m in pools)
    convs = [m for m in [*p.p1, *p.p2] if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3
    assert [br[0].dilation[0] for br in p.p3] == [6, 12, 18, 24]


def test_output_pixel_sees_a_large_receptive_field():
    """The gradient of one central logit reaches far beyond its 8-pixel cell (dilated ASPP)."""
    torch.manual_seed(0)
    cfg = load_config(Cfg, None, ["model.width_mult=0.0625", "model.aspp_hidden=64", "model.dropout=0"])
    p = Parser(cfg).eval()
    x = torch.randn(1, 3, 241, 121, requires_grad=True)
    p(x)[0, :, 15, 8].sum().backward()
    rows = (x.grad.abs().sum((0, 1, 3)) > 0).nonzero()
    assert rows.max() - rows.min() > 150


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        load_config(Cfg, None, ["model.num_classes=20"])
    with pytest.raises(ConfigError, match="keep_last"):
        load_config(Cfg, None, ["train.keep_last=1"])
    with pytest.raises(ConfigError, match="oracle"):
        load_config(Cfg, None, ["adapt.oracle=true", "adapt.feature=true"])
