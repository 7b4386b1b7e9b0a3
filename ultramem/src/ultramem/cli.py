"""Console script ``ultramem train|evaluate|reproduce|bench`` (the only module that builds a parser)."""

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

    over = list(args.overrides or [])
    if args.arm:
        from .plan import PLANS, plan_arms

        over = plan_arms(PLANS["small"])[args.arm].overrides() + over     # the arm's keys, then the user's
    cfg = load_config(Cfg, args.config, over)
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


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir, workers=args.workers))
    return 0


def _bench_args(p) -> None:
    p.add_argument("--latency", action="store_true",
                   help="B2: decode latency vs batch of dense / MoE / memory layers at d = 512 (~25M sparse "
                        "parameters) with torch.utils.benchmark medians and the analytic bytes touched")
    p.add_argument("--batches", type=str, default="1,4,16,64,256,1024", help="--latency: batch sizes")
    p.add_argument("--min-runs", type=int, default=30, help="--latency: timed runs per point (median)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--peer", action="store_true",
                   help="instead: our memory layer (PKM arm) against lucidrains' product-key-memory at the same "
                        "configuration, forward + backward (needs the bench group: uv sync --all-packages --group "
                        "bench); writes results/peer.json")
    p.add_argument("--repeats", type=int, default=15, help="--peer: timed rounds")
    p.add_argument("--calibrate", action="store_true",
                   help="instead: seconds per step of each small-plan arm on Brown, written to runs/calibration.json")
    p.add_argument("--steps", type=int, default=20, help="--calibrate: timed steps per arm")


def cmd_bench(args) -> int:
    import sys

    from reprokit.bench import write_bench

    from .bench import PKG_DIR, calibrate, latency_bench, peer_bench, plot_latency

    command = "ultramem bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "ultramem bench"
    if args.calibrate:
        base = Path(args.out_dir) if args.out_dir else PKG_DIR / "runs"
        res = calibrate(steps=args.steps, threads=args.threads)
        path = base / "calibration.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {path}")
        return 0
    base = Path(args.out_dir) if args.out_dir else PKG_DIR / "results"      # the committed benchmark files
    if args.peer:
        res = peer_bench(repeats=args.repeats, threads=args.threads)
        path = write_bench(base / "peer.json", res["cases"], command=command, extra=res["extra"],
                           packages=("product-key-memory",))
    else:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
        res = latency_bench(batches=batches, min_runs=args.min_runs, threads=args.threads)
        path = write_bench(base / "latency.json", res["cases"], command=command, extra=res["extra"])
        print(f"wrote {plot_latency(res['cases'], res['extra'], base / 'latency.png')}")
        print(json.dumps(res["extra"]["claim"]))
    print(f"wrote {path}")
    return 0


def _train_args(p) -> None:
    from .plan import ARM_KEYS

    p.add_argument("--arm", default=None, choices=ARM_KEYS,
                   help="apply the keys of one arm of the small plan (plan.PLANS['small']: sizes, switches, "
                        "compute-matched FFN width) before the overrides; use with configs/small.yaml")


main = build_cli(prog="ultramem", commands={
    "train": Command(cmd_train, args=_train_args),
    "evaluate": Command(cmd_evaluate, run=True, out_dir=False),
    "reproduce": Command(cmd_reproduce, config=False),
    "bench": Command(cmd_bench, config=False, args=_bench_args),
}, description="Ultra-Sparse Memory Network (UltraMem, arXiv 2411.12364) with PKM, MoE and dense baselines")

if __name__ == "__main__":
    main()
