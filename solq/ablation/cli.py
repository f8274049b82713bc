"""``solq ablate``: the command line of the sweeps (also ``benchmarks/ablations.py``).

Options may stand anywhere, also among the ``key=value`` overrides after the table
(``solq ablate 3a --config C train.epochs=2 --scale tiny``): the words after the table are one
``REMAINDER`` argument whose options are parsed by a second, options-only parser.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional, Sequence

from ..config import ConfigError
from .runner import run_sweep
from .sweeps import SCALES, TABLES, AblationError, normalize_table, sweep_definition

DESCRIPTION = ("The codec ablations of SOLQ's Table 3, end to end: sweep definitions, resumable runs, tables, plots. "
               "Re-running the same command continues an interrupted sweep.")


def _add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``solq ablate`` (``--config`` is required, checked after parsing: it may come late)."""
    p.add_argument("--config", help="base config YAML (required; e.g. configs/ablations/shapes_cpu.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: runs/ablations/<scale>)")
    p.add_argument("--scale", default="cpu", choices=SCALES, help="tiny (tests), cpu (default) or full")
    p.add_argument("--only", default=None, help="comma-separated entry names to run now (others stay as they are)")
    p.add_argument("--dry-run", action="store_true", help="print each entry's overrides and codec, run nothing")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle AP (maskcodec bench)")


class _OverridesAndOptions(argparse.Action):
    """The words after the table: ``key=value`` overrides, with the options allowed among them."""

    def __call__(self, parser, namespace, values, option_string=None):
        late = argparse.ArgumentParser(prog=parser.prog, add_help=False)
        _add_options(late)
        # only the options given here are set: the namespace already holds the others
        _, words = late.parse_known_args(list(values), namespace)
        if any(w in ("-h", "--help") for w in words):
            parser.print_help()
            parser.exit()
        stray = [w for w in words if w.startswith("-")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        setattr(namespace, self.dest, words)


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``solq ablate`` to ``p``; the parsed namespace's ``func(args)`` runs it."""
    p.add_argument("table", help="which sub-table: " + ", ".join(TABLES) + " (or 'all')")
    _add_options(p)
    p.add_argument("overrides", nargs=argparse.REMAINDER, action=_OverridesAndOptions,
                   help="config overrides key=value, applied last (options may stand among them)")
    p.set_defaults(func=ablate_from_args)
    return p


def add_ablate_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add ``ablate`` to a ``solq`` sub-command parser; the parsed namespace's ``func(args)`` runs it
    and returns the exit status."""
    p = subparsers.add_parser("ablate", help="run a codec ablation of the paper's Table 3 (3a-3e)",
                              description=DESCRIPTION)
    return configure_parser(p)


def ablate_from_args(args: argparse.Namespace) -> int:
    """Run ``solq ablate`` from parsed arguments; returns the exit status (2 with a message on bad input)."""
    try:
        return _ablate(args)
    except (AblationError, ConfigError, FileNotFoundError) as err:
        print(f"solq ablate: error: {err}", file=sys.stderr)
        return 2


def _ablate(args: argparse.Namespace) -> int:
    if not args.config:
        raise AblationError("--config is required (the base config YAML, e.g. configs/ablations/shapes_cpu.yaml)")
    tables = TABLES if str(args.table).lower() == "all" else (normalize_table(args.table),)
    out = args.out or os.path.join("runs", "ablations", args.scale)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    argv = getattr(args, "argv", None)
    words = ["solq", "ablate", *argv] if argv is not None else ["solq", *sys.argv[1:]]
    command = " ".join(shlex.quote(str(a)) for a in words)
    for table in tables:
        sweep = sweep_definition(table, args.scale)
        if args.dry_run:
            print(f"# table {sweep.table}: {sweep.title} [{sweep.scale}]")
            for e in sweep.entries:
                print(f"{e.name:12s} {' '.join(e.overrides)}")
            continue
        run = run_sweep(table, args.config, out, args.scale, args.overrides, only=only,
                        with_oracle=not args.no_oracle, command=command.strip())
        print(f"\nTable {sweep.table}: {sweep.title} [{args.scale} scale]\n{run.table()}\n")
        print(f"wrote {', '.join(str(p) for p in run.files)}")
    return 0


def main_ablate(argv: Optional[Sequence[str]] = None) -> int:
    """``solq ablate ...`` as a function (``argv`` without the ``ablate`` word)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = configure_parser(argparse.ArgumentParser(prog="solq ablate", description=DESCRIPTION))
    args = parser.parse_args(argv)
    args.argv = argv
    return ablate_from_args(args)
