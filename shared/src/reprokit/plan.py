"""Judgeable small-reproduction plans: LR grids that bracket the optimum, extra seeds for the main arms,
secondary arms at the LR of their family -- as a pure function of the finished records, plus the loop that
runs the missing jobs (in-process or in spawned worker processes) and appends each finished record to a
``runs.jsonl`` at once, so an interrupted reproduction resumes from its finished runs.

The protocol (root README, "A judgeable small reproduction"):

1. every *grid arm* of a :class:`Group` is trained at each LR of the group's ``lr_grid`` with seed 0;
2. while the best LR of an arm (by the record key ``select_by``, on a validation split -- never the split the
   claims are judged on) lies at an edge of the LRs tried, one more LR beyond that edge (x2 or /2) is tried,
   at most ``max_extensions`` times; the arm's LR is then the best of its seed-0 runs. With ``require =
   (key, minimum)`` only runs whose validation ``key`` reaches ``minimum`` compete on ``select_by`` (a validity
   floor: e.g. a translator must reach its target domain before its distance to the ground truth counts); the
   runs below it rank after them, by ``key``, so an arm none of whose runs is valid moves towards validity;
3. the ``seed_arms`` are re-run with every further seed of ``seeds`` at their chosen LR;
4. ``secondary`` arms (name -> grid arm) run at the LR chosen for that grid arm: with every seed of ``seeds``
   when they are also ``seed_arms`` (arms of the main claims without a grid of their own), with the seeds
   ``secondary_seeds[arm]`` when given (e.g. a sweep judged at two seeds), else once, seed 0.

A run whose training diverges (``run_fn`` raises ``FloatingPointError``, e.g. a non-finite loss at an LR too high)
is recorded as *diverged* (:func:`diverged_record`: no metrics, ``"diverged": true``, the error) instead of
stopping the reproduction: it ranks below every trained run of its arm when an LR is chosen (so a grid whose top
LR diverges still brackets its optimum), a resume never retries it, and :func:`trained` drops it from the
records a report puts in its tables.

:func:`planned_jobs` only looks at the records of the plan's own runs, so feeding it its own results never adds
a run outside the plan, and resuming never changes the set of runs.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["Job", "Group", "run_name", "lr_decision", "bracketed", "chosen_lrs", "planned_jobs",
           "selection_rule", "run_jobs", "run_plan_timed", "run_planner_timed", "plan_runs_done",
           "one_torch_thread", "diverged_record", "is_diverged", "trained"]


def run_name(group: str, arm: str, lr: float, seed: int, tag: str = "") -> str:
    """Every key that varies between runs: ``race_lr0.002_s1``; with a group and a budget tag:
    ``lm-dhcx4_st4000_lr0.004_s1``."""
    return f"{group + '-' if group else ''}{arm}{'_' + tag if tag else ''}_lr{lr:g}_s{seed}"


@dataclass(frozen=True)
class Job:
    group: str
    arm: str
    lr: float
    seed: int
    tag: str = ""

    @property
    def name(self) -> str:
        return run_name(self.group, self.arm, self.lr, self.seed, self.tag)


@dataclass(frozen=True)
class Group:
    """One family of runs sharing a base config (e.g. the LM or the ViT runs of a paper).

    ``select_by``: the record key the LR is chosen on (a validation metric); ``maximize`` for accuracies.
    ``tag``: a budget tag carried by the run names, so runs of another budget can never be taken for these.
    ``secondary_seeds``: secondary arm -> its seeds, for secondary arms that are not ``seed_arms`` but need
    more than seed 0.
    ``require``: ``(record key, minimum)``, a validity floor on a validation metric: a run below it ranks after
    every run that reaches it (see :meth:`best`).
    """

    name: str
    lr_grid: tuple[float, ...]
    grid_arms: tuple[str, ...]
    select_by: str
    seeds: tuple[int, ...] = (0,)
    seed_arms: tuple[str, ...] = ()
    secondary: dict[str, str] = field(default_factory=dict)
    max_extensions: int = 1
    maximize: bool = False
    tag: str = ""
    secondary_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    require: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        for arm, src in self.secondary.items():
            if src not in self.grid_arms:
                raise ValueError(f"group {self.name!r}: secondary arm {arm!r} takes its LR from {src!r}, which "
                                 f"is not a grid arm; grid arms: {', '.join(self.grid_arms)}")
        for arm in self.secondary_seeds:
            if arm not in self.secondary:
                raise ValueError(f"group {self.name!r}: secondary_seeds names {arm!r}, which is not a secondary "
                                 f"arm; secondary arms: {', '.join(self.secondary) or '(none)'}")
            if arm in self.seed_arms:
                raise ValueError(f"group {self.name!r}: {arm!r} is a seed arm (it runs every seed of `seeds`); "
                                 "drop it from secondary_seeds")

    @classmethod
    def from_summary(cls, summary: dict, name: str = "") -> Group:
        """The group a :meth:`summary` (as stored in a results.json's protocol) was made by, so a committed result
        can be checked against its own plan after the member's current plan has moved on."""
        req = summary.get("require")
        return cls(name=name, lr_grid=tuple(summary["lr_grid"]), grid_arms=tuple(summary["grid_arms"]),
                   select_by=summary["select_by"], seeds=tuple(summary["seeds"]),
                   seed_arms=tuple(summary["seed_arms"]), secondary=dict(summary["secondary"]),
                   max_extensions=int(summary["max_extensions"]), maximize=bool(summary.get("maximize", False)),
                   tag=summary.get("tag", ""),
                   secondary_seeds={a: tuple(v) for a, v in summary.get("secondary_seeds", {}).items()},
                   require=(req["key"], float(req["min"])) if req else None)

    def check_budget(self, steps: int, where: str, prefix: str = "st") -> None:
        """Refuse a plan whose budget tag does not name the config's step count (``st2000`` for 2000 steps):
        otherwise raising the steps alone would silently reuse the finished runs of the old budget. A group
        without a tag is not checked."""
        if self.tag and self.tag != f"{prefix}{steps}":
            raise ConfigError(f"plan {self.name or 'group'!r} is tagged {self.tag!r} but {where} has "
                              f"train.steps={steps}: change the tag with the steps")

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        """The seeds a secondary arm runs with."""
        if arm in self.seed_arms:
            return tuple(self.seeds)
        return tuple(self.secondary_seeds.get(arm, (0,)))

    def job(self, arm: str, lr: float, seed: int = 0) -> Job:
        return Job(self.name, arm, lr, seed, self.tag)

    def summary(self, records: Iterable[dict]) -> dict:
        """The plan as a results.json records it: grid, seeds, arms, the chosen LRs, bracketing, the runs."""
        records = list(records)
        return {"lr_grid": list(self.lr_grid), "grid_arms": list(self.grid_arms), "seeds": list(self.seeds),
                "seed_arms": list(self.seed_arms), "secondary": dict(self.secondary),
                "secondary_seeds": {a: list(v) for a, v in self.secondary_seeds.items()},
                "max_extensions": self.max_extensions, "tag": self.tag, "select_by": self.select_by,
                **({"require": {"key": self.require[0], "min": self.require[1]}} if self.require else {}),
                **({"maximize": True} if self.maximize else {}),
                "chosen_lrs": chosen_lrs(self, records),
                "bracketed": {a: bracketed(self, a, records) for a in self.grid_arms},
                "runs": [j.name for j in planned_jobs([self], records)]}

    def best(self, records: list[dict]) -> float:
        """The LR of the best record (ties: the smaller LR); diverged runs rank below every trained one, and
        among themselves by LR (all diverged: the smallest LR, so the grid extends downwards). With ``require``,
        the runs below its minimum rank after those reaching it, among themselves by the required key (the
        closest to validity first)."""
        if not records:
            raise ValueError(f"group {self.name!r}: no records to choose an LR from")
        sign = -1.0 if self.maximize else 1.0

        def value(r: dict, k: str) -> float:
            v = r.get(k)
            if v is None:
                raise KeyError(f"group {self.name!r}: record {r.get('run')!r} has no {k!r} (the key this group "
                               "chooses its LR by)")
            return float(v)

        def key(r: dict) -> tuple:
            if is_diverged(r):
                return (2, 0.0, r["lr"])
            if self.require is not None:
                need = value(r, self.require[0])
                if not (math.isfinite(need) and need >= self.require[1]):
                    return (1, -need if math.isfinite(need) else math.inf, r["lr"])
            v = value(r, self.select_by)
            return (0, sign * v, r["lr"]) if math.isfinite(v) else (2, 0.0, r["lr"])
        return min(records, key=key)["lr"]


def is_diverged(record: dict) -> bool:
    """Whether a record is a diverged run (see :func:`diverged_record`)."""
    return bool(record.get("diverged"))


def trained(records: Iterable[dict]) -> list[dict]:
    """The records of runs that trained to the end (diverged runs dropped): what a report's tables show."""
    return [r for r in records if not is_diverged(r)]


def diverged_record(job: Job, error: BaseException | str) -> dict:
    """The runs.jsonl record of a run whose training diverged: its keys, no metrics."""
    return {"run": job.name, "group": job.group, "arm": job.arm, "lr": job.lr, "seed": job.seed, "tag": job.tag,
            "diverged": True, "error": str(error)}


def _by_name(records: Iterable[dict]) -> dict[str, dict]:
    return {r["run"]: r for r in records}


def lr_decision(g: Group, arm: str, done: dict[str, dict]) -> tuple[bool, float | None, list[Job]]:
    """``(decided, lr, seed-0 jobs so far)`` of a grid arm, from its own seed-0 records only."""
    lrs = list(g.lr_grid)
    while True:
        jobs = [g.job(arm, lr) for lr in lrs]
        recs = [done.get(j.name) for j in jobs]
        if any(r is None for r in recs):
            return False, None, jobs
        best = g.best(recs)  # type: ignore[arg-type]
        if len(lrs) < 2 or min(lrs) < best < max(lrs) or len(lrs) - len(g.lr_grid) >= g.max_extensions:
            return True, best, jobs
        lrs.append(best * 2 if best == max(lrs) else best / 2)


def bracketed(g: Group, arm: str, records: Iterable[dict]) -> bool | None:
    """Whether a grid arm's chosen LR lies strictly inside the LRs it tried (None: not decided / no grid)."""
    if arm not in g.grid_arms:
        return None
    decided, best, jobs = lr_decision(g, arm, _by_name(records))
    if not decided:
        return None
    lrs = [j.lr for j in jobs]
    return len(lrs) >= 3 and min(lrs) < best < max(lrs)


def chosen_lrs(g: Group, records: Iterable[dict]) -> dict[str, float]:
    """arm -> decided LR, for the grid arms already decided and the secondary arms of those."""
    done = _by_name(records)
    out = {}
    for arm in g.grid_arms:
        decided, lr, _ = lr_decision(g, arm, done)
        if decided:
            out[arm] = lr
    for arm, src in g.secondary.items():
        if src in out:
            out[arm] = out[src]
    return out


def lr_grid_rows(records: Iterable[dict], arms: Sequence[str], lr_grid: Sequence[float], chosen: dict[str, float],
                 cell: Callable[[dict], str | None]) -> list[list[str]]:
    """The rows of a report's LR-grid table: one per LR that any of ``arms`` tried at seed 0 (ascending; an LR
    outside ``lr_grid`` is marked "(extension)"), then one cell per arm: ``"diverged"``, ``"—"`` (not run, or
    ``cell`` gave None) or ``cell(record)``, with " ◀ chosen" at the arm's ``chosen`` LR."""
    seed0 = {(r["arm"], float(r["lr"])): r for r in records if int(r["seed"]) == 0 and r["arm"] in arms}
    rows = []
    for lr in sorted({lr for _, lr in seed0}):
        row = [f"{lr:g}" + ("" if any(math.isclose(lr, g) for g in lr_grid) else " (extension)")]
        for a in arms:
            r = seed0.get((a, lr))
            text = None if r is None else "diverged" if is_diverged(r) else cell(r)
            if text is None:
                row.append("—")
                continue
            mark = a in chosen and math.isclose(lr, chosen[a]) and not is_diverged(r)
            row.append(text + (" ◀ chosen" if mark else ""))
        rows.append(row)
    return rows


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def metric_cell(key: str, note: tuple[str, str] | None = None, fmt: str = ".4f",
                note_fmt: str = ".3f") -> Callable[[dict], str | None]:
    """A ``lr_grid_rows`` cell: ``record[key]`` formatted (None -- shown as "—" -- when missing or not finite),
    followed by " (label value)" for ``note = (record key, label)`` when that value is finite."""

    def cell(r: dict) -> str | None:
        if not _finite(r.get(key)):
            return None
        extra = f" ({note[1]} {r[note[0]]:{note_fmt}})" if note and _finite(r.get(note[0])) else ""
        return f"{r[key]:{fmt}}{extra}"

    return cell


def bracketed_note(arms: Sequence[str], flags: dict[str, bool | None]) -> str:
    """Caption text: per arm whether its chosen LR is strictly inside the LRs it tried (``bracketed``)."""
    return "bracketed (best LR strictly inside the LRs tried): " + ", ".join(
        f"{a} {'yes' if flags.get(a) else 'no' if flags.get(a) is False else 'n/a'}" for a in arms)


def selection_rule(plan: dict) -> str:
    """How a plan chose each grid arm's LR, in words, from its summary (``Group.summary()``, as stored in
    results.json): the selection key and, with ``require``, the validity floor it applies first."""
    rule = f"the chosen LR has the {'highest' if plan.get('maximize') else 'lowest'} {plan['select_by']}"
    req = plan.get("require")
    if req:
        rule += (f" among the LRs whose {req['key']} reaches {req['min']:g} (below it: ranked after, by "
                 f"{req['key']})")
    return rule


def planned_jobs(groups: Iterable[Group], records: Iterable[dict]) -> list[Job]:
    """Every run the finished ``records`` determine so far: base grids, extensions, further seeds, secondary
    arms (in that order within a group; seed arms first among the grid arms, so an interrupted reproduction
    already holds the key comparisons)."""
    records = list(records)
    done = _by_name(records)
    out: dict[str, Job] = {}
    for g in groups:
        order = [a for a in g.grid_arms if a in g.seed_arms] + [a for a in g.grid_arms if a not in g.seed_arms]
        for arm in order:
            for j in lr_decision(g, arm, done)[2]:
                out.setdefault(j.name, j)
        lrs = chosen_lrs(g, records)
        for arm in order:
            if arm in g.seed_arms and arm in lrs:
                for s in g.seeds:
                    j = g.job(arm, lrs[arm], s)
                    out.setdefault(j.name, j)
        sec = sorted(g.secondary, key=lambda a: a not in g.seed_arms)   # main-claim arms first
        for arm in sec:
            if arm in lrs:
                for s in g.seeds_of(arm):
                    j = g.job(arm, lrs[arm], s)
                    out.setdefault(j.name, j)
    return list(out.values())


def run_jobs(groups: list[Group], log: str | Path, run_fn: Callable[[Job], dict], workers: int = 1,
             initializer: Callable[[], None] | None = None,
             on_record: Callable[[dict], None] | None = None,
             diverge_on: tuple[type[BaseException], ...] = (FloatingPointError,),
             planner: Callable[[list[dict]], list] | None = None) -> list[dict]:
    """Run every missing job of the plan, appending each finished record (``run_fn(job)``: a dict with at least
    ``run`` = the job's name and the ``select_by`` key of its group) to ``log`` as soon as it finishes; returns
    the records of the planned runs. ``planner`` (optional; called in this process only) replaces
    :func:`planned_jobs` of ``groups`` for a member with its own plan logic: records -> the planned jobs (objects
    with a ``name``). The plan is re-derived after every finished run, so a job that a result
    calls for (an LR extension, the further seeds) starts as soon as a worker is free. ``run_fn`` (and
    ``initializer``) must be picklable (module-level) when ``workers > 1``; without an ``initializer`` each
    worker process runs torch on one thread (``workers`` processes share the cores). A job raising one of
    ``diverge_on`` is recorded as diverged (:func:`diverged_record`) and the plan goes on; any other error stops
    new submissions, lets the running jobs finish (and be recorded), then re-raises. A stop (KeyboardInterrupt:
    Ctrl-C in this process or in a worker) ends the workers at once and re-raises; the finished runs are kept in
    ``log`` and the stopped ones resume from their checkpoints next time."""
    import time

    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    records = _read(log)
    done = _by_name(records)
    t0 = time.time()
    plan_of = planner if planner is not None else (lambda recs: planned_jobs(groups, recs))

    def finish(rec: dict) -> None:
        with open(log, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        done[rec["run"]] = rec
        records.append(rec)
        planned = plan_of(records)
        what = f"DIVERGED ({rec.get('error')})" if is_diverged(rec) else "finished"
        print(f"[reproduce] {rec['run']} {what}; {sum(j.name in done for j in planned)}"
              f"/{len(planned)} planned runs done ({(time.time() - t0) / 60:.1f} min)", flush=True)
        if on_record is not None:
            on_record(rec)

    def todo(running: set[str]) -> list[Job]:
        return [j for j in plan_of(records) if j.name not in done and j.name not in running]

    if workers <= 1:
        while jobs := todo(set()):
            try:
                rec = run_fn(jobs[0])
            except diverge_on as e:
                rec = diverged_record(jobs[0], e)
            finish(rec)
    else:
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=initializer or one_torch_thread)
        stopped = False
        try:
            running: dict = {}
            error: BaseException | None = None
            while True:
                if error is None:  # after a failure: no new job, but the running ones still finish and count
                    for j in todo({j.name for j in running.values()})[: workers - len(running)]:
                        running[ex.submit(run_fn, j)] = j
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in finished:
                    job = running.pop(f)
                    name = job.name
                    try:
                        rec = f.result()
                    except diverge_on as e:
                        rec = diverged_record(job, e)
                    except KeyboardInterrupt:  # a worker was stopped (Ctrl-C reaches the whole process group)
                        print(f"[reproduce] {name} stopped", flush=True)
                        raise
                    except BaseException as e:  # noqa: BLE001 -- re-raised below
                        print(f"[reproduce] {name} failed: {e!r}", flush=True)
                        error = error or e
                        continue
                    finish(rec)
            if error is not None:
                raise error
        except KeyboardInterrupt:
            # Stop now: the runs in flight are ended (each resumes from its last checkpoint when the plan is
            # run again), none is waited for, nothing queued starts.
            stopped = True
            _end_workers(ex)
            raise
        finally:
            ex.shutdown(wait=not stopped, cancel_futures=stopped)
    planned = {j.name for j in plan_of(records)}
    return [r for r in records if r["run"] in planned]


def _end_workers(ex: ProcessPoolExecutor) -> None:
    """Terminate the worker processes of ``ex`` (a stopped plan does not wait for its runs in flight)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


def one_torch_thread() -> None:
    """Worker-process initializer: torch on one thread."""
    import torch

    torch.set_num_threads(1)


def _read(log: Path) -> list[dict]:
    from .runs import read_jsonl

    return read_jsonl(log) if log.is_file() else []


def plan_runs_done(group: Group, log: str | Path) -> int:
    """How many of ``group``'s planned runs ``log`` (a runs.jsonl) already holds."""
    return _planned_runs_done(lambda recs: planned_jobs([group], recs), log)


def _planned_runs_done(planner: Callable[[list[dict]], list], log: str | Path) -> int:
    recs = _read(Path(log))
    return len({j.name for j in planner(recs)} & {r["run"] for r in recs})


@contextlib.contextmanager
def _sigterm_stops():
    """While inside, SIGTERM (``kill PID``, ``timeout``, a batch scheduler's stop) stops a plan as Ctrl-C does --
    KeyboardInterrupt, so the invocation's wall time is recorded -- instead of killing it silently. Only in the
    main thread (signal handlers cannot be set elsewhere); the former handler is restored on the way out."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_plan_timed(group: Group, log: str | Path, run_fn: Callable[[Job], dict], *, out: str | Path,
                   t_start: float, workers: int = 1, keep: bool = True) -> tuple[list[dict], float]:
    """:func:`run_jobs` for one group, recording this invocation in ``out/wall_time.json``
    (``reprokit.results.record_wall_time``, from ``t_start``, a ``time.time()``), also when it is stopped
    (Ctrl-C or SIGTERM) or fails, marked ``interrupted``, before re-raising. Returns ``(records, the plan's wall time
    summed over its invocations)``. ``keep=False`` (smoke) starts wall_time.json afresh."""
    return run_planner_timed(lambda recs: planned_jobs([group], recs), group.tag, log, run_fn, out=out,
                             t_start=t_start, workers=workers, keep=keep)


def run_planner_timed(planner: Callable[[list[dict]], list], tag: str, log: str | Path,
                      run_fn: Callable[[Any], dict], *, out: str | Path, t_start: float, workers: int = 1,
                      keep: bool = True, **run_kw: Any) -> tuple[list[dict], float]:
    """:func:`run_plan_timed` for a member with its own plan logic: ``planner`` (records -> planned jobs, see
    :func:`run_jobs`) and the budget ``tag`` its wall time is summed under; ``run_kw`` go to :func:`run_jobs`."""
    import time

    from .results import record_wall_time

    from_scratch = _planned_runs_done(planner, log) == 0
    try:
        with _sigterm_stops():
            records = run_jobs([], log, run_fn, workers=workers, planner=planner, **run_kw)
    except BaseException:
        record_wall_time(out, time.time() - t_start, tag=tag, runs_recorded=_planned_runs_done(planner, log),
                         from_scratch=from_scratch, keep=keep, interrupted=True)
        raise
    return records, record_wall_time(out, time.time() - t_start, tag=tag, runs_recorded=len(records),
                                     from_scratch=from_scratch, keep=keep)
