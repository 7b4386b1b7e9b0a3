"""``ugan train|evaluate|sample|reproduce|bench``: every command handler.

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
    raise ConfigError("give the trained run folder: --run DIR (the --out-dir of `ugan train`)")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, evaluate_with_validation
    from .train import load_run

    run = load_run(_run_dir(args), list(args.overrides))
    # ProcFace: the test metrics and the LR-selection metrics, as reproduce records them; user data: evaluate_real
    metrics = evaluate_with_validation if run.cfg.data.source == "procface" else evaluate
    res = metrics(run, run.cfg, grid_path=run.path / "grid.png")
    res["step"] = run.step
    (run.path / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


def cmd_sample(args) -> int:
    from .evaluate import save_grid
    from .train import load_run

    run = load_run(_run_dir(args), list(args.overrides))
    out = run.path / "samples_grid.png"
    save_grid(run, run.cfg, out)
    print(f"wrote {out} (rows: source, then its counterfactual renders; columns: source, then each target domain)")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce

    print(run_reproduce(args.scale, args.out_dir, workers=args.workers))
    return 0


def cmd_bench(args) -> int:
    from .bench import profile_step

    print(json.dumps(profile_step(args.config_file, args.steps, args.threads, args.out), indent=1))
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-file", default=None, help="config to time (default configs/small.yaml)")
    p.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="JSON output (default runs/bench.json)")


main = build_cli(prog="ugan", description="UGAN (arXiv 1907.11418) on a StarGAN core: train, evaluate, reproduce.",
                 commands={
                     "train": Command(cmd_train),
                     "evaluate": Command(cmd_evaluate, out_dir=False, run=True,
                                         help="evaluate a trained run (--run DIR; its own config.yaml); "
                                              "writes DIR/eval.json and DIR/grid.png"),
                     "sample": Command(cmd_sample, out_dir=False, run=True,
                                       help="write a translation grid of a trained run into DIR/samples_grid.png"),
                     "reproduce": Command(cmd_reproduce, config=False),
                     "bench": Command(cmd_bench, config=False, out_dir=False, args=_bench_args,
                                      help="time and profile training steps on the CPU"),
                 })

if __name__ == "__main__":
    main()
