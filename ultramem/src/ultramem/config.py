"""Config dataclasses (``reprokit.config``): ``model`` (backbone + ``mem`` + ``moe``), ``data``, ``train``, ``eval``.

Every hyper-parameter the paper leaves open is a key here with the value we chose as its default; the
README lists them. Static checks (that need no data) run in ``__post_init__`` and raise ``ConfigError``
naming the key; placement strings are parsed against ``model.depth`` here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reprokit.config import ConfigError
from reprokit.lmdata import LMDataCfg

PLACEMENT_HELP = "'a:b' pairs joined by '/', 0 <= a <= b < model.depth (e.g. '0:1/2:3')"


def parse_placement(text: str, depth: int, key: str = "model.mem.placement") -> list[tuple[int, int]]:
    """``"a:b/c:d"`` -> [(a, b), (c, d)]: a unit reads the normed FFN input of block a and adds its output
    to the residual after block b (skip-layer, paper Sec. 4 "split big mem & skip"); a == b is the plain
    in-block placement (parallel to that block's FFN, the PKM layout)."""
    units = []
    for part in str(text).split("/"):
        bits = part.split(":")
        try:
            a, b = (int(bits[0]), int(bits[1])) if len(bits) == 2 else (None, None)
        except ValueError:
            a, b = None, None
        if a is None:
            raise ConfigError(f"{key}={text!r}: '{part}' is not 'a:b' ({PLACEMENT_HELP})")
        if not 0 <= a <= b < depth:
            raise ConfigError(f"{key}={text!r}: unit '{part}' out of range for model.depth={depth} "
                              f"({PLACEMENT_HELP})")
        units.append((a, b))
    return units


@dataclass
class MemCfg:
    """A product-key memory (PKM, Lample et al. 2019) with the UltraMem switches of the paper's Table 2.

    Every switch off = PKM (softmax scores over the top-m, value width D, one query per head, query
    LayerNorm in place of PKM's BatchNorm, N(0, 1/D_v) values, value LR x10 fixed). The UltraMem row
    (configs/small.yaml ``ultramem`` arm) turns every switch on."""

    placement: str = "0:0"           # memory units "a:b/c:d" (see parse_placement)
    n_keys: int = 128                # n: sub-keys per side; the (virtual) grid holds n^2 slots
    heads: int = 2                   # H: retrieval heads (each its own keys, shares the value table)
    topm: int = 16                   # m: slots kept per head (and the first-stage rows / columns kept per side)
    k_dim: int = 64                  # D_k: query / key width (two halves of D_k / 2)
    v_dim: int = 0                   # D_v: value width; 0 -> model.hidden (PKM) or hidden / 2 (value_proj)
    softmax: bool = True             # PKM: softmax over the m kept scores; false: raw scores ("rm softmax")
    value_proj: bool = False         # "half vdim + proj": D_v = D / 2 (v_dim 0) and a Linear(D_v -> D)
    share_query: bool = False        # "share query": two heads use one query projection
    key_norm: bool = False           # "q/k LN": LayerNorm on the sub-keys too (the query always has one)
    ive: int = 1                     # E: IVE virtual blocks (1 = off); physical rows = n^2 / E
    ive_shuffle: bool = True         # IVE: random permutation of the virtual slots (fixed buffer)
    tucker_rank: int = 0             # r: TDQKR Tucker rank (0 = plain additive product keys)
    cores: int = 1                   # h: MCS score cores (each weights its 1/h slice of the value width)
    aux_alpha: float = 0.001         # TDQKR auxiliary loss weight alpha (Table 5)
    aux_tau: float = 0.15            # TDQKR auxiliary loss margin tau (Table 5)
    init: Literal["pkm", "improved"] = "pkm"   # improved: Var(V) = E / (2 m H L) (paper Sec. 4.1 "improved init")
    query_conv: int = 0              # kernel of the causal depthwise conv before the query (0 = off; ours 5)

    def units(self, depth: int) -> list[tuple[int, int]]:
        return parse_placement(self.placement, depth)

    def value_width(self, hidden: int) -> int:
        if self.v_dim:
            return self.v_dim
        return hidden // 2 if self.value_proj else hidden

    def n_virtual(self) -> int:
        return self.n_keys * self.n_keys

    def n_physical(self) -> int:
        return self.n_virtual() // self.ive

    def validate(self, hidden: int, depth: int) -> None:
        p = "model.mem"
        for key in ("n_keys", "heads", "topm", "k_dim", "ive", "cores"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{p}.{key}={getattr(self, key)} must be >= 1")
        if self.topm > self.n_keys:
            raise ConfigError(f"{p}.topm={self.topm} exceeds {p}.n_keys={self.n_keys}: the first stage keeps "
                              "top-m of the n sub-keys per side")
        if self.topm > self.n_virtual() // self.ive and self.ive > 1:
            raise ConfigError(f"{p}.topm={self.topm} exceeds the {self.n_physical()} physical rows")
        if self.k_dim % 2:
            raise ConfigError(f"{p}.k_dim={self.k_dim} must be even (two sub-key halves)")
        if self.n_virtual() % self.ive:
            raise ConfigError(f"{p}.ive={self.ive} does not divide the n_keys^2 = {self.n_virtual()} virtual "
                              "slots (the physical table holds n^2 / E rows)")
        vd = self.value_width(hidden)
        if vd < 1 or vd % self.cores:
            raise ConfigError(f"{p}.cores={self.cores} does not divide the value width D_v={vd} "
                              f"({p}.v_dim / model.hidden): MCS gives each core a 1/h slice")
        if self.cores > 1 and self.tucker_rank < 1:
            raise ConfigError(f"{p}.cores={self.cores} needs {p}.tucker_rank >= 1 (MCS splits the Tucker core)")
        if self.share_query and self.heads % 2:
            raise ConfigError(f"{p}.share_query needs an even {p}.heads (got {self.heads})")
        if self.tucker_rank < 0 or self.query_conv < 0:
            raise ConfigError(f"{p}.tucker_rank / {p}.query_conv must be >= 0")
        if vd != hidden and not (self.value_proj or self.ive > 1):
            raise ConfigError(f"{p}.v_dim={vd} differs from model.hidden={hidden}: needs {p}.value_proj or {p}.ive > 1")
        self.units(depth)


@dataclass
class MoECfg:
    """The MoE baseline: SwiGLU experts, softmax gate, top-k, Switch-style balance loss."""

    experts: int = 8
    top_k: int = 2
    expert_hidden: int = 256
    balance: float = 0.01            # load-balance loss weight
    layers: list[int] = field(default_factory=lambda: [-1])   # blocks whose FFN is the MoE (-1 = the last)

    def validate(self, depth: int) -> None:
        if not 1 <= self.top_k <= self.experts:
            raise ConfigError(f"model.moe.top_k={self.top_k} must be in 1..model.moe.experts={self.experts}")
        if self.expert_hidden < 1:
            raise ConfigError(f"model.moe.expert_hidden={self.expert_hidden} must be >= 1")
        for i in self.layers:
            if not -depth <= i < depth:
                raise ConfigError(f"model.moe.layers={self.layers}: {i} out of range for model.depth={depth}")


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
    tie_embeddings: bool = True      # output head = the token embedding
    init_std: float = 0.02           # N(0, 0.02); output projections of each block / sqrt(2 depth)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    impl: Literal["auto", "triton", "torch"] = "auto"
    arch: Literal["dense", "moe", "memory"] = "dense"   # what the sparse module is
    # the decoder: ours (CPU runs) or transformers' OLMo (dense / memory) / OLMoE (moe) for the paper-scale
    # configs (paper.py; needs the `paper` extra: uv sync --extra paper)
    backbone: Literal["ours", "olmo", "olmoe"] = "ours"
    mem: MemCfg = field(default_factory=MemCfg)
    moe: MoECfg = field(default_factory=MoECfg)

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
        if self.arch == "memory" and self.hidden and self.depth:
            self.mem.validate(self.hidden, self.depth)
        if self.arch == "moe" and self.depth:
            self.moe.validate(self.depth)
        if self.backbone == "olmo" and self.arch == "moe":
            raise ConfigError("model.backbone=olmo has dense FFNs: model.arch=moe needs model.backbone=olmoe")
        if self.backbone == "olmoe":
            if self.arch != "moe":
                raise ConfigError(f"model.backbone=olmoe is the MoE baseline: needs model.arch=moe "
                                  f"(got {self.arch!r}; the dense / memory arms use model.backbone=olmo)")
            if self.depth and sorted({i % self.depth for i in self.moe.layers}) != list(range(self.depth)):
                raise ConfigError(f"model.backbone=olmoe puts an MoE in every block: model.moe.layers="
                                  f"{self.moe.layers} must list all of 0..{self.depth - 1}")

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
    value_lr_mult: float = 10.0      # memory values' LR = lr x this (PKM / UltraMem: 10)
    value_lr_decay: bool = False     # UltraMem: the multiplier decays linearly from value_lr_mult to 1
    value_lr_decay_frac: float = 1.0  # ... reaching 1 at this fraction of the steps
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1        # matrices only; no decay on norms, embeddings, Tucker cores, values
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
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
