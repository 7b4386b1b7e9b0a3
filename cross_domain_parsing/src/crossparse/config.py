"""Typed configuration of the cross-domain parsing member: model, data, adapt, train, eval.

The defaults are the official code's settings (notes §4.2) at paper scale: DeepLab-v2 / VGG-16 at
241x121 with 12 labels, batch 10 source + 10 target images, parser SGD lr 1e-8 on a Caffe-style
summed loss (x10 / x20 for the final 1x1 weights / biases), momentum 0.9, weight decay 5e-4; C and
D_f Adam 1e-5 betas (0.5, 0.999); the parser-adversarial step and D_l Adam 2e-8; the label pair
every 5th iteration. ``configs/small.yaml`` states every CPU-scale deviation (width multiplier,
BatchNorm in the trunk, Adam with a mean loss).

Arms are combinations of ``adapt`` switches (``reproduce.ARMS``): ``feature`` (C + D_f +
refinement, steps 2, 3, 5), ``label`` (D_l, step 4; real = ground-truth one-hots, or the source
predictions for the AdaptSegNet-style ``label_real=source_pred`` baseline), ``oracle`` (trained on
labelled target images), ``finetune_n`` (fine-tuning a source-only run on n labelled target images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError

TARGETS = ("indoor", "outdoor", "movie", "runway")


@dataclass
class ModelCfg:
    num_classes: int = 12
    height: int = 241                # input H (official code: 241x121)
    width: int = 121                 # input W
    width_mult: float = 1.0          # VGG/ASPP channel multiplier (1 = VGG-16 64..512, ASPP 1024); CPU: < 1
    aspp_hidden: int = 1024          # ASPP branch width before width_mult
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # none = VGG-16 as in DeepLab (official); batch = BatchNorm after each trunk conv (our CPU-scale
    # deviation for training from random init without the ImageNet / deeplab.pth initialisation)
    norm: Literal["none", "batch"] = "none"
    pool_strides: list[int] = field(default_factory=lambda: [2, 2, 2, 1, 1])   # official; CPU: [2, 2, 1, 1, 1]
    pool_ceil: bool = True           # *inferred*: Caffe-style ceil-mode 3x3 pools (DeepLab-v2 prototxt)
    dropout: float = 0.5             # ASPP dropout (official 0.5)
    c_blocks: int = 6                # residual blocks of the feature compensation network C
    c_hidden: int = 128              # C's first width (doubled twice to 512), before width_mult
    df_hidden: int = 1024            # D_f width, before width_mult
    dl_hidden: int = 64              # D_l first width (official 64); not scaled by width_mult
    trunk_checkpoint: str = ""       # a local VGG-16 / DeepLab state dict (never downloaded)
    impl: Literal["auto", "triton", "torch"] = "auto"   # fused upsample+CE / upsample+argmax+confusion
    ce_chunk_rows: int = 0           # torch path only: >0 = memory-saving chunked upsample+CE (rows per chunk)


@dataclass
class DataCfg:
    source: Literal["procparse", "lip"] = "procparse"
    path: str = ""                   # lip: a root with images/ and labels/ (LIP-style), see data.py
    target_path: str = ""            # lip: an unlabelled target image folder (training)
    target_test_path: str = ""       # lip: a labelled target folder (images/ + labels/) for evaluation
    target: Literal["indoor", "outdoor", "movie", "runway"] = "indoor"
    label_map: str = "lip20_to_12"   # the mapping table in data.LABEL_MAPS (LIP only)
    preprocess: Literal["caffe", "symmetric"] = "caffe"   # caffe: BGR, x*255 - 128 (official); symmetric: 2x - 1
    flip: bool = True                # random horizontal flip with left/right label swap (source batches)
    num_train: int = 2000            # ProcParse source training images
    num_val: int = 200               # ProcParse source validation images (selection, validity floor)
    num_target_train: int = 2000     # unlabelled target images (labelled only for the oracle arm)
    num_target_val: int = 200        # labelled target validation (optimistic selection column only)
    num_test: int = 300              # labelled target test images (evaluation only)
    seed: int = 1234                 # ProcParse world seed (not the training seed)
    shift_strength: float = 1.0      # scale of every target appearance shift


@dataclass
class AdaptCfg:
    feature: bool = False            # C + D_f + refinement (iteration steps 2, 3, 5)
    label: bool = False              # label-adversarial pair (step 4)
    label_every: int = 5             # the code runs step 4 every 5th iteration
    # D_l input for predictions: softmax (our default, as AdaptSegNet) | logits (the official code)
    dl_input: Literal["softmax", "logits"] = "softmax"
    label_real: Literal["onehot", "source_pred"] = "onehot"   # source_pred = AdaptSegNet-style baseline
    # with model.norm=batch: may target forwards (steps 3, 4) update the parser's BN statistics? false =
    # BN in eval mode for target batches in every arm, so no arm gains from target BN statistics (AdaBN)
    target_bn_stats: bool = True
    lambda_adv: float = 1.0          # weight of the parser-adversarial loss (code: 1)
    oracle: bool = False             # train on labelled target images instead of source
    finetune_n: int = 0              # >0: fine-tune train.init_from on n labelled target images
    c_lr: float = 1e-5
    df_lr: float = 1e-5
    adv_lr: float = 2e-8
    dl_lr: float = 2e-8
    beta1: float = 0.5
    beta2: float = 0.999


@dataclass
class TrainCfg:
    steps: int = 20000
    batch_size: int = 10             # source images per iteration (and as many target images)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-8                 # parser lr (official SGD on the summed loss)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    last_lr_mult: float = 10.0       # final 1x1 classifier weights (x20 for their biases)
    ce_reduction: Literal["sum_per_image", "mean"] = "sum_per_image"   # code: sum over pixels / batch
    init_from: str = ""              # a finished run folder whose parser initialises this one (fine-tuning)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 1000           # evaluation curve (source-val, target-val, target-test) every k steps
    ckpt_every: int = 1000
    keep_last: int = 2
    resume: bool = True
    threads: int = 0


@dataclass
class EvalCfg:
    batch_size: int = 50
    max_images: int = 0              # cap on evaluated images per split (0 = all)
    overlays: int = 6                # images in each overlay PNG
    floor_source_miou: float = 0.80  # validity: source-only mIoU on held-out source images


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    adapt: AdaptCfg = field(default_factory=AdaptCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        m, t, a = self.model, self.train, self.adapt
        if m.num_classes not in (11, 12):
            raise ConfigError(f"model.num_classes={m.num_classes}: the label sets have 12 (or 11 without dress)")
        if m.width_mult <= 0 or m.height < 16 or m.width < 16:
            raise ConfigError(f"model.width_mult={m.width_mult}, model.height={m.height}, model.width={m.width}: "
                              "need width_mult > 0 and an input of at least 16x16")
        if len(m.pool_strides) != 5 or any(s not in (1, 2) for s in m.pool_strides) or m.pool_strides[0] != 2:
            raise ConfigError(f"model.pool_strides={m.pool_strides}: five pools with strides 1 or 2, pool1 stride 2 "
                              "(C starts from pool1's output)")
        if len(m.aspp_rates) < 1:
            raise ConfigError("model.aspp_rates must list at least one dilation rate")
        if t.keep_last < 2:
            raise ConfigError(f"train.keep_last={t.keep_last}: must be >= 2 (a corrupt newest checkpoint "
                              "needs a fallback)")
        if a.label_every < 1:
            raise ConfigError(f"adapt.label_every={a.label_every}: must be >= 1")
        if a.oracle and (a.feature or a.label):
            raise ConfigError("adapt.oracle trains on target labels: it does not combine with adapt.feature/label")
        if a.finetune_n < 0:
            raise ConfigError(f"adapt.finetune_n={a.finetune_n}: must be >= 0")
        if t.batch_size < 1:
            raise ConfigError(f"train.batch_size={t.batch_size}: must be >= 1")
