"""Console script ``overtok train|evaluate|sample|reproduce|bench`` (the only module that builds a parser)."""

from __future__ import annotations

import json
from pathlib import Path

from reprokit.config import load_config
from reprokit.papercli import Command, build_cli

from .config import Cfg


def _print_metrics(m: dict) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in m.items()}))


def cmd_train(args) -> int:
    from reprokit import dist as rdist

    from .train import train

    cfg = load_config(Cfg, args.config, list(args.overrides or []))
    m = train(cfg, args.out_dir or cfg.out_dir)
    if rdist.is_main():
        _print_metrics(m)
    rdist.cleanup()
    return 0


def _run_dir(args) -> Path:
    if args.run:
        return Path(args.run)
    return Path(load_config(Cfg, args.config, list(args.overrides or [])).out_dir)


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_lm
    from .train import load_run

    lr = load_run(_run_dir(args), list(args.overrides or []))
    cfg = lr.cfg
    res = {"step": lr.step}
    for split in (s for s in cfg.eval.splits if s in lr.data.tokens):
        m = evaluate_lm(lr.model, lr.data, split, cfg.train.seq_len, cfg.eval.batch_size, cfg.eval.max_tokens)
        res.update({f"{split}_{k}": v for k, v in m.items()})
    (lr.path / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    _print_metrics(res)
    return 0


def cmd_sample(args) -> int:
    from .sample import sample_continuations
    from .train import load_run

    lr = load_run(_run_dir(args), list(args.overrides or []))
    recs = sample_continuations(lr.model, lr.data, seed=lr.cfg.eval.seed)
    path = lr.path / "samples.json"
    path.write_text(json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    for r in recs:
        print(repr(r.get("prompt", r["prompt_ids"])), "->", repr(r.get("continuation", r["continuation_ids"])))
    print(f"wrote {path}")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir, workers=args.workers))
    return 0


def _bench_args(p) -> None:
    p.add_argument("--reduced", action="store_true", help="smaller model / fewer repeats (a minute or two on a CPU)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per candidate (0: the preset's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-readme", action="store_true", help="do not re-render the README's bench block")
    p.add_argument("--calibrate", action="store_true",
                   help="instead: seconds per step of each kind of small-plan run on Brown (the small-run sizing), "
                        "written to runs/calibration.json")
    p.add_argument("--steps", type=int, default=40, help="--calibrate: timed steps per run kind")


def cmd_bench(args) -> int:
    from .bench import PKG_DIR, calibrate, run_bench

    if args.calibrate:
        res = calibrate(steps=args.steps, threads=args.threads)
        path = Path(args.out_dir or PKG_DIR / "runs") / "calibration.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {path}")
        return 0

    path = run_bench(out=args.out_dir, reduced=args.reduced, repeats=args.repeats, threads=args.threads,
                     render=not args.no_readme)
    print(f"wrote {path}")
    return 0


main = build_cli(prog="overtok", commands={
    "train": Command(cmd_train),
    "evaluate": Command(cmd_evaluate, run=True, out_dir=False),
    "sample": Command(cmd_sample, run=True, out_dir=False),
    "reproduce": Command(cmd_reproduce, config=False),
    "bench": Command(cmd_bench, config=False, args=_bench_args),
}, description="Over-Tokenized Transformers (arXiv 2501.16975): Over-Encoding, MTP-DS Over-Decoding and OT")

if __name__ == "__main__":
    main()
