"""Typed configuration of the UGAN member: model, data, loss, ugan, train, eval.

StarGAN's published defaults (Choi et al. 2018, and the public implementation as the notes describe
it) are the defaults here: base width 64, 6 residual blocks, lambda_cls 1, lambda_rec 10,
lambda_gp 10, Adam 1e-4 with betas (0.5, 0.999), 5 critic updates per generator update.

Everything UGAN-specific whose exact form could not be read from the paper is a switch in ``ugan``
and labelled *inferred* in the README: the trace-head G objective (``g_variant``), whether D's trace
loss also sees real images (``d_real_term``), the weight ``lambda_tr`` and the prototype form.

``train.steps`` counts *generator* updates; each step first runs ``train.n_critic`` discriminator
updates (StarGAN's "iteration" is one D update, so its 200k iterations are 40k steps here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError


@dataclass
class ModelCfg:
    hidden: int = 64                 # base width of G and D (StarGAN g_conv_dim = d_conv_dim = 64)
    depth: int = 6                   # residual blocks of G (StarGAN g_repeat_num)
    d_depth: int = 6                 # stride-2 convs of D (StarGAN d_repeat_num); image_size % 2**d_depth == 0
    image_size: int = 128
    num_domains: int = 5             # K (c_dim)
    # StarGAN's G uses InstanceNorm2d(affine=True, track_running_stats=True): the running statistics are
    # tracked in training. False = no running buffers at all (StarGAN v2's choice).
    track_running_stats: bool = True
    # What G's IN normalises with at inference (eval mode). "instance": each image's own statistics --
    # the public StarGAN code's test() never calls G.eval(), so its G runs in train mode and never reads
    # the running buffers. "running": the running estimates, what G.eval() does with tracked statistics
    # (StarGAN's first, PyTorch-0.3 release called G.eval() in test). On ProcFace "running" wrecks the
    # translations: target accuracy 0.63 vs 1.00 for the same checkpoint (results/probes/eval_norm_probes.jsonl).
    eval_norm: Literal["instance", "running"] = "instance"
    impl: Literal["auto", "triton", "torch"] = "auto"   # G's fused IN+affine+ReLU(+skip) kernel


@dataclass
class DataCfg:
    source: Literal["procface", "folder", "celeba"] = "procface"
    path: str = ""                   # folder: <path>/<domain>/<images>; celeba: the CelebA root
    label_mode: Literal["single", "multi"] = "single"   # softmax CE (ProcFace, RaFD, folders) | BCE (CelebA)
    domains: list[str] = field(default_factory=list)    # folder names / CelebA attributes (empty: all folders)
    celeba_crop: int = 178           # StarGAN: centre crop 178 then resize to model.image_size
    flip: bool = True                # random horizontal flip (StarGAN)
    num_train: int = 2000            # ProcFace identities for training (one render each)
    num_test: int = 400              # ProcFace test identities (disjoint; evaluation + counterfactuals)
    num_val: int = 200               # ProcFace validation identities (disjoint; LR selection only, never claims)
    seed: int = 1234                 # ProcFace world seed (identities, marks); not the training seed
    mark_strength: float = 1.0       # contrast of the source-only marks


@dataclass
class LossCfg:
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0


@dataclass
class UganCfg:
    lambda_tr: float = 0.0           # 0 = StarGAN; the trace head is still built but carries no loss
    # *inferred*: G against the trace head. untranslated = make D trace G(x,c_t) to c_t (variant A);
    # confusion = cross-entropy of the trace head to the uniform distribution (variant B)
    g_variant: Literal["untranslated", "confusion"] = "untranslated"
    d_real_term: bool = True         # *inferred*: D's trace loss also sees reals (traced to their own domain)
    # *inferred* (UGAN v2): none | pixel (per-domain mean training image as 3 extra G input channels) |
    # feature (running per-domain mean of D-trunk features, FiLM on G's bottleneck)
    prototype: Literal["none", "pixel", "feature"] = "none"
    proto_diff: bool = False         # pixel prototype: feed P_t - P_s instead of P_t
    proto_momentum: float = 0.99     # feature prototype running-mean momentum


@dataclass
class TrainCfg:
    steps: int = 40000               # generator updates (x n_critic discriminator updates)
    batch_size: int = 16
    lr: float = 1e-4                 # G learning rate
    d_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5
    # stargan: the public code's rule (subtract lr/decay_iters every 1000 D iterations in the last
    # decay_iters iterations: ~0.1 % in total, effectively constant); linear: a true linear decay to 0
    # over the last decay_frac of the steps; constant: none
    schedule: Literal["stargan", "linear", "constant"] = "stargan"
    decay_frac: float = 0.5
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0              # unused (evaluation runs after training)
    ckpt_every: int = 1000
    keep_last: int = 2
    resume: bool = True
    threads: int = 0                 # torch threads (0 = torch's default)


@dataclass
class EvalCfg:
    batch_size: int = 64
    seed: int = 7                    # evaluators' seed (separate from training and the ProcFace world)
    max_images: int = 400            # test sources translated
    evaluator_epochs: int = 6
    evaluator_train: int = 2000      # real renders for the frozen evaluators
    floor_domain_acc: float = 0.9    # the frozen domain classifier must reach this on held-out renders
    floor_mark_acc: float = 0.85     # the mark detector's per-label accuracy floor
    tracer_epochs: int = 20
    floor_tracer_control: float = 0.85   # the tracer on perfect translations that keep the source's marks
    grid_sources: int = 4


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    ugan: UganCfg = field(default_factory=UganCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        m = self.model
        if m.depth < 0 or m.hidden < 1 or m.d_depth < 1 or m.num_domains < 2:
            raise ConfigError(f"model.depth={m.depth}, model.hidden={m.hidden}, model.d_depth={m.d_depth}, "
                              f"model.num_domains={m.num_domains}: need depth >= 0, hidden >= 1, d_depth >= 1, K >= 2")
        if m.image_size % (2 ** m.d_depth):
            raise ConfigError(f"model.image_size={m.image_size} is not divisible by 2**model.d_depth="
                              f"{2 ** m.d_depth} (D's stride-2 convs)")
        if self.train.keep_last < 2:
            raise ConfigError(f"train.keep_last={self.train.keep_last}: must be >= 2 (a corrupt newest checkpoint "
                              "needs a fallback)")
        if self.train.n_critic < 1:
            raise ConfigError(f"train.n_critic={self.train.n_critic}: must be >= 1")
        if self.data.label_mode == "multi" and self.ugan.prototype != "none":
            raise ConfigError("ugan.prototype needs data.label_mode=single (a prototype per domain)")
