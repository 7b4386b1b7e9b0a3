"""One connection-module family: Pre-Norm residual, Hyper-Connections (HC) and Frac-Connections (FC).

Variant names (case-insensitive): ``prenorm``; ``shcx<n>`` / ``dhcx<n>`` (static / dynamic HC with expansion
rate n); ``sfcx<m>`` / ``dfcx<m>`` (static / dynamic FC with frac-rate m); a ``-notanh`` suffix drops the tanh
of the dynamic part (HC's "W/O tanh" ablation). Examples: ``DHCx4``, ``SHCx2``, ``DHCx4-notanh``, ``DFCx4``.

Every sublayer (attention and MLP separately) gets its own :class:`Connection`. The model keeps a state
``H`` of shape ``(B, T, s, w)``: HC ``s = n`` copies of width ``d`` (input expansion copies the embedding
into every stream; output reduction sums the streams before the final norm); FC ``s = m`` fractions of width
``d / m`` (expansion/reduction are reshapes); Pre-Norm ``s = 1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .kernels import conn_post, conn_pre

__all__ = ["ConnSpec", "parse_variant", "Connection", "expand_streams", "reduce_streams", "param_groups",
           "connection_param_count", "STATIC_PARAM_NAMES"]

_VARIANT = re.compile(r"^(?P<sd>[sd])(?P<kind>hc|fc)x(?P<rate>-?\d+)(?P<notanh>-notanh)?$")
STATIC_PARAM_NAMES = ("static_alpha", "static_beta", "s_alpha", "s_beta", "norm_w")


@dataclass(frozen=True)
class ConnSpec:
    """kind: prenorm | hc | fc; rate: n (hc) or m (fc); dynamic; use_tanh."""
    kind: str = "prenorm"
    rate: int = 1
    dynamic: bool = False
    use_tanh: bool = True

    @property
    def streams(self) -> int:
        return 1 if self.kind == "prenorm" else self.rate

    def label(self) -> str:
        if self.kind == "prenorm":
            return "Pre-Norm"
        name = f"{'D' if self.dynamic else 'S'}{self.kind.upper()}x{self.rate}"
        return name + ("" if self.use_tanh or not self.dynamic else " w/o tanh")


def parse_variant(name: str) -> ConnSpec:
    """Parse a variant name (see the module docstring); unknown names raise ValueError naming the value."""
    key = str(name).strip().lower().replace("×", "x").replace("_", "-")
    if key in ("prenorm", "pre-norm", "residual"):
        return ConnSpec()
    m = _VARIANT.match(key)
    if m is None:
        raise ValueError(f"unknown connection variant {name!r}; valid: 'prenorm', 'shcx<n>', 'dhcx<n>', "
                         "'sfcx<m>', 'dfcx<m>', optionally with the suffix '-notanh' (e.g. 'DHCx4-notanh')")
    rate = int(m["rate"])
    kind = m["kind"]
    if rate < 1:
        raise ValueError(f"connection variant {name!r}: {'expansion rate n' if kind == 'hc' else 'frac-rate m'}"
                         f" must be >= 1, got {rate}")
    dynamic = m["sd"] == "d"
    if m["notanh"] and not dynamic:
        raise ValueError(f"connection variant {name!r}: '-notanh' only applies to dynamic variants")
    return ConnSpec(kind=kind, rate=rate, dynamic=dynamic, use_tanh=not m["notanh"])


class Connection(nn.Module):
    """The connection around one sublayer ``T`` (which includes the sublayer's own pre-norm).

    Pre-Norm: ``h + T(h)``. HC/FC: ``x, mix, beta = pre(H)``; ``y = T(x)``; ``H' = post(H, y, mix, beta)``.
    Init (HC Eq. 14 / FC Eq. 15): HC reads stream ``layer_index mod n``, writes with weight 1 to every stream,
    identity stream mixing; FC identity read, identity mixing, write weight 1; dynamic weights 0, scales 0.01.
    ``dyn_norm_affine``: gain on the per-stream LayerNorm of the dynamic part (None = the papers' counts:
    no gain for HC — OLMo's non-parametric LayerNorm —, a gain of size d/m for FC).
    """

    def __init__(self, spec: ConnSpec, dim: int, layer_index: int, impl: str = "torch",
                 scale_init: float = 0.01, dyn_norm_affine: bool | None = None, eps: float = 1e-5):
        super().__init__()
        if spec.kind not in ("prenorm", "hc", "fc"):
            raise ValueError(f"unknown connection kind {spec.kind!r}; valid: prenorm, hc, fc")
        if spec.rate < 1:
            raise ValueError(f"connection rate must be >= 1, got {spec.rate}")
        self.spec, self.dim, self.layer_index, self.impl, self.eps = spec, dim, layer_index, impl, eps
        self.record: Callable[[str, torch.Tensor], None] | None = None  # analysis hook
        if spec.kind == "prenorm":
            return
        s = spec.rate
        if spec.kind == "fc":
            if dim % s != 0:
                raise ValueError(f"frac-rate m={s} must divide the width d={dim}")
            w, r = dim // s, s
        else:
            w, r = dim, 1
        self.s, self.w, self.r = s, w, r
        alpha = torch.zeros(s, r + s)
        if spec.kind == "hc":
            alpha[layer_index % s, 0] = 1.0
        else:
            alpha[:, :r] = torch.eye(s)
        alpha[:, r:] = torch.eye(s)
        self.static_alpha = nn.Parameter(alpha)
        self.static_beta = nn.Parameter(torch.ones(s))
        if spec.dynamic:
            affine = (spec.kind == "fc") if dyn_norm_affine is None else dyn_norm_affine
            self.norm_w = nn.Parameter(torch.ones(w)) if affine else None
            self.W = nn.Parameter(torch.zeros(w, r + s + 1))
            self.s_alpha = nn.Parameter(torch.tensor(float(scale_init)))
            self.s_beta = nn.Parameter(torch.tensor(float(scale_init)))
        else:
            self.norm_w = self.W = self.s_alpha = self.s_beta = None

    def extra_repr(self) -> str:
        return f"{self.spec.label()}, dim={self.dim}, layer_index={self.layer_index}"

    def pre(self, H: torch.Tensor):
        lead = H.shape[:-2]
        x, mix, beta = conn_pre(H.reshape(-1, self.s, self.w), self.static_alpha, self.static_beta, self.W,
                                self.norm_w, self.s_alpha, self.s_beta, self.r, self.spec.use_tanh, self.eps,
                                impl=self.impl)
        return x.reshape(*lead, self.dim), mix, beta

    def post(self, H: torch.Tensor, y: torch.Tensor, mix: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        lead = H.shape[:-2]
        y = y.reshape(-1, self.r if self.spec.kind == "fc" else 1, self.w)
        out = conn_post(H.reshape(-1, self.s, self.w), y, mix, beta, impl=self.impl)
        return out.reshape(*lead, self.s, self.w)

    def forward(self, H: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.spec.kind == "prenorm":
            if self.record is not None:
                self.record("input", H)
                self.record("streams", H.unsqueeze(-2))
                one = torch.ones(1, 1, device=H.device)
                self.record("matrices", {"read": one, "mix": one, "write": one[0]})
            return H + branch(H)
        x, mix, beta = self.pre(H)
        if self.record is not None:
            self.record("input", x)
            self.record("streams", H)
            self.record("matrices", self.mean_matrices(H.detach()))
        return self.post(H, branch(x), mix, beta)

    def mean_matrices(self, H: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Token-averaged (read (s, r), mix (s, s), write (s,)) coefficients (static ones if H is None)."""
        from .kernels.reference import coefficients
        if H is None or self.W is None:
            a, b = self.static_alpha, self.static_beta
        else:
            a, b = coefficients(H.reshape(-1, self.s, self.w), self.static_alpha, self.static_beta, self.W,
                                self.norm_w, self.s_alpha, self.s_beta, self.spec.use_tanh, self.eps)
            a, b = a.mean(0), b.mean(0)
        return {"read": a[:, :self.r].detach(), "mix": a[:, self.r:].detach(), "write": b.detach()}


def expand_streams(h: torch.Tensor, spec: ConnSpec) -> torch.Tensor:
    """(..., d) -> (..., s, w): HC copies into n streams, FC reshapes into m fractions, Pre-Norm is identity."""
    if spec.kind == "prenorm":
        return h
    if spec.kind == "hc":
        return h.unsqueeze(-2).expand(*h.shape[:-1], spec.rate, h.shape[-1]).contiguous()
    d = h.shape[-1]
    if d % spec.rate != 0:
        raise ValueError(f"frac-rate m={spec.rate} must divide the width d={d}")
    return h.reshape(*h.shape[:-1], spec.rate, d // spec.rate)


def reduce_streams(H: torch.Tensor, spec: ConnSpec) -> torch.Tensor:
    """Inverse of :func:`expand_streams` for the output: HC sums the streams, FC concatenates fractions."""
    if spec.kind == "prenorm":
        return H
    if spec.kind == "hc":
        return H.sum(-2)
    return H.reshape(*H.shape[:-2], H.shape[-2] * H.shape[-1])


def connection_param_count(spec: ConnSpec, dim: int, dyn_norm_affine: bool | None = None) -> int:
    """Parameters of one connection module, by the papers' formulas (HC App. B / FC Sec. 4.4).

    SHC n(n+2); DHC |norm| + d(n+2) + n(n+2) + 2; SFC m(2m+1); DFC |norm| + (d/m)(2m+1) + m(2m+1) + 2.
    """
    if spec.kind == "prenorm":
        return 0
    k = spec.rate
    if spec.kind == "hc":
        static, w, dyn_cols = k * (k + 2), dim, k + 2
        affine = False if dyn_norm_affine is None else dyn_norm_affine
    else:
        static, w, dyn_cols = k * (2 * k + 1), dim // k, 2 * k + 1
        affine = True if dyn_norm_affine is None else dyn_norm_affine
    if not spec.dynamic:
        return static
    return (w if affine else 0) + w * dyn_cols + static + 2


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices (incl. the dynamic connection projections W), none on the static
    connection parameters (static matrices, scales s_alpha/s_beta, norm gains), biases, norms, 1-D params."""
    decay, no_decay = [], []
    seen = set()
    for mod in model.modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            static = isinstance(mod, Connection) and pname in STATIC_PARAM_NAMES
            (no_decay if static or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def out_proj_std(base_std: float, spec: ConnSpec, n_sublayers: int, sqrt_n: bool = True) -> float:
    """Std of the output projections: base / sqrt(2 * #blocks) (GPT-2 style), times sqrt(n) for HC
    when ``sqrt_n`` (HC Sec. 4: the summed final output keeps the baseline's std)."""
    std = base_std / math.sqrt(max(n_sublayers, 1))
    if sqrt_n and spec.kind == "hc":
        std *= math.sqrt(spec.rate)
    return std
