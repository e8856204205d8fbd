"""`facerecon` command line: a thin shell over the library. Each subcommand lives in its own
module exposing `add_parser(subparsers)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import FaceReconError

# Subcommand modules, in help order. Each registers one top-level command.
COMMANDS = ["demo_cmd", "reconstruct_cmd", "assets_cmd", "decode_cmd", "preprocess_cmd", "eval_cmd", "train_cmd",
            "batch_cmd", "serve_cmd", "dataset_cmd", "albedo_cmd", "vrn_cmd"]


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first word that is not a global option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command. With argv (the arguments main will parse), a module with a
    `HELP` string builds its arguments only when its command is the one in argv: `train` imports
    torch for its defaults (~2.5 s), which every other command (`batch`'s driver, `--help`) would
    otherwise pay. argv None: every command in full."""
    from .. import __version__

    p = argparse.ArgumentParser(prog="facerecon", description="3D face reconstruction from photos, sets and videos.")
    p.add_argument("--version", action="version", version=f"facerecon {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress bars, no warnings")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-v info, -vv debug, including native libraries' messages)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = None if argv is None else _command_of(argv)
    for name in COMMANDS:
        mod = importlib.import_module(f"{__package__}.{name}")
        help_ = getattr(mod, "HELP", None)
        if help_ is not None and argv is not None and chosen != mod.NAME:
            sub.add_parser(mod.NAME, help=help_)  # a stand-in: only its name and help line are needed
        else:
            mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .. import threads

    threads.prefer_passive_wait()  # before the subcommands load torch and its OpenMP runtime
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from .. import log

    log.configure(-1 if args.quiet else args.verbose)
    try:
        return int(args.func(args) or 0)
    except FaceReconError as e:
        print(f"facerecon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facerecon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
