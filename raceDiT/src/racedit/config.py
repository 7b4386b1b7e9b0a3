"""Typed configuration (every knob of the model, the routing, the losses, training and evaluation).

Values the paper does not state (loss weights, threshold EMA decay, optimiser, steps of the
ablations, ...) are knobs whose defaults are *our* choices, documented here, never the paper's.

Model sizes: ``model.size`` (S/B/M/L/XL, the DiT presets plus the paper's M of Table 4) fills
``model.depth/hidden/heads``; 0 means "unset". Setting one of them to another value than the preset
is a ConfigError; without a size all three must be given (``model.depth=4`` then works as usual).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError

ROUTINGS = ("tc", "ec", "bl", "be", "le", "race")
GATINGS = ("softmax", "sigmoid", "identity")

Routing = Literal["tc", "ec", "bl", "be", "le", "race"]
Gating = Literal["softmax", "sigmoid", "identity"]
Size = Literal["S", "B", "M", "L", "XL"]

# DiT sizes (depth, hidden, heads); M is the paper's non-standard size (Table 4).
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "M": (16, 960, 16),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
_DIMS = ("depth", "hidden", "heads")


@dataclass
class MoECfg:
    enabled: bool = True            # False: the dense DiT MLP (4d hidden)
    num_experts: int = 8            # E
    top_k: int = 2                  # k: average experts per token ("k-in-E"); expert hidden = 4d/k
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


@dataclass
class ModelCfg:
    size: Size | None = None        # a DiT preset filling depth/hidden/heads; None: give all three
    depth: int = 0                  # blocks (0 = unset: from the preset)
    hidden: int = 0                 # width d (0 = unset)
    heads: int = 0                  # attention heads (0 = unset)
    impl: Literal["auto", "triton", "torch"] = "auto"   # every kernel of the model (reprokit.kernels)
    patch: int = 4
    image_size: int = 32            # after padding (Fashion-MNIST 28 is padded to 32 -> 8x8 = 64 tokens)
    channels: int = 1
    num_classes: int = 10
    class_dropout: float = 0.1      # label dropout for classifier-free guidance
    learn_sigma: bool = False       # DiT's 2C output channels (only the head size; no VLB term is trained)
    moe: MoECfg = field(default_factory=MoECfg)

    def __post_init__(self) -> None:
        dims = {k: getattr(self, k) for k in _DIMS}
        if self.size is not None:
            if self.size not in SIZES:
                raise ConfigError(f"model.size: {self.size!r} is not one of {list(SIZES)}")
            preset = dict(zip(_DIMS, SIZES[self.size]))
            for k, v in dims.items():
                if v == 0:
                    setattr(self, k, preset[k])
                elif v != preset[k]:
                    raise ConfigError(f"model.{k}={v} conflicts with model.size={self.size} (which sets "
                                      f"{k}={preset[k]}); drop model.size or model.{k}")
            return
        bad = [f"model.{k}={v}" for k, v in dims.items() if v <= 0]
        blank = all(v == 0 for v in dims.values())
        # The blank section (no size, nothing set) is allowed only because reprokit's load_config
        # instantiates the defaults before merging the file; building a model from it fails in dims().
        if bad and not blank:
            raise ConfigError(f"without model.size, model.depth/hidden/heads must all be > 0; got {', '.join(bad)}")

    def dims(self) -> tuple[int, int, int]:
        """(depth, hidden, heads); a ConfigError when neither a size nor the three values were given."""
        if min(self.depth, self.hidden, self.heads) <= 0:
            raise ConfigError("the model has no size: set model.size (one of "
                              f"{'/'.join(SIZES)}) or model.depth, model.hidden and model.heads")
        return self.depth, self.hidden, self.heads


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
    warmup_frac: float = 0.05       # linear warm-up over max(1, int(warmup_frac * steps)) steps
    schedule: Literal["constant", "cosine"] = "constant"   # after the warm-up
    min_lr_frac: float = 0.0        # cosine: final LR = min_lr_frac * lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0          # 0 = no clipping
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 25
    eval_every: int = 0             # validation loss (eval.val_n images, EMA weights) every N steps; 0 = never
    ckpt_every: int = 0             # 0 = only at the end
    keep_last: int = 2              # checkpoints kept (>= 2: a corrupt newest one has a fallback)
    resume: bool = True
    threads: int = 0                # torch threads (0 = leave as is)

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_frac <= 1.0:
            raise ConfigError(f"train.warmup_frac={self.warmup_frac} is not in [0, 1]")
        if self.keep_last < 2:
            raise ConfigError(f"train.keep_last={self.keep_last}: keep at least 2 checkpoints "
                              "(a corrupt newest one falls back to the previous)")
        if self.log_every < 1:
            raise ConfigError(f"train.log_every={self.log_every} must be >= 1")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every={self.eval_every} must be >= 0 (0 = never)")


@dataclass
class EvalCfg:
    heldout_n: int = 1000           # held-out images for the denoising loss at fixed (x, t, noise)
    # validation images: the *last* val_n of the held-out split, disjoint from the first heldout_n (the test
    # images the claims are judged on) and from the FID reals when fid_real_n + val_n <= its size; the LR
    # choice and the flattening check use them only. 0 = no validation split.
    val_n: int = 0
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
    model: ModelCfg = field(default_factory=ModelCfg)
    diffusion: DiffusionCfg = field(default_factory=DiffusionCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"
