"""Typed configuration of the C-GAN member: model, data, gan, train, eval.

The paper's text (block design, loss weights, image size, groups) could not be read: every choice
below that is not a plain knob is labelled *inferred* or *ours* here and in the README.

``train.steps`` counts generator updates; each step first runs ``train.n_critic`` updates of both
discriminators (the age discriminator D_age and the transition-pattern discriminator D_trans).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError

# Age-group presets in years, inclusive [lo, hi] (notes §3.3-3.6). ProcAging uses equal bins of [0, 1].
GROUP_PRESETS: dict[str, list[list[int]]] = {
    # IPCGAN / CACD 5 groups: 11-20, 21-30, 31-40, 41-50, 50+ (read as 51+)
    "five": [[11, 20], [21, 30], [31, 40], [41, 50], [51, 200]],
    # the authors' later prototype (mathfinder/CODE_X): upper bounds 10, 18, 30, 40, 50, 60 and 60+
    "seven": [[0, 10], [11, 18], [19, 30], [31, 40], [41, 50], [51, 60], [61, 200]],
}


@dataclass
class ModelCfg:
    hidden: int = 64                 # base width of G and of both discriminators
    depth: int = 6                   # age-conditioned residual blocks of G (*inferred* count)
    d_depth: int = 6                 # stride-2 convs of D_age / D_trans; image_size % 2**d_depth == 0
    image_size: int = 128
    num_groups: int = 7              # K age groups
    input_skip: bool = True          # concatenate the input image before G's output conv (*inferred*)
    age_cin: bool = True             # age-conditional IN affine in every G layer (CODE_X style, *inferred*; on
                                     # by default after the conditioning pilot, README "Method")
    impl: Literal["auto", "triton", "torch"] = "auto"   # G's fused age-map + IN + affine + act (+ skip)
    d_cond: Literal["concat", "projection"] = "concat"  # how D_age / D_trans see the code: tiled one-hot stacked
                                     # on the image (the notes' reading, *inferred*) or a per-code projection of
                                     # D's features (ours; CODE_X / projection D; small.yaml, README "Known problem")


@dataclass
class DataCfg:
    source: Literal["procaging", "utkface", "cacd", "longitudinal"] = "procaging"
    path: str = ""                   # utkface/cacd: a folder of images; longitudinal: <path>/<person>/<image>
    groups: str = "seven"            # a GROUP_PRESETS name (real data); ignored by procaging
    group_bounds: list[list[int]] = field(default_factory=list)   # explicit [[lo, hi], ...] years (overrides groups)
    flip: bool = True                # random horizontal flip of training images
    num_train: int = 2000            # ProcAging training identities
    num_test: int = 300              # ProcAging test identities (disjoint; evaluation only: the claims)
    num_val: int = 200               # ProcAging validation identities (disjoint; LR selection only, never claims)
    pair_frac: float = 0.4           # ProcAging: share of training identities with >= 2 adjacent groups
    nuisance: float = 1.0            # ProcAging: scale of brightness / shift nuisance
    seed: int = 1234                 # ProcAging world seed (not the training seed)


@dataclass
class GanCfg:
    loss: Literal["lsgan", "wgan-gp", "vanilla"] = "lsgan"   # ours (CODE_X used WGAN-GP)
    lambda_t: float = 1.0            # weight of the transition-pattern term in L_G (0 = age-only cGAN)
    trans_negatives: bool = True     # D_trans: adjacent-group pairs of two different people are fake
    age_wrong_negatives: bool = True # D_age: real face + wrong group is fake (matching-aware)
    lambda_id: float = 0.0           # optional pixel identity term |G(x, y_x) - x|_1 (off by default; 10 in
                                     # small.yaml: CODE_X's reconstruction weight, ours)
    lambda_cls: float = 0.0          # age-classifier head on D_age: CE on real faces in L_D and on G(x, y_t) at
                                     # y_t in L_G (StarGAN / CODE_X practice, ours; 1 in small.yaml); needs
                                     # model.d_cond=projection
    lambda_gp: float = 10.0          # wgan-gp only
    pair_batch: int = 0              # pairs per step (0 = train.batch_size // 2)


@dataclass
class TrainCfg:
    steps: int = 40000               # generator updates
    batch_size: int = 16
    lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1
    schedule: Literal["constant", "linear"] = "constant"   # linear: decay to 0 over the last decay_frac
    decay_frac: float = 0.5
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_last: int = 2
    resume: bool = True
    threads: int = 0


@dataclass
class EvalCfg:
    batch_size: int = 128
    seed: int = 7                    # evaluators' world seed (separate from training and the data world)
    max_images: int = 300            # test identities aged into every group
    evaluator_train: int = 3000      # renders for the frozen evaluators
    evaluator_epochs: int = 8
    floor_group_acc: float = 0.85    # age-group classifier accuracy on held-out renders
    floor_age_mae: float = 0.06      # age regressor MAE (age in [0, 1])
    floor_id_auc: float = 0.90       # identity embedding: verification AUC across ages
    floor_param_mae: float = 0.12    # aging-parameter regressor MAE (params in [0, 1]; chance ~0.25)
    verif_people: int = 200          # cross-age verification: training identities (young images only)
    verif_epochs: int = 10
    grid_people: int = 6


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    gan: GanCfg = field(default_factory=GanCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        m = self.model
        if m.depth < 0 or m.hidden < 1 or m.d_depth < 1 or m.num_groups < 2:
            raise ConfigError(f"model.depth={m.depth}, model.hidden={m.hidden}, model.d_depth={m.d_depth}, "
                              f"model.num_groups={m.num_groups}: need depth >= 0, hidden >= 1, d_depth >= 1, K >= 2")
        if m.image_size % (2 ** m.d_depth) or m.image_size % 4:
            raise ConfigError(f"model.image_size={m.image_size} is not divisible by 2**model.d_depth="
                              f"{2 ** m.d_depth} (D's stride-2 convs) and by 4 (G's two downsamplings)")
        if self.gan.lambda_cls < 0 or self.gan.lambda_id < 0:
            raise ConfigError(f"gan.lambda_cls={self.gan.lambda_cls}, gan.lambda_id={self.gan.lambda_id}: must be >= 0")
        if self.gan.lambda_cls > 0 and m.d_cond != "projection":
            raise ConfigError(f"gan.lambda_cls={self.gan.lambda_cls} needs model.d_cond=projection (got "
                              f"{m.d_cond!r}: the concat critic's trunk is given the group it would classify)")
        if self.train.keep_last < 2:
            raise ConfigError(f"train.keep_last={self.train.keep_last}: must be >= 2 (a corrupt newest checkpoint "
                              "needs a fallback)")
        if self.train.n_critic < 1:
            raise ConfigError(f"train.n_critic={self.train.n_critic}: must be >= 1")
        d = self.data
        if not 0 <= d.pair_frac <= 1:
            raise ConfigError(f"data.pair_frac={d.pair_frac}: must be in [0, 1]")
        if d.source != "procaging":
            bounds = group_bounds(self)
            if len(bounds) != m.num_groups:
                raise ConfigError(f"data.groups/data.group_bounds give {len(bounds)} groups but "
                                  f"model.num_groups={m.num_groups}")


def group_bounds(cfg: Cfg) -> list[list[int]]:
    """The age groups of real data as inclusive [lo, hi] years (ConfigError for a bad preset/list)."""
    d = cfg.data
    if d.group_bounds:
        b = [list(map(int, x)) for x in d.group_bounds]
        for i, (lo, hi) in enumerate(b):
            if lo > hi or (i and lo <= b[i - 1][1]):
                raise ConfigError(f"data.group_bounds={d.group_bounds}: groups must be increasing, non-overlapping "
                                  "[lo, hi] pairs")
        return b
    if d.groups not in GROUP_PRESETS:
        raise ConfigError(f"data.groups={d.groups!r}: unknown preset; valid: {', '.join(GROUP_PRESETS)}")
    return GROUP_PRESETS[d.groups]
