"""The one claim rule of every paper: paired per-seed effects judged against the seed noise.

A claim compares an arm with a reference arm on one metric. Each paper passes the per-seed values of
both arms (same seed = same data order and the same initialisation of the shared weights) and,
where it has one, a noise estimate measured on other arms; this module decides the status:

* ``not testable at this budget``: the baseline missed its quality floor (see :func:`floor_check`);
  an untrained baseline can neither confirm nor refute the paper.
* ``inconclusive``: no paired seeds, or the effect is within the noise.
* ``reproduced`` / ``not reproduced``: the effect is beyond the noise, in the claimed / the opposite
  direction.

The noise threshold is the larger of the supplied noise (e.g. :func:`seed_noise`, the largest
seed-to-seed standard deviation of the arms involved) and the standard deviation of the paired
per-seed effects themselves (when there are two or more seeds). With one seed and no supplied
noise there is no estimate, and the verdict is ``inconclusive``.

Kinds of claim (``expect``):

* ``"better"``: the arm beats the reference (the effect must exceed the threshold);
* ``"not_worse"`` with ``margin`` m >= 0: the arm is at most m worse; it fails only when it is worse
  by more than m + threshold (a tie counts as reproduced);
* ``"not_better"`` with ``margin`` m >= 0: the arm gains at most m (e.g. "n = 1 brings no gain");
  it fails only when it is better by more than m + threshold.

Effects are *improvements*: positive means the arm is better, whatever the metric's direction.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["STATUSES", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "NOT_TESTABLE", "Verdict",
           "paired_improvements", "seed_noise", "judge", "combine", "floor_check"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable at this budget"
STATUSES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE)

Expect = Literal["better", "not_worse", "not_better"]


@dataclass
class Verdict:
    status: str
    effect: float | None            # mean paired improvement (positive: the arm is better)
    improvements: list[float]       # per common seed
    threshold: float | None         # the noise the effect was judged against
    reason: str
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 4) -> str:
        """A short human-readable account, e.g. ``+0.0123 (per seed +0.0101, +0.0145; noise 0.0040)``."""
        if self.effect is None:
            return self.reason
        per = ", ".join(f"{x:+.{digits}f}" for x in self.improvements)
        thr = "none" if self.threshold is None else f"{self.threshold:.{digits}f}"
        return f"improvement {self.effect:+.{digits}f} (per seed {per}; noise {thr}): {self.reason}"


def _finite(x) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def paired_improvements(arm: Mapping, reference: Mapping, lower_is_better: bool = True) -> list[float]:
    """Per common seed (sorted), how much better ``arm`` is than ``reference`` (positive = better).

    ``arm`` and ``reference`` map seed -> metric value; seeds present in only one of them are ignored.
    """
    common = sorted(set(arm) & set(reference), key=lambda s: int(s))
    out = []
    for s in common:
        a, r = arm[s], reference[s]
        if not (_finite(a) and _finite(r)):
            continue
        out.append(float(r - a) if lower_is_better else float(a - r))
    return out


def seed_noise(per_seed: Iterable[Mapping | Sequence]) -> float | None:
    """The largest seed-to-seed standard deviation (ddof=1) among the given arms' per-seed values;
    arms with fewer than two finite values are skipped; None when no arm has two."""
    sds = []
    for vals in per_seed:
        v = [float(x) for x in (vals.values() if isinstance(vals, Mapping) else vals) if _finite(x)]
        if len(v) >= 2:
            sds.append(statistics.stdev(v))
    return max(sds) if sds else None


def judge(improvements: Sequence[float], noise: float | None = None, expect: Expect = "better",
          margin: float = 0.0, floor_ok: bool = True, floor_note: str = "") -> Verdict:
    """The status of one claim from its paired per-seed improvements (see the module docstring)."""
    imp = [float(x) for x in improvements]
    if expect not in ("better", "not_worse", "not_better"):
        raise ValueError(f"expect must be 'better', 'not_worse' or 'not_better', got {expect!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not floor_ok:
        eff = statistics.fmean(imp) if imp else None
        return Verdict(NOT_TESTABLE, eff, imp, noise, floor_note or "the baseline missed its quality floor")
    if not imp:
        return Verdict(INCONCLUSIVE, None, imp, noise, "no paired seeds")
    eff = statistics.fmean(imp)
    own = statistics.stdev(imp) if len(imp) >= 2 else None
    parts = [x for x in (noise, own) if x is not None]
    if not parts:
        return Verdict(INCONCLUSIVE, eff, imp, None, "one seed and no noise estimate")
    thr = max(parts)
    if expect == "better":
        if eff > thr:
            return Verdict(REPRODUCED, eff, imp, thr, "better beyond the noise")
        if eff < -thr:
            return Verdict(NOT_REPRODUCED, eff, imp, thr, "worse beyond the noise")
        return Verdict(INCONCLUSIVE, eff, imp, thr, "within the noise")
    if expect == "not_worse":
        if eff < -(margin + thr):
            return Verdict(NOT_REPRODUCED, eff, imp, thr, f"worse than the margin {margin:g} beyond the noise")
        return Verdict(REPRODUCED, eff, imp, thr, f"not worse than the margin {margin:g} beyond the noise")
    if eff > margin + thr:
        return Verdict(NOT_REPRODUCED, eff, imp, thr, f"gains more than the margin {margin:g} beyond the noise")
    return Verdict(REPRODUCED, eff, imp, thr, f"no gain beyond the margin {margin:g} and the noise")


def combine(statuses: Iterable[str | Verdict]) -> str:
    """A claim made of several comparisons: not testable if any is, not reproduced if any is,
    reproduced if all are, else inconclusive."""
    st = [s.status if isinstance(s, Verdict) else s for s in statuses]
    bad = [s for s in st if s not in STATUSES]
    if bad:
        raise ValueError(f"unknown status {bad[0]!r}; valid: {STATUSES}")
    if not st:
        return INCONCLUSIVE
    if NOT_TESTABLE in st:
        return NOT_TESTABLE
    if NOT_REPRODUCED in st:
        return NOT_REPRODUCED
    if all(s == REPRODUCED for s in st):
        return REPRODUCED
    return INCONCLUSIVE


def floor_check(name: str, value: float | None, floor: float, higher_is_better: bool = True,
                strict: bool = False) -> dict:
    """A baseline's quality floor as a results.json record: ``{"metric", "value", "floor", "direction", "ok"}``.
    ``strict``: the value must be strictly beyond the floor ("under 1.70" rather than "at most 1.70")."""
    if higher_is_better:
        ok = _finite(value) and (value > floor if strict else value >= floor)
        direction = ">" if strict else ">="
    else:
        ok = _finite(value) and (value < floor if strict else value <= floor)
        direction = "<" if strict else "<="
    return {"metric": name, "value": value, "floor": floor, "direction": direction, "ok": bool(ok)}
