"""Console script: ``hyperfrac train|evaluate|sample|reproduce|bench|analyze``."""

from __future__ import annotations

from reprokit.papercli import build_cli


def _train(args):
    from .train import cmd_train
    return cmd_train(args)


def _evaluate(args):
    from .evaluate import cmd_evaluate
    return cmd_evaluate(args)


def _sample(args):
    from .sample import cmd_sample
    return cmd_sample(args)


def _reproduce(args):
    from .reproduce import cmd_reproduce
    return cmd_reproduce(args)


def _bench(args):
    from .bench import cmd_bench
    return cmd_bench(args)


def _analyze(args):
    from .analysis import cmd_analyze
    return cmd_analyze(args)


main = build_cli(prog="hyperfrac", commands={"train": _train, "evaluate": _evaluate, "sample": _sample,
                                              "reproduce": _reproduce, "bench": _bench, "analyze": _analyze},
                 description="Hyper-Connections (arXiv 2409.19606) and Frac-Connections (arXiv 2503.14125)")

if __name__ == "__main__":
    main()
