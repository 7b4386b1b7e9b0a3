"""Config dataclasses (reprokit.config). Every unknown hyper-parameter is a knob with a documented default.

One vocabulary across the papers of this repository: ``model.depth`` (blocks), ``model.hidden`` (width d),
``model.heads``; ``train.*`` for optimisation and run control; ``eval.*`` for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ModelCfg:
    kind: Literal["lm", "vit"] = "lm"
    connection: str = "prenorm"        # prenorm | shcx<n> | dhcx<n> | sfcx<m> | dfcx<m> [-notanh]
    hidden: int = 64                   # width d
    depth: int = 2                     # blocks; each block = attention + MLP = 2 wrapped sublayers
    heads: int = 4
    context: int = 64                  # max sequence length (LM)
    vocab_size: int = 64               # LM; 0 -> from the data (text sources with a tokenizer)
    mlp: Literal["swiglu", "gelu"] = "swiglu"   # OLMo: SwiGLU; ViT: GELU
    mlp_hidden: int = 0                # 0 -> 8/3 d rounded up to 8 (SwiGLU) or 4 d (GELU)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_affine: bool = False          # OLMo-1B/7B: non-parametric LayerNorm
    norm_eps: float = 1e-5
    final_norm_affine: bool | None = None   # None -> same as norm_affine
    qk_norm: bool = False
    pos: Literal["rope", "learned"] = "rope"
    tie_embeddings: bool = True        # OLMo-1B ties; OLMo-7B does not
    init_std: float = 0.02             # our choice (N(0, 0.02)); output projections / sqrt(2L)
    sqrt_n_out_init: bool = True       # HC Sec. 4: output projections' std times sqrt(n)
    scale_init: float = 0.01           # s_alpha, s_beta init (both papers)
    dyn_norm_affine: bool | None = None   # None -> HC none (non-parametric), FC gain d/m (papers' counts)
    conn_eps: float = 1e-5
    impl: Literal["auto", "triton", "torch"] = "torch"
    # MoE (OLMoE); 0 experts = dense
    n_experts: int = 0
    top_k: int = 1
    expert_hidden: int = 0
    # ViT
    image_size: int = 28
    patch: int = 4
    channels: int = 1
    num_classes: int = 10


@dataclass
class DataCfg:
    source: Literal["synthetic", "shakespeare", "memmap", "fashion_mnist", "synthetic_images"] = "synthetic"
    # memmap: pre-tokenized flat token files (raw, or .npy with a header), for the paper-scale configs;
    # test_path empty -> the val file is the test split too. Needs model.vocab_size (no tokenizer to read it from).
    train_path: str = ""
    val_path: str = ""
    test_path: str = ""
    memmap_dtype: Literal["uint16", "uint32"] = "uint16"
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 1024             # BPE only
    synthetic_tokens: int = 20000
    synthetic_images: int = 512
    split_seed: int = 0


@dataclass
class TrainCfg:
    steps: int = 20
    batch_size: int = 8
    seq_len: int = 32
    lr: float = 3e-3
    schedule: Literal["constant", "cosine"] = "cosine"   # after the linear warm-up
    min_lr_frac: float = 0.1           # cosine: final LR as a fraction of the peak
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    beta1: float = 0.9                 # AdamW betas (OLMo: 0.9, 0.95)
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 5
    eval_every: int = 0                # 0 -> only at the end
    ckpt_every: int = 0                # 0 -> only at the end
    keep_last: int = 2                 # checkpoints kept (>= 2: a corrupt newest one has a fallback)
    threads: int = 0                   # 0 -> leave torch's default
    resume: bool = True
    stop_after: int = 0                # 0 -> run to `steps`; else checkpoint and stop after this step
                                       # (simulates an interruption; the LR schedule still spans `steps`)
    grad_norms: bool = False           # log per-sublayer gradient norms at log steps


@dataclass
class EvalCfg:
    max_tokens: int = 0                # LM: 0 -> the whole split; else its first max_tokens tokens
    max_images: int = 0                # ViT: 0 -> the whole split; else its first max_images images
    batch_size: int = 32
    seed: int = 0                      # the analysis inputs and the sampling stream (reprokit.rng keys)


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"
