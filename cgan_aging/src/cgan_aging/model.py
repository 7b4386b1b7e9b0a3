"""C-GAN networks: the conditional transformation network G, the age discriminator D_age and the
transition-pattern discriminator D_trans (notes §3.2, the *inferred* working formulation).

Notation (shapes; K age groups, base width h = model.hidden, S = model.image_size):

    x          input face                        (B, 3, S, S) in [-1, 1]
    y          group index                       (B,) int64 in 0..K-1;  e_y its one-hot (B, K)
    T(e, s)    e tiled to a map                  (B, K, s, s)
    M_l[y]     exact contribution of T(e_y) to age-conditioned conv l   (K, C_l, s, s)  (kernels.age_map)
    D_age      matching-aware critic map         (B, 1, S/2^n, S/2^n)
    D_trans    transition critic map of a pair   (B, 1, S/2^n, S/2^n)

G(x, y) (eq. G): conv7x7([x, T(e_y)]) -> IN -> ReLU; 2 x (4x4 stride-2 conv, IN, ReLU) to 4h;
``depth`` *age blocks* (the notes' reading of "residual blocks that imitate the aging procedure"):
``b(h) = IN(conv3x3(ReLU(IN(conv3x3([h, T(e_y)]))))) + h`` — the target age enters every block;
2 x (4x4 stride-2 transposed conv, IN, ReLU); output conv7x7([h, x]) (``model.input_skip``: the input
image is concatenated before the output layer, *inferred*) -> tanh. No conv bias, zero padding
(with IN the tiled code reaches the normalised features only through the padding border, notes §0.6;
``model.age_cin``, on by default after the conditioning pilot (README "Method"), adds an age-conditional
IN affine to every normalised layer, CODE_X style, *inferred*). IN keeps no running statistics.

The age-conditioned convs are evaluated either literally (``impl=torch``: concatenate the tiled
code) or as conv(h) + M[y] fused into the IN kernel (``impl=triton``); both are exact (tested).

D_age(x, y) = PatchGAN([x, T(e_y)]) (eq. D_age); D_trans(x_a, x_b, y_a) = PatchGAN([x_a, x_b,
T(e'_{y_a})]) with e' the one-hot of the transition y_a -> y_a + 1 over K - 1 transitions (eq. D_t).
PatchGAN: ``d_depth`` x (4x4 stride-2 conv with bias, LeakyReLU 0.2), width doubling, 3x3 conv -> 1.
That is ``model.d_cond=concat``; ``model.d_cond=projection`` (ours, README "Known problem") feeds the
critics the images only and projects their features on a per-code embedding (PatchCritic), and gives
D_age an age-classifier head (``gan.lambda_cls``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Cfg
from .kernels import age_map, check_impl, cond_in_act, select_impl


def tile(y: torch.Tensor, K: int, s: int) -> torch.Tensor:
    """T(e_y, s): (B, K, s, s)."""
    return F.one_hot(y, K).float()[:, :, None, None].expand(-1, -1, s, s)


class ConvNorm(nn.Module):
    """conv (no bias) -> IN + affine (+ age-conditional affine) -> ReLU? (+ skip); the age-conditioned
    variant takes K extra tiled one-hot input channels (``age=True``)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, K: int, age: bool, relu: bool,
                 cin: bool, impl: str, transposed: bool = False):
        super().__init__()
        self.K, self.age, self.relu, self.impl, self.pad, self.c_in = K, age, relu, check_impl(impl), pad, c_in
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(c_in + (K if age else 0), c_out, k, stride, pad, bias=False)
        self.weight = nn.Parameter(torch.ones(c_out))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.cin = nn.Embedding(K, 2 * c_out) if cin else None     # per-group (d gamma, d beta), zero init
        if self.cin is not None:
            nn.init.zeros_(self.cin.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if self.cin is not None:
            dg, db = self.cin(y).chunk(2, 1)                                  # (B, C) each
            w, b = w[None] + dg, b[None] + db
        if self.age and self.impl != "torch" and select_impl(self.impl, h.device) == "triton":
            s = h.shape[-1]
            z = F.conv2d(h, self.conv.weight[:, :self.c_in], padding=self.pad)           # (B, C_out, s, s)
            amap = age_map(self.conv.weight, self.c_in, self.K, s, s, self.pad)           # (K, C_out, s, s)
            return cond_in_act(z, amap, y, w, b, self.relu, skip, impl=self.impl)
        if self.age:
            h = torch.cat([h, tile(y, self.K, h.shape[-1])], 1)                           # (B, C_in + K, s, s)
        return cond_in_act(self.conv(h), None, None, w, b, self.relu, skip, impl=self.impl)


class AgeBlock(nn.Module):
    """b(h, y) = IN(conv3x3(ReLU(IN(conv3x3([h, T(e_y)]))))) + h  (eq. G, age block)."""

    def __init__(self, c: int, K: int, cin: bool, impl: str):
        super().__init__()
        self.n1 = ConvNorm(c, c, 3, 1, 1, K, age=True, relu=True, cin=cin, impl=impl)
        self.n2 = ConvNorm(c, c, 3, 1, 1, K, age=False, relu=False, cin=cin, impl=impl)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.n2(self.n1(h, y), y, skip=h)


class Generator(nn.Module):
    """G(x, y) -> face of the same person in group y, (B, 3, S, S)."""

    def __init__(self, cfg: Cfg):
        super().__init__()
        m = cfg.model
        h, K, cin, impl = m.hidden, m.num_groups, m.age_cin, m.impl
        self.K, self.input_skip = K, m.input_skip
        self.inp = ConvNorm(3, h, 7, 1, 3, K, age=True, relu=True, cin=cin, impl=impl)
        self.down = nn.ModuleList([ConvNorm(h, 2 * h, 4, 2, 1, K, False, True, cin, impl),
                                   ConvNorm(2 * h, 4 * h, 4, 2, 1, K, False, True, cin, impl)])
        self.blocks = nn.ModuleList(AgeBlock(4 * h, K, cin, impl) for _ in range(m.depth))
        self.up = nn.ModuleList([ConvNorm(4 * h, 2 * h, 4, 2, 1, K, False, True, cin, impl, transposed=True),
                                 ConvNorm(2 * h, h, 4, 2, 1, K, False, True, cin, impl, transposed=True)])
        self.out = nn.Conv2d(h + (3 if m.input_skip else 0), 3, 7, 1, 3, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.inp(x, y)                                                     # (B, h, S, S)
        for layer in self.down:
            h = layer(h, y)                                                    # (B, 2h, S/2) then (B, 4h, S/4)
        for b in self.blocks:
            h = b(h, y)                                                        # (B, 4h, S/4, S/4)
        for layer in self.up:
            h = layer(h, y)                                                    # (B, 2h, S/2) then (B, h, S)
        if self.input_skip:
            h = torch.cat([h, x], 1)                                           # (B, h + 3, S, S)
        return torch.tanh(self.out(h))                                         # (B, 3, S, S)


class PatchCritic(nn.Module):
    """PatchGAN critic of ``in_ch`` image channels with a group/transition code of ``n_codes`` values,
    conditioned as ``model.d_cond`` says: (B, 1, S/2^n, S/2^n).

    * ``concat`` (eq. D_age / D_t as the notes read them, *inferred*): the tiled one-hot code is stacked
      onto the image(s), ``head(trunk([imgs, T(code)]))`` (3x3 head, no bias).
    * ``projection`` (ours, after the diagnosis in the README; the authors' later CODE_X prototype and the
      projection discriminator): the trunk sees only the image(s) and the code enters through a per-code
      projection of its features at every patch, ``head(f) + <E[code], f>`` with f = trunk(imgs)
      (B, C, s, s) and E a (n_codes, C) table (zero init, so D starts unconditional); 3x3 head with bias.
      With ``classifier=True`` (D_age) it also carries an age-classifier head on the same features,
      ``classify(x)`` -> (B, K) logits (a conv over the whole s x s map, no bias; ``gan.lambda_cls``).
    """

    def __init__(self, in_ch: int, n_codes: int, cfg: Cfg, classifier: bool = False):
        super().__init__()
        m = cfg.model
        self.n_codes, self.cond = n_codes, m.d_cond
        proj = m.d_cond == "projection"
        layers, c_in, c = [], in_ch + (0 if proj else n_codes), m.hidden
        for _ in range(m.d_depth):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in, c = c, c * 2
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, 3, 1, 1, bias=proj)
        self.emb = nn.Embedding(n_codes, c_in) if proj else None          # (n_codes, C) projection table
        if self.emb is not None:
            nn.init.zeros_(self.emb.weight)
        s = m.image_size // 2 ** m.d_depth
        self.cls = nn.Conv2d(c_in, m.num_groups, s, 1, 0, bias=False) if proj and classifier else None

    def forward(self, *images_and_code) -> torch.Tensor:
        *imgs, code = images_and_code
        if self.emb is None:
            s = imgs[0].shape[-1]
            return self.head(self.trunk(torch.cat([*imgs, tile(code, self.n_codes, s)], 1)))
        f = self.trunk(torch.cat(imgs, 1) if len(imgs) > 1 else imgs[0])                # (B, C, s, s)
        return self.head(f) + (self.emb(code)[:, :, None, None] * f).sum(1, keepdim=True)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Age-group logits of faces x (B, 3, S, S) -> (B, K) (projection D_age only)."""
        if self.cls is None:
            raise ValueError("classify needs model.d_cond=projection on D_age (gan.lambda_cls > 0)")
        return self.cls(self.trunk(x)).flatten(1)


class AgeDiscriminator(PatchCritic):
    """D_age(x, y): is x a real face of group y? (+ ``classify`` under ``model.d_cond=projection``)"""

    def __init__(self, cfg: Cfg):
        super().__init__(3, cfg.model.num_groups, cfg, classifier=True)


class TransitionDiscriminator(PatchCritic):
    """D_trans(x_a, x_b, y_a): is (x_a in group y_a, x_b in y_a + 1) a real transition of one person?
    ``model.d_cond`` applies here too (the code is the transition index y_a over K - 1 transitions)."""

    def __init__(self, cfg: Cfg):
        super().__init__(6, cfg.model.num_groups - 1, cfg)


def gradient_penalty(critic, x_hats: list[torch.Tensor]) -> torch.Tensor:
    """WGAN-GP over the interpolated inputs ``x_hats`` (each requires grad): mean (||grad||_2 - 1)^2."""
    out = critic(*x_hats)
    grads = torch.autograd.grad(out, x_hats, grad_outputs=torch.ones_like(out), create_graph=True)
    norm = torch.cat([g.flatten(1) for g in grads], 1).norm(2, dim=1)       # (B,)
    return ((norm - 1) ** 2).mean()


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
