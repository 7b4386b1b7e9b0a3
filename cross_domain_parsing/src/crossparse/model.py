"""DeepLab-v2 / VGG-16 parser split P1 | P2 | P3, feature compensation network C, feature
discriminator D_f and label discriminator D_l, as in the official code (notes §4.2).

Notation (notes §4.3), input x of shape (B, 3, H, W):

| symbol | meaning | shape (241x121 input, width_mult 1) |
|---|---|---|
| f1 = P1(x) | conv1_1..conv1_2 + pool1 (3x3, stride 2) | (B, 64, 121, 61) |
| f5 = P2(f1) | conv2..conv5 (pools stride 2, 2, 1, 1; conv5 dilation 2) | (B, 512, 31, 16) |
| P3(f5) | ASPP: 4 branches (3x3 dilation 6/12/18/24 -> 1024, 1x1 -> 1024, 1x1 -> K), summed | (B, K, 31, 16) |
| C(f1) | feature compensation: 7x7 conv, 6 residual blocks, two stride-2 stages | (B, 512, 31, 16) |
| D_f(f5) | feature discriminator (patch map) | (B, 1, 8, 4) |
| D_l(y) | label discriminator on K-channel maps at input resolution | (B, 1, 16, 8) |

The parser returns *low-resolution* logits; the bilinear upsampling to (H, W) (P3's last op in the
code) is fused into the loss / evaluation kernels (``kernels``), or done by ``Parser.upsample``.

The VGG-16 trunk is timm's ``vgg16`` ``features`` (conv weights unchanged, so a local ImageNet or
DeepLab state dict loads by name); we replace its 2x2 pools by DeepLab-v2's 3x3 pools (strides 2, 2,
2, 1, 1, padding 1, ceil mode) and set conv5's dilation to 2 (padding 2), as the official code's
VGG does. ``model.width_mult`` < 1 builds the same layout with timm's VGG class and scaled channels
(our CPU-scale deviation); ``model.norm=batch`` adds BatchNorm after each trunk conv (deviation).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from reprokit.errors import DataError

from .config import Cfg

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _ch(c: int, mult: float) -> int:
    return max(4, int(round(c * mult)))


def timm_vgg16_features(width_mult: float = 1.0, device=None) -> nn.Sequential:
    """timm's VGG-16 ``features`` (random init; the pre-logits ConvMlp is dropped)."""
    import timm
    from timm.models.vgg import VGG

    if width_mult == 1.0:
        net = timm.create_model("vgg16", pretrained=False, num_classes=0, mlp_ratio=1 / 64, device=device)
    else:
        cfg = [v if v == "M" else _ch(v, width_mult) for v in VGG16_CFG]
        net = VGG(cfg, num_classes=0, mlp_ratio=1 / 64, device=device)
    return net.features


class Parser(nn.Module):
    """DeepLab-v2 VGG-16 with a 4-branch ASPP (branch logits summed), split P1 / P2 / P3."""

    def __init__(self, cfg: Cfg, device=None):
        super().__init__()
        m = cfg.model
        feats = timm_vgg16_features(m.width_mult, device)
        layers, pool_i, conv_i = [], 0, 0
        for mod in feats:
            if isinstance(mod, nn.MaxPool2d):
                s = m.pool_strides[pool_i]
                layers.append(nn.MaxPool2d(3, stride=s, padding=1, ceil_mode=m.pool_ceil))
                pool_i += 1
                continue
            if isinstance(mod, nn.Conv2d):
                conv_i += 1
                if conv_i > 10:                                   # conv5_1..conv5_3: dilation 2
                    mod.dilation, mod.padding = (2, 2), (2, 2)
                layers.append(mod)
                if m.norm == "batch":
                    layers.append(nn.BatchNorm2d(mod.out_channels, device=device))
                continue
            layers.append(mod)
        cut = next(i for i, x in enumerate(layers) if isinstance(x, nn.MaxPool2d)) + 1
        self.p1 = nn.Sequential(*layers[:cut])                   # conv1 + pool1
        self.p2 = nn.Sequential(*layers[cut:])                   # conv2 .. pool5
        self.c1 = _ch(64, m.width_mult)
        self.c5 = _ch(512, m.width_mult)
        hid = _ch(m.aspp_hidden, m.width_mult)
        self.p3 = nn.ModuleList([nn.Sequential(
            nn.Conv2d(self.c5, hid, 3, padding=r, dilation=r, device=device), nn.ReLU(True), nn.Dropout(m.dropout),
            nn.Conv2d(hid, hid, 1, device=device), nn.ReLU(True), nn.Dropout(m.dropout),
            nn.Conv2d(hid, m.num_classes, 1, device=device)) for r in m.aspp_rates])
        for br in self.p3:                                       # DeepLab: final classifiers N(0, 0.01)
            nn.init.normal_(br[-1].weight, 0, 0.01)
            nn.init.zeros_(br[-1].bias)
        self.out_size = (m.height, m.width)
        if m.trunk_checkpoint:
            self.load_trunk(m.trunk_checkpoint)

    def load_trunk(self, path: str) -> None:
        """Load conv weights from a local VGG-16 state dict (timm ``features.<i>`` names or torchvision's)."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"model.trunk_checkpoint={path}: no such file (a local state dict; never downloaded)")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"model.trunk_checkpoint={path}: cannot be read as a state dict ({e})") from e
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        convs = [c for c in [*self.p1, *self.p2] if isinstance(c, nn.Conv2d)]
        keys = sorted({k.rsplit(".", 1)[0] for k in sd if k.startswith("features.") and k.endswith(".weight")},
                      key=lambda k: int(k.split(".")[1]))
        if len(keys) != len(convs):
            raise DataError(f"model.trunk_checkpoint={path}: {len(keys)} 'features.<i>' convs, the trunk has {len(convs)}")
        for k, conv in zip(keys, convs):
            w = sd[f"{k}.weight"]
            if w.shape != conv.weight.shape:
                raise DataError(f"model.trunk_checkpoint={path}: {k}.weight {tuple(w.shape)} != {tuple(conv.weight.shape)}")
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(sd[f"{k}.bias"])

    def head(self, f5: torch.Tensor) -> torch.Tensor:
        """P3 without the upsampling: the sum of the ASPP branches' logits (B, K, h, w)."""
        return sum(br(f5) for br in self.p3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.p2(self.p1(x)))                    # (B, K, h, w) low resolution

    def upsample(self, logits: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=self.out_size, mode="bilinear", align_corners=False)

    def last_layer_params(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The final 1x1 classifiers' weights and biases (lr x10 / x20 in the code)."""
        return [br[-1].weight for br in self.p3], [br[-1].bias for br in self.p3]


class ResBlock(nn.Module):
    """Reflection-padded 3x3 conv, BN, ReLU, 3x3 conv, BN, plus the input (C's blocks, code)."""

    def __init__(self, c: int, device=None):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, device=device), nn.BatchNorm2d(c, device=device),
                                  nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, device=device),
                                  nn.BatchNorm2d(c, device=device))

    def forward(self, x):
        return x + self.body(x)


class Compensation(nn.Module):
    """Feature compensation network C (code ``netG``): f1 (B, c1, H/2, W/2) -> (B, c5, h, w)."""

    def __init__(self, cfg: Cfg, c1: int, c5: int, device=None, n_down: int = 2):
        super().__init__()
        m = cfg.model
        h = _ch(m.c_hidden, m.width_mult)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c1, h, 7, device=device),
                                   nn.BatchNorm2d(h, device=device), nn.ReLU(True)]
        # code: before blocks 3 and 6 (of 6); n_down = 2 for pool strides 2, 2, 2, 1, 1
        down_before = sorted({max(1, round((i + 1) * m.c_blocks / n_down)) for i in range(n_down)})
        c = h
        for b in range(1, max(m.c_blocks, n_down) + 1):
            if b in down_before:                                 # stride-1 max-pool + stride-2 conv, channels x2
                nxt = c5 if c * 2 > c5 or b == down_before[-1] else c * 2
                layers += [nn.MaxPool2d(3, 1, 1), nn.Conv2d(c, nxt, 3, 2, 1, device=device),
                           nn.BatchNorm2d(nxt, device=device), nn.ReLU(True)]
                c = nxt
            if b <= m.c_blocks:
                layers.append(ResBlock(c, device))
        if c != c5:                                              # no stride-2 stage: match pool5's width
            layers += [nn.Conv2d(c, c5, 1, device=device)]
        self.net = nn.Sequential(*layers)

    def forward(self, f1: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.net(f1)                                         # (B, c5, ~h, ~w)
        if y.shape[-2:] != torch.Size(size):                     # even sizes: ceil pools vs stride-2 convs
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


class FeatureDiscriminator(nn.Module):
    """D_f on pool5 maps: 3x3 dil-6 conv, ReLU, dropout; 3x3 s2, ReLU, dropout; 3x3 s2 -> 1 (code)."""

    def __init__(self, cfg: Cfg, c5: int, device=None):
        super().__init__()
        h = _ch(cfg.model.df_hidden, cfg.model.width_mult)
        self.net = nn.Sequential(nn.Conv2d(c5, h, 3, padding=6, dilation=6, device=device), nn.ReLU(True),
                                 nn.Dropout(cfg.model.dropout), nn.Conv2d(h, h, 3, 2, 1, device=device), nn.ReLU(True),
                                 nn.Dropout(cfg.model.dropout), nn.Conv2d(h, 1, 3, 2, 1, device=device))

    def forward(self, f5):
        return self.net(f5)


class LabelDiscriminator(nn.Module):
    """D_l on K-channel label maps: 5x5 s2 conv 64 + LReLU 0.2; 3 x (5x5 s2, x2 channels, BN, LReLU);
    5x5 conv -> 1 (code)."""

    def __init__(self, cfg: Cfg, device=None):
        super().__init__()
        h, K = cfg.model.dl_hidden, cfg.model.num_classes
        layers = [nn.Conv2d(K, h, 5, 2, 2, device=device), nn.LeakyReLU(0.2, True)]
        c = h
        for _ in range(3):
            layers += [nn.Conv2d(c, 2 * c, 5, 2, 2, device=device), nn.BatchNorm2d(2 * c, device=device),
                       nn.LeakyReLU(0.2, True)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 5, 1, 2, device=device))
        self.net = nn.Sequential(*layers)

    def forward(self, y):
        return self.net(y)


class CrossParse(nn.Module):
    """All networks of one run in one module (one state dict): parser, C, D_f, D_l."""

    def __init__(self, cfg: Cfg, device=None):
        super().__init__()
        self.parser = Parser(cfg, device)
        n_down = sum(s == 2 for s in cfg.model.pool_strides[1:])      # pool1 -> pool5 resolution steps
        self.C = Compensation(cfg, self.parser.c1, self.parser.c5, device, n_down)
        self.D_f = FeatureDiscriminator(cfg, self.parser.c5, device)
        self.D_l = LabelDiscriminator(cfg, device)


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
