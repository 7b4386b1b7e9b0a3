"""Config dataclasses (``reprokit.config``): ``model`` (backbone + ``oe`` + ``mtp``), ``data``, ``train``, ``eval``.

Every hyper-parameter the paper leaves open is a key here with the value we chose as its default; the
README lists them. Static checks (that need no data) run in ``__post_init__`` and raise ``ConfigError``
naming the key; checks that need the vocabulary size (moduli coprime to V) run when the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError
from reprokit.lmdata import LMDataCfg

MAX_MODULUS = 2**31 - 1  # every product of the modular hash stays below 2**62 (int64-safe; see ngram.py)


@dataclass
class OECfg:
    """Over-Encoding (paper Eq. 5, Algorithm 1). ``enabled: false`` is the plain V x D embedding (baseline)."""

    enabled: bool = False
    n: int = 3                       # largest n-gram order; tables for every order in 2..n (Table 3 hierarchy)
    k: int = 1                       # slices per order ("low-rank decomposed" embedder, Eq. 4)
    m: int = 32769                   # base row count ("OE-m": the n-gram tables hold ~ m x D parameters)
    moduli: Literal["plus2i", "prime"] = "plus2i"   # table idx has m + 2 idx rows (Algorithm 1) or the idx-th prime >= m
    orders: list[int] = field(default_factory=list)  # [] -> 2..n; e.g. [3] drops the 2-gram table (Table 3 row 5)
    unigram: bool = True             # false: no 1-gram input table (Table 3 row 2: worse than the baseline)
    allow_shared_factor: bool = False   # permit moduli sharing a factor with V (Table 4's m = 64 V, on purpose)
    proj_init: Literal["fan_in", "std"] = "fan_in"   # projection init: N(0, 1/width) or N(0, model.init_std)
    table_init: Literal["std", "zero"] = "std"      # n-gram table rows: N(0, model.init_std) or 0 (unseen rows add nothing)

    def order_list(self) -> list[int]:
        return list(self.orders) if self.orders else list(range(2, self.n + 1))

    def num_tables(self) -> int:
        """S = k (n - 1) with every order, k x len(orders) otherwise."""
        return self.k * len(self.order_list())

    def validate(self, hidden: int) -> None:
        if self.n < 2:
            raise ConfigError(f"model.oe.n={self.n}: the largest n-gram order must be >= 2 (n = 1 is the baseline: "
                              "set model.oe.enabled=false)")
        if self.k < 1:
            raise ConfigError(f"model.oe.k={self.k}: the number of slices per order must be >= 1")
        if self.m < 2:
            raise ConfigError(f"model.oe.m={self.m}: an n-gram table needs at least 2 rows")
        bad = [o for o in self.order_list() if not 2 <= o <= self.n]
        if bad or len(set(self.order_list())) != len(self.order_list()):
            raise ConfigError(f"model.oe.orders={self.orders}: orders must be distinct values in 2..n={self.n}")
        top = self.m + 2 * (self.num_tables() - 1)
        if top > MAX_MODULUS:
            raise ConfigError(f"model.oe.m={self.m}: the largest modulus {top} exceeds 2**31 - 1 (int64-safe hashing)")
        s = self.num_tables()
        if hidden % s:
            raise ConfigError(f"model.oe.k={self.k}: the slice width D/(k(n-1)) = {hidden}/{s} is not an integer "
                              f"(model.hidden={hidden} must be divisible by k x number of orders = {s})")


@dataclass
class MTPCfg:
    """Over-Decoding as DeepSeek-V3 style multi-token prediction (MTP-DS, paper Sec. 3.2 / Table 5)."""

    heads: int = 0                   # 0: next-token only; 1: one extra block predicting token t+2
    weight: float = 0.1              # loss weight lambda of the t+2 head (OT uses 0.1)

    def validate(self) -> None:
        if self.heads not in (0, 1):
            raise ConfigError(f"model.mtp.heads={self.heads}: only 0 or 1 extra head is implemented (the paper's OT)")
        if self.weight < 0:
            raise ConfigError(f"model.mtp.weight={self.weight}: must be >= 0")


SIZES = {  # model.size presets: (depth, hidden, heads)
    "tiny": (2, 32, 2),
    "small": (2, 64, 4),
}
_DIMS = ("depth", "hidden", "heads")


@dataclass
class ModelCfg:
    size: str | None = None          # a preset of SIZES filling depth / hidden / heads (0 = unset)
    depth: int = 0                   # transformer blocks
    hidden: int = 0                  # width D
    heads: int = 0                   # attention heads
    mlp_hidden: int = 0              # SwiGLU inner width; 0 -> 8/3 D rounded up to a multiple of 8
    context: int = 128               # longest sequence (RoPE has no table, this only bounds the input)
    vocab_size: int = 0              # V; 0 -> from the data
    tie_embeddings: bool = True      # output head = the 1-gram table (Algorithm 1 ties them)
    init_std: float = 0.02           # N(0, 0.02); output projections of each block / sqrt(2 depth)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    impl: Literal["auto", "triton", "torch"] = "auto"
    oe: OECfg = field(default_factory=OECfg)
    mtp: MTPCfg = field(default_factory=MTPCfg)
    # paper-scale backbones (paper.py, the `paper` extra): transformers' OLMoE / OLMo2 with our OE embedding
    backbone: Literal["ours", "olmoe", "olmo2"] = "ours"
    experts: int = 0                 # olmoe: experts per MoE layer
    top_k: int = 0                   # olmoe: experts per token
    expert_hidden: int = 0           # olmoe: SwiGLU width of one expert

    def __post_init__(self) -> None:
        if self.size is not None:
            if self.size not in SIZES:
                raise ConfigError(f"model.size={self.size!r} is not a preset; valid: {', '.join(SIZES)}")
            for key, val in zip(_DIMS, SIZES[self.size]):
                cur = getattr(self, key)
                if cur and cur != val:
                    raise ConfigError(f"model.{key}={cur} conflicts with model.size={self.size!r} ({key} {val})")
                setattr(self, key, val)
        for key in _DIMS:
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be >= 1")
        if self.hidden and self.heads and (self.hidden % self.heads or (self.hidden // self.heads) % 2):
            raise ConfigError(f"model.hidden={self.hidden} must be divisible by model.heads={self.heads} "
                              "into an even head width (RoPE)")
        if self.oe.enabled and self.hidden:
            self.oe.validate(self.hidden)
        self.mtp.validate()
        if self.backbone == "olmoe" and not (self.experts >= 1 and 1 <= self.top_k <= self.experts
                                             and self.expert_hidden >= 1):
            raise ConfigError(f"model.backbone=olmoe needs model.experts >= model.top_k >= 1 and model.expert_hidden "
                              f">= 1 (got {self.experts}, {self.top_k}, {self.expert_hidden})")

    def check_complete(self) -> None:
        """Before building a model: the sizes are set (by model.size or all of depth / hidden / heads)."""
        unset = [f"model.{k}" for k in _DIMS if not getattr(self, k)]
        if unset:
            raise ConfigError(f"{', '.join(unset)} unset: give model.size ({', '.join(SIZES)}) or all of "
                              "model.depth, model.hidden and model.heads")
        if self.vocab_size < 2:
            raise ConfigError(f"model.vocab_size={self.vocab_size}: need the vocabulary size (from the data or set)")

    @property
    def ffn_hidden(self) -> int:
        return self.mlp_hidden or 8 * -(-self.hidden // 3)


DataCfg = LMDataCfg  # the data section is reprokit.lmdata's, shared with the other LM member


@dataclass
class TrainCfg:
    steps: int = 20
    batch_size: int = 8
    seq_len: int = 32
    lr: float = 3e-3
    table_lr_mult: float = 1.0       # n-gram tables' LR = lr x this (the paper uses one AdamW LR)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1        # matrices only; no decay on norms, embeddings and n-gram tables
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8                # Adam epsilon (SparseAdam adds it before the bias correction, AdamW after)
    grad_clip: float = 1.0
    sparse_tables: bool = True       # nn.Embedding(sparse=True) + SparseAdam for the n-gram tables; false: dense AdamW
    seed: int = 0
    log_every: int = 5
    eval_every: int = 0              # 0: only the final evaluation
    eval_tokens: int = 16384         # periodic evaluations: the first this many val tokens (fixed subset)
    ckpt_every: int = 0              # 0: only at the end
    keep_last: int = 2
    resume: bool = True
    threads: int = 0                 # 0: torch's default
    stop_after: int = 0              # 0: run to steps; else stop (with a checkpoint) after this step

    def __post_init__(self) -> None:
        if self.keep_last < 2:
            raise ConfigError(f"train.keep_last={self.keep_last}: keep at least 2 checkpoints (a corrupt newest "
                              "one needs a fallback)")
        for key in ("steps", "batch_size", "seq_len", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= 1")


@dataclass
class EvalCfg:
    batch_size: int = 16
    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    max_tokens: int = 0              # 0: the whole split; else its first max_tokens tokens
    seed: int = 0                    # unused (evaluation is deterministic); kept for the common vocabulary
    use_ema: bool = False            # no EMA in this paper


@dataclass
class Cfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    out_dir: str = "runs/default"
