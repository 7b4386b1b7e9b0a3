"""The one console script every paper exposes: ``<paper> train|evaluate|sample|reproduce|bench|...``.

A paper declares its commands as :class:`Command` objects in its ``cli.py`` (the only module of a
paper that builds a parser). What a command accepts follows from what it uses:

* ``config=True``: ``--config FILE`` and dotted overrides (``model.depth=4``), anywhere on the line
  (options and overrides may be intermixed: ``train a.b=1 --config X c.d=2``);
* ``out_dir=True``: ``--out-dir DIR`` (where a run or a result is written);
* ``run=True``: ``--run DIR``, a trained run folder whose own ``config.yaml`` is reloaded;
* ``reproduce`` always has ``--scale smoke|small`` and ``--workers N``;
* ``args``: a function adding the command's own options.

Every command has ``--debug``. Expected failures (:class:`reprokit.errors.UserError`: unknown config
keys, missing data, corrupt artefacts or checkpoints, impossible shapes) end the program with exit
status 2 and one line naming the culprit; ``--debug`` adds the traceback. A stop (Ctrl-C, or SIGTERM during a
reproduction) ends with exit status 130 and one line saying that it stopped (what a long command keeps is its
own business: a reproduction keeps its finished runs and resumes from them). Anything else is a bug and keeps its
traceback (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import UserError

__all__ = ["Command", "build_cli", "STANDARD_COMMANDS"]

STANDARD_COMMANDS = ("train", "evaluate", "sample", "reproduce", "bench")

_HELP = {
    "train": "train one model from a config",
    "evaluate": "evaluate a trained run (--run DIR; its own config.yaml is reloaded)",
    "sample": "write samples from a trained run (--run DIR)",
    "reproduce": "run every arm of the paper's table at a scale and write results",
    "bench": "time the hot paths against baselines, side by side",
}


@dataclass
class Command:
    """One subcommand: ``fn(args) -> int | None`` and the options it takes."""

    fn: Callable[[argparse.Namespace], object]
    help: str = ""
    config: bool = True
    out_dir: bool = True
    run: bool = False
    args: Callable[[argparse.ArgumentParser], None] | None = None


def _command_parser(prog: str, name: str, cmd: Command) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{prog} {name}", description=cmd.help or _HELP.get(name, name))
    p.add_argument("--debug", action="store_true", help="show the traceback of expected errors too")
    if cmd.config:
        p.add_argument("--config", default=None, help="YAML config file")
    if cmd.out_dir:
        p.add_argument("--out-dir", default=None, help="output folder (default from the config)")
    if cmd.run:
        p.add_argument("--run", default=None,
                       help="trained run folder (default: the config's out_dir); its config.yaml is reloaded")
    if name == "reproduce":
        p.add_argument("--scale", default="smoke", choices=["smoke", "small"],
                       help="smoke: seconds, synthetic data, written to the ignored runs/; "
                            "small: the CPU reproduction, committed under results/small/")
        p.add_argument("--workers", type=int, default=1, help="parallel training processes (one thread each)")
    if cmd.args is not None:
        cmd.args(p)
    if cmd.config:
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=4")
    return p


def build_cli(prog: str, commands: dict[str, Command | Callable[[argparse.Namespace], object]],
              description: str = "") -> Callable[[Sequence[str] | None], int]:
    """Return ``main(argv=None) -> int`` for a paper's console script."""
    cmds = {k: v if isinstance(v, Command) else Command(v) for k, v in commands.items()}

    def top_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(cmds) + "}")
        for name, c in cmds.items():
            sub.add_parser(name, help=c.help or _HELP.get(name, name), add_help=False)
        return parser

    def main(argv: Sequence[str] | None = None) -> int:
        console = argv is None
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv or argv[0] not in cmds:
            top = top_parser()
            if not argv or argv[0] in ("-h", "--help"):
                top.print_help()
                code = 0 if argv else 2
            else:
                top.error(f"unknown command {argv[0]!r}; valid: {', '.join(cmds)}")
            return _exit(code, console)
        name = argv[0]
        parser = _command_parser(prog, name, cmds[name])
        args = parser.parse_intermixed_args(argv[1:])
        args.command = name
        if not cmds[name].config:
            args.config, args.overrides = None, []
        try:
            rc = cmds[name].fn(args)
        except UserError as e:
            if args.debug:
                traceback.print_exc()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"{prog} {name}: error: {msg}", file=sys.stderr)
            if not args.debug and "\n" in str(e).strip():
                print("\n".join(str(e).strip().splitlines()[1:]), file=sys.stderr)
            return _exit(2, True)
        except KeyboardInterrupt:
            if args.debug:
                traceback.print_exc()
            print(f"{prog} {name}: stopped", file=sys.stderr)
            return _exit(130, True)
        code = rc if isinstance(rc, int) else 0
        return _exit(code, console)

    def _exit(code: int, force: bool) -> int:
        if force:
            raise SystemExit(code)
        return code

    return main
