"""Typed configuration (every knob of the model, the routing, the losses, training and evaluation).

Values the paper does not state (loss weights, threshold EMA decay, optimiser, steps of the
ablations, ...) are knobs whose defaults are *our* choices, documented here, never the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ROUTINGS = ("tc", "ec", "bl", "be", "le", "race")
GATINGS = ("softmax", "sigmoid", "identity")

Routing = Literal["tc", "ec", "bl", "be", "le", "race"]
Gating = Literal["softmax", "sigmoid", "identity"]

# DiT sizes (depth, hidden, heads); M is the paper's non-standard size (Table 4).
SIZES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "M": (16, 960, 16),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


@dataclass
class MoECfg:
    enabled: bool = True            # False: the dense DiT MLP (4d hidden)
    num_experts: int = 8            # E
    top_k: int = 2                  # k: average experts per token ("k-in-E"); expert hidden = 4d/k * hidden_split_scale
    routing: Routing = "race"       # tc | ec | bl | be | le | race (Table 6)
    gating: Gating = "identity"     # G(s): softmax | sigmoid | identity (Table 1)
    # eval: "threshold" compares scores with the per-row EMA of the training K-th score (for routings
    # whose top-K spans the batch: bl, be, race); "topk" keeps the batch top-K (batch dependent).
    eval_mode: Literal["threshold", "topk"] = "threshold"
    threshold_decay: float = 0.99   # beta of tau <- beta*tau + (1-beta)*s_(K) (unknown in the paper; ours)
    threshold_init: Literal["first_batch", "zero"] = "first_batch"
    normalize_topk: bool = False    # renormalise softmax gates over the selected experts (TC only)
    router_mlp: bool = True         # router trunk Linear(d,d)+GELU before the heads (Fig. 12)
    target_head: bool = True        # training-only PLR head d -> p^2*C
    kernel_impl: Literal["auto", "triton", "torch"] = "auto"


@dataclass
class ModelCfg:
    size: str = ""                  # "" -> use depth/hidden/heads below; else one of S/B/M/L/XL
    depth: int = 4
    hidden: int = 64
    heads: int = 4
    patch: int = 4
    image_size: int = 32            # after padding (Fashion-MNIST 28 is padded to 32 -> 8x8 = 64 tokens)
    channels: int = 1
    num_classes: int = 10
    class_dropout: float = 0.1      # label dropout for classifier-free guidance
    learn_sigma: bool = False       # DiT's 2C output channels (only the head size; no VLB term is trained)
    moe: MoECfg = field(default_factory=MoECfg)


@dataclass
class DiffusionCfg:
    kind: Literal["flow", "ddpm"] = "flow"   # rectified flow (velocity) or DDPM epsilon (DiT)
    num_timesteps: int = 1000                # DDPM training steps (linear beta 1e-4..0.02)
    sample_steps: int = 25
    cfg_scale: float = 1.5


@dataclass
class LossCfg:
    rsl_weight: float = 0.0         # router similarity loss weight (unknown in the paper)
    plr_weight: float = 0.0         # per-layer regularization weight (unknown in the paper)
    plr_reduce: Literal["sum", "mean"] = "sum"   # over layers (unknown in the paper)
    balance_weight: float = 0.0     # Switch balance loss weight (token-choice baseline)


@dataclass
class DataCfg:
    source: Literal["fashion_mnist", "synthetic", "folder", "latents"] = "fashion_mnist"
    path: str = ""                  # folder: an ImageFolder root; latents: a folder of *.npz shards
    pad_to: int = 32                # pad 28x28 Fashion-MNIST with background (-1) to this size
    train_limit: int = 0            # 0 = all training images
    synthetic_n: int = 512
    synthetic_size: int = 16
    synthetic_classes: int = 4


@dataclass
class TrainCfg:
    steps: int = 1000
    batch_size: int = 64            # global batch (split over ranks)
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 25
    ckpt_every: int = 0             # 0 = only at the end
    resume: bool = True
    threads: int = 0                # torch threads (0 = leave as is)


@dataclass
class EvalCfg:
    heldout_n: int = 1000           # held-out images for the denoising loss at fixed (x, t, noise)
    heldout_t_bins: int = 8
    fid_samples_per_class: int = 50
    fid_real_n: int = 10000
    batch_size: int = 250
    use_ema: bool = True
    seed: int = 1234
    fid: bool = True                # needs the trained classifier (`racedit classifier`)
    classifier_seed: int = 0
    inception_weights: str = ""     # local pt_inception-2015-12-05 weights -> also standard Inception FID (pixel runs)


@dataclass
class Cfg:
    name: str = "run"
    model: ModelCfg = field(default_factory=ModelCfg)
    diffusion: DiffusionCfg = field(default_factory=DiffusionCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"


def resolve_size(m: ModelCfg) -> tuple[int, int, int]:
    if not m.size:
        return m.depth, m.hidden, m.heads
    if m.size not in SIZES:
        raise ValueError(f"model.size {m.size!r} is not one of {sorted(SIZES)} (or '' for explicit depth/hidden/heads)")
    return SIZES[m.size]
