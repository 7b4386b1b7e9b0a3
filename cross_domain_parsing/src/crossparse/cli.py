"""``crossparse train|evaluate|reproduce|bench``: every command handler.

The only module of the member that builds a parser (``reprokit.papercli.build_cli``). Expected
failures raise ``reprokit.errors.UserError`` subclasses: exit 2 with one line naming the culprit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reprokit.config import ConfigError, load_config
from reprokit.papercli import Command, build_cli

from .config import Cfg


def cmd_train(args) -> int:
    from reprokit import dist as rdist

    from .train import train

    cfg = load_config(Cfg, args.config, list(args.overrides))
    final = train(cfg, args.out_dir or cfg.out_dir)
    rdist.print0(json.dumps(final))
    rdist.cleanup()
    return 0


def _run_dir(args) -> Path:
    if args.run:
        return Path(args.run)
    raise ConfigError("give the trained run folder: --run DIR (the --out-dir of `crossparse train`)")


def cmd_evaluate(args) -> int:
    from .data import load_data
    from .evaluate import evaluate_all, save_overlays
    from .train import load_run

    run = load_run(_run_dir(args), list(args.overrides))
    data = load_data(run.cfg)
    res = {"step": run.step, **evaluate_all(run.parser, data, run.cfg, ("val", "test"))}
    res["overlays"] = save_overlays(run.parser, data, run.cfg, run.path)
    (run.path / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v["miou"] if isinstance(v, dict) else v for k, v in res.items()}, indent=1))
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir, workers=args.workers))
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    print(json.dumps(run_bench(args.what, args.steps, args.threads, args.out), indent=1))
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--what", choices=["loss", "step", "all"], default="all",
                   help="loss: fused-vs-unfused upsample+CE memory/time; step: training-step time of configs/small.yaml")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per arm (step bench)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="JSON output (default results/bench.json for loss, runs/ for step)")


main = build_cli(prog="crossparse",
                 description="Cross-domain human parsing via adversarial feature and label adaptation "
                             "(arXiv 1801.01260) on ProcParse: train, evaluate, reproduce.",
                 commands={
                     "train": Command(cmd_train),
                     "evaluate": Command(cmd_evaluate, out_dir=False, run=True,
                                         help="evaluate a trained run (--run DIR; its own config.yaml); "
                                              "writes DIR/eval.json and DIR/overlay_<target>.png"),
                     "reproduce": Command(cmd_reproduce, config=False),
                     "bench": Command(cmd_bench, config=False, out_dir=False, args=_bench_args,
                                      help="CPU timings: fused vs unfused loss, training steps"),
                 })

if __name__ == "__main__":
    main()
