"""The ``serket`` command.

    serket list                   the architectures that have a benchmark, one line each
    serket bench NAME [options]   run one (``serket bench NAME --help`` lists its options)
    serket --version              the installed version

Architectures register their benchmark under the entry-point group ``serket.benchmarks``
(``name = "package.module"``, the module defining ``bench_parser()`` and ``bench_main(argv)``),
so the command finds third-party architectures as it finds its own and imports no architecture
by name. Being inside ``serket``, it runs ``serket/__init__.py`` (which sets ``OMP_WAIT_POLICY``)
before any benchmark imports torch.

A mistake in the command line, or data that cannot be had, ends in one line that says what is
wrong, with exit status 2; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

import serket  # first: serket/__init__.py sets OMP_WAIT_POLICY before any benchmark loads torch
from serket.errors import SerketError

ENTRY_POINT_GROUP = "serket.benchmarks"
PROG = "serket"


def benchmarks() -> dict:
    """``{name: entry point}`` of every registered architecture benchmark, sorted by name."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return dict(sorted(found.items()))


def _load(entry) -> object:
    module = importlib.import_module(entry.value)
    for name in ("bench_parser", "bench_main"):
        if not callable(getattr(module, name, None)):
            raise _CommandError(f"benchmark {entry.name!r} ({entry.value}) defines no {name}()")
    return module


class _CommandError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Cognitive architectures from modules that learn by passing messages.",
        epilog="serket bench NAME --help lists a benchmark's options and their defaults.")
    parser.add_argument("--version", action="store_true", help="print the installed version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("list", help="the architectures that have a benchmark, one line each")
    bench = commands.add_parser("bench", help="run an architecture's benchmark", add_help=False)
    bench.add_argument("name", nargs="?", help="the architecture, as `serket list` names it")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's options")
    return parser


def _run(argv: list[str]) -> int:
    parser = _top_parser()
    parser.error = lambda message: (_ for _ in ()).throw(_CommandError(message))
    args = parser.parse_args(argv)
    if args.version:
        print(f"neuro-serket {serket.__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    known = benchmarks()
    if args.command == "list":
        width = max((len(name) for name in known), default=0)
        for name, entry in known.items():
            print(f"{name:<{width}}  {_load(entry).bench_parser().description}")
        return 0
    # bench
    if args.name is None or args.name.startswith("-"):
        if args.name in ("-h", "--help"):
            print(f"usage: {PROG} bench NAME [options]; NAME is one of: {', '.join(known)}")
            return 0
        raise _CommandError(f"bench needs an architecture's name: one of {', '.join(known)}")
    if args.name not in known:
        raise _CommandError(f"no benchmark named {args.name!r}; known: {', '.join(known)}")
    _load(known[args.name]).bench_main(args.options)
    return 0


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return _run(argv)
    except SystemExit as done:  # a benchmark's parser: --help (0) or a one-line usage error (2)
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    except (_CommandError, SerketError) as error:
        if debug:
            raise
        message = str(error).strip().replace("\n", "; ")
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
