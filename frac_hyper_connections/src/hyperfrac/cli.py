"""Console script ``hyperfrac train|evaluate|sample|analyze|reproduce|bench``: every command handler, and the only
place a parser is built (``reprokit.papercli``). Expected failures (``reprokit.errors.UserError``) exit with
status 2 and one line naming the culprit; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reprokit.config import load_config
from reprokit.dist import cleanup, is_main
from reprokit.errors import UserError
from reprokit.papercli import Command, build_cli

from .config import Cfg

PKG_DIR = Path(__file__).resolve().parents[2]


def _fmt(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def cmd_train(args) -> int:
    from .train import train
    cfg = load_config(Cfg, args.config, overrides=args.overrides)
    m = train(cfg, args.out_dir or cfg.out_dir)
    if is_main():
        print(_fmt(m))
    cleanup()   # under torchrun: every rank done, then the process group destroyed (never left to exit)
    return 0


def _load(args):
    """The run of ``--run DIR`` (or of the config's out_dir) with the overrides applied to its own config."""
    from .train import load_run
    if args.run and args.config:
        raise UserError("pass either --run DIR (its own config.yaml is reloaded) or --config FILE (its out_dir is "
                        "the run), not both")
    if args.run:
        run = args.run
    elif args.config:
        run = load_config(Cfg, args.config, overrides=args.overrides).out_dir
    else:
        raise UserError("no run given: pass --run DIR, a folder written by `hyperfrac train`")
    return load_run(run, overrides=args.overrides, device="cuda" if torch.cuda.is_available() else "cpu")


def cmd_evaluate(args) -> int:
    """Every metric of the val and test splits into ``DIR/eval.json``."""
    from .evaluate import evaluate_splits
    run = _load(args)
    m = evaluate_splits(run.model, run.cfg, run.data)
    if is_main():
        (run.path / "eval.json").write_text(json.dumps({"step": run.step, "overrides": list(args.overrides),
                                                        **m}, indent=1) + "\n")
        print(_fmt(m))
        print(f"wrote {run.path / 'eval.json'}")
    return 0


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")


def cmd_sample(args) -> int:
    """Text continuing the first validation tokens into ``DIR/sample.txt``."""
    from .sample import sample_text
    run = _load(args)
    text = sample_text(run.model, run.cfg, run.data, n_new=args.tokens, temperature=args.temperature)
    (run.path / "sample.txt").write_text(text)
    print(text)
    return 0


def cmd_analyze(args) -> int:
    """The analysis figures (connection matrix, adjacent cosine, stream / gradient norms) into the run folder."""
    from reprokit.runs import read_jsonl

    from .analysis import write_analysis
    from .data import analysis_inputs
    run = _load(args)
    x = analysis_inputs(run.cfg, run.data).to(next(run.model.parameters()).device)
    metrics = run.path / "metrics.jsonl"
    write_analysis(run.model, x, run.path, read_jsonl(metrics) if metrics.is_file() else [])
    print(f"wrote {run.path}/analysis.json and PNGs")
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import run_reproduce
    p = run_reproduce(args.scale, args.out_dir, workers=args.workers)
    print(f"wrote {p}")
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="Triton-vs-torch parity and timing on CUDA")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 15 CPU, 30 GPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--out", default=None, help="output JSON (default results/bench.json, or results/bench_gpu.json "
                                               "with --gpu; the README is re-rendered only for the default)")
    p.add_argument("--no-render", action="store_true", help="do not re-render the README")


def cmd_bench(args) -> int:
    from . import bench
    if args.gpu:
        out = bench.run_gpu(args.repeats or 30, out=args.out)
    else:
        out = bench.run_cpu(args.repeats or 15, args.threads, not args.no_compile, out=args.out)
    if args.out is None and not args.no_render:
        from reprokit.results import render_readme
        render_readme(PKG_DIR, write=True)
    print(f"wrote {out}")
    return 0


main = build_cli(
    prog="hyperfrac",
    commands={
        "train": Command(cmd_train),
        "evaluate": Command(cmd_evaluate, out_dir=False, run=True),
        "sample": Command(cmd_sample, out_dir=False, run=True, args=_sample_args),
        "analyze": Command(cmd_analyze, out_dir=False, run=True,
                           help="write the analysis figures of a trained run (--run DIR) into its folder"),
        "reproduce": Command(cmd_reproduce, config=False),
        "bench": Command(cmd_bench, config=False, out_dir=False, args=_bench_args),
    },
    description="Hyper-Connections (arXiv 2409.19606) and Frac-Connections (arXiv 2503.14125)")

if __name__ == "__main__":
    main()
