"""The reproduction plan: arms (dense, MoE, PKM, the mini-ladder, UltraMem) at matched activated MACs and
sparse parameters (``PLANS``: the sizes), and which runs the plan holds (``GROUPS``: one
``reprokit.plan.Group`` per scale -- LR grid, seeds, the LR each arm borrows), plus the helpers the report
shares (tokens per parameter, flattening).

See ``reproduce.py`` for the execution and ``report.py`` for the verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reprokit.config import load_config
from reprokit.plan import Group

from .config import Cfg

PKG_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Arm:
    """One model variant: its run-name stem, its role in the plan and the config keys it sets."""

    name: str
    role: str                          # dense | moe | pkm | ultramem | ladder
    family: str                        # whose chosen LR it uses: "dense" or "ultramem" (``FAMILY``)
    keys: tuple[tuple[str, object], ...]

    def overrides(self) -> list[str]:
        out = []
        for k, v in self.keys:
            if isinstance(v, list):
                v = json.dumps(v)
            elif isinstance(v, str) and ":" in v:
                v = json.dumps(v)          # quoted: YAML would read 1:1 as a base-60 integer
            out.append(f"{k}={v}")
        return out


# The memory switches of the Table 2 ladder, cumulative (names as in the paper's rows).
PKM_KEYS = (("model.arch", "memory"), ("model.mem.softmax", True), ("model.mem.value_proj", False),
            ("model.mem.share_query", False), ("model.mem.key_norm", False), ("model.mem.ive", 1),
            ("model.mem.tucker_rank", 0), ("model.mem.cores", 1), ("model.mem.init", "pkm"),
            ("model.mem.query_conv", 0), ("train.value_lr_decay", False))
LADDER1 = (("model.mem.softmax", False), ("model.mem.value_proj", True), ("model.mem.share_query", True),
           ("model.mem.key_norm", True))                                # rm softmax, half vdim+proj, share q, q/k LN
LADDER2 = (("model.mem.ive", 4), ("model.mem.tucker_rank", 2), ("model.mem.cores", 2))   # IVE, TDQKR, MCS
FULL = (("model.mem.init", "improved"), ("train.value_lr_decay", True), ("model.mem.query_conv", 5))


def _merge(*groups) -> tuple:
    d: dict = {}
    for g in groups:
        d.update(dict(g))
    return tuple(d.items())


def memory_arm_keys(plan: dict, step: str) -> tuple:
    """Keys of a memory arm: ``pkm``, ``ladder1``, ``ladder2`` or ``ultramem`` (cumulative switches), the
    sizes of the plan (sparse parameters matched through n_keys), and the FFN width that matches the dense
    arm's activated MACs (``matched_ffn``)."""
    mp = plan["mem"]
    groups = [PKM_KEYS, (("model.mem.n_keys", mp["n_pkm"]), ("model.mem.placement", mp["placement_pkm"]),
                         ("model.mem.heads", mp["heads"]), ("model.mem.topm", mp["topm"]),
                         ("model.mem.k_dim", mp["k_dim"]))]
    if step in ("ladder1", "ladder2", "ultramem"):
        groups += [LADDER1, (("model.mem.n_keys", mp["n_half"]),)]
    if step in ("ladder2", "ultramem"):
        groups += [LADDER2, (("model.mem.n_keys", mp["n_ive"]), ("model.mem.placement", mp["placement_skip"]))]
    if step == "ultramem":
        groups.append(FULL)
    keys = _merge(*groups)
    return keys + (("model.mlp_hidden", matched_ffn(plan, keys)),)


def _cfg(plan: dict, keys: tuple) -> Cfg:
    over = list(plan["train"]) + Arm("x", "x", "x", keys).overrides()
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], over)


def matched_ffn(plan: dict, keys: tuple, multiple: int = 8) -> int:
    """The SwiGLU width (a multiple of 8) whose model has activated MACs nearest the dense arm's (the MACs
    are linear in the width, so two evaluations of the counter fix the line)."""
    from .counter import model_counts

    def macs(f: int, k: tuple) -> int:
        return model_counts(_cfg(plan, k + (("model.mlp_hidden", f),)).model)["activated_macs"]

    target = macs(plan["dense_ffn"], dense_keys(plan))
    c0, c1 = macs(multiple, keys), macs(2 * multiple, keys)
    f = multiple + (target - c0) * multiple / (c1 - c0)
    return max(multiple, int(round(f / multiple)) * multiple)


def dense_keys(plan: dict) -> tuple:
    return (("model.arch", "dense"), ("model.mlp_hidden", plan["dense_ffn"]))


def moe_keys(plan: dict) -> tuple:
    mo = plan["moe"]
    return (("model.arch", "moe"), ("model.mlp_hidden", plan["dense_ffn"]), ("model.moe.experts", mo["experts"]),
            ("model.moe.top_k", mo["top_k"]), ("model.moe.expert_hidden", mo["expert_hidden"]),
            ("model.moe.layers", mo["layers"]))


_SMALL_MEM = {"heads": 2, "topm": 16, "k_dim": 16, "n_pkm": 96, "n_half": 136, "n_ive": 272,
              "placement_pkm": "1:1", "placement_skip": "0:1"}
_SMOKE_MEM = {"heads": 2, "topm": 4, "k_dim": 16, "n_pkm": 16, "n_half": 16, "n_ive": 32,
              "placement_pkm": "1:1", "placement_skip": "0:1"}

# The sizes of each scale's arms (the runs themselves: ``GROUPS``).
PLANS: dict[str, dict] = {
    # seconds: synthetic tokens (V = 64), the tiny model of configs/smoke.yaml
    "smoke": {"config": "smoke.yaml", "dense_ffn": 64,
              "moe": {"experts": 4, "top_k": 2, "expert_hidden": 32, "layers": [1]}, "mem": _SMOKE_MEM,
              "train": ["train.steps=8", "train.eval_every=2", "train.ckpt_every=4", "train.log_every=2"]},
    # the CPU reproduction: Brown + BPE 2048; sizing in configs/small.yaml and the README
    "small": {"config": "small.yaml", "dense_ffn": 256,
              "moe": {"experts": 24, "top_k": 2, "expert_hidden": 128, "layers": [1]}, "mem": _SMALL_MEM,
              "train": []},
}


ARM_KEYS = ("dense", "moe", "pkm", "ladder1", "ladder2", "ultramem")   # every arm of a plan, in table order
GRID_ARMS = ("dense", "ultramem")        # the arms whose LR is tuned on the grid (seed 0)
FAMILY = {"moe": "dense", "pkm": "ultramem", "ladder1": "ultramem", "ladder2": "ultramem"}   # arm -> LR source
SEED_ARMS = ("dense", "ultramem", "pkm", "moe")     # the arms of the claims: every seed of the group


def _group(lr_grid: tuple[float, ...], seeds: tuple[int, ...], steps: int) -> Group:
    """The runs of one scale (``reprokit.plan``): dense and UltraMem on the LR grid at seed 0, extended x2 or
    /2 beyond an edge optimum (by validation loss) at most twice; at the chosen LRs the further seeds of
    dense and UltraMem, every seed of PKM and MoE (PKM at UltraMem's LR, MoE at the dense LR), and the two
    ladder steps at seed 0 (UltraMem's LR). ``tag``: the training budget, so runs of another budget never
    count as these."""
    return Group(name="", lr_grid=lr_grid, grid_arms=GRID_ARMS, select_by="val_loss", seeds=seeds,
                 seed_arms=SEED_ARMS, secondary=dict(FAMILY), max_extensions=2, tag=f"st{steps}")


GROUPS: dict[str, Group] = {
    "smoke": _group((3e-3, 6e-3), (0, 1), 8),               # steps: configs/smoke.yaml (tested)
    "small": _group((3e-3, 6e-3, 1.2e-2), (0, 1, 2), 1000),  # steps: configs/small.yaml (tested)
}


_ARMS_CACHE: dict[str, dict[str, Arm]] = {}


def plan_arms(plan: dict) -> dict[str, Arm]:
    key = json.dumps(plan, sort_keys=True)
    if key not in _ARMS_CACHE:
        _ARMS_CACHE[key] = _plan_arms(plan)
    return _ARMS_CACHE[key]


def _plan_arms(plan: dict) -> dict[str, Arm]:
    """Plan key (a ``reprokit.plan.Job.arm``) -> the member's Arm."""
    return {"dense": Arm("dense", "dense", "dense", dense_keys(plan)),
            "moe": Arm("moe", "moe", FAMILY["moe"], moe_keys(plan)),
            "pkm": Arm("pkm", "pkm", FAMILY["pkm"], memory_arm_keys(plan, "pkm")),
            "ladder1": Arm("pkm-rmsm-half-shq-qkln", "ladder", FAMILY["ladder1"], memory_arm_keys(plan, "ladder1")),
            "ladder2": Arm("pkm-rmsm-half-shq-qkln-ive-tdqkr-mcs-skip", "ladder", FAMILY["ladder2"],
                           memory_arm_keys(plan, "ladder2")),
            "ultramem": Arm("ultramem", "ultramem", "ultramem", memory_arm_keys(plan, "ultramem"))}


def base_config(scale: str) -> Cfg:
    plan = PLANS[scale]
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]))


def job_config(plan: dict, arm: Arm, lr: float, seed: int) -> Cfg:
    """The config of one run: the plan's base config and overrides, then the arm's keys, LR and seed."""
    over = arm.overrides() + [f"train.lr={lr}", f"train.seed={seed}"]
    return load_config(Cfg, PKG_DIR / "configs" / plan["config"], list(plan["train"]) + over)


def tokens_per_param(rec: dict) -> float:
    m = rec["metrics"]
    return m["tokens"] / max(m["params_non_embedding"], 1)


def flattening_pct(rec: dict) -> float | None:
    """Relative improvement (%) of the validation-subset loss over the last quarter of training."""
    val = dict(rec["val_curve"])
    steps = rec["metrics"]["steps"]
    q3 = int(round(0.75 * steps))
    if q3 not in val or steps not in val:
        return None
    return 100.0 * (val[q3] - val[steps]) / val[q3]
