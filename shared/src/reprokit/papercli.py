"""The one console script every paper exposes: ``<paper> train|evaluate|sample|reproduce|bench``.

Each subcommand takes ``--config FILE``, ``--out-dir DIR`` and trailing dotted overrides
(``model.depth=4``); ``reproduce`` also ``--scale smoke|small``. Handlers receive the parsed
``argparse.Namespace``. A :class:`~reprokit.config.ConfigError` ends the program with exit code 2
and a one-line message, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .checkpoint import CheckpointMismatch
from .config import ConfigError

__all__ = ["build_cli", "STANDARD_COMMANDS"]

STANDARD_COMMANDS = ("train", "evaluate", "sample", "reproduce", "bench")

_HELP = {
    "train": "train one model from a config",
    "evaluate": "evaluate a trained run (or checkpoint)",
    "sample": "write sample grids from a trained run",
    "reproduce": "run every arm of the paper's table at a scale and write results",
    "bench": "time the hot paths against baselines, side by side",
}


def build_cli(prog: str, commands: dict[str, Callable[[argparse.Namespace], object]],
              description: str = "", extra_args: dict[str, Callable[[argparse.ArgumentParser], None]] | None = None
              ) -> Callable[[Sequence[str] | None], int]:
    """Return ``main(argv=None) -> int`` for a paper's console script."""

    def make_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(commands) + "}")
        for name in commands:
            p = sub.add_parser(name, help=_HELP.get(name, name))
            p.add_argument("--config", default=None, help="YAML config file")
            p.add_argument("--out-dir", default=None, help="output folder (default from the config)")
            if name == "reproduce":
                p.add_argument("--scale", default="smoke", choices=["smoke", "small"],
                               help="smoke: seconds, synthetic data; small: the CPU reproduction")
            if extra_args and name in extra_args:
                extra_args[name](p)
            p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=4")
        return parser

    def main(argv: Sequence[str] | None = None) -> int:
        args = make_parser().parse_args(argv)
        try:
            rc = commands[args.command](args)
        except (ConfigError, CheckpointMismatch) as e:
            print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        code = rc if isinstance(rc, int) else 0
        if argv is None:  # console-script use: exit with the code
            raise SystemExit(code)
        return code

    return main
