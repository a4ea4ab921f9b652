"""The ``serket`` command.

    serket bench NAME [options]   run the benchmark of a ready-made architecture
    serket list                   list the architectures that have a benchmark

``NAME`` is the architecture's module in ``serket.graphs`` with ``-`` for ``_`` (``vae-gmm``).
The core looks the architecture up by name, so it never imports the layers above it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _benchmarks() -> list[str]:
    import serket.graphs as graphs

    names = []
    for info in pkgutil.iter_modules(graphs.__path__):
        module = importlib.import_module(f"serket.graphs.{info.name}")
        if hasattr(module, "bench_main"):
            names.append(info.name.replace("_", "-"))
    return sorted(names)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list":
        print("\n".join(_benchmarks()))
        return 0
    if command == "bench":
        if not rest or rest[0].startswith("-"):
            print("usage: serket bench NAME [options]; NAME is one of: " + ", ".join(_benchmarks()), file=sys.stderr)
            return 2
        name = rest[0].replace("-", "_")
        try:
            module = importlib.import_module(f"serket.graphs.{name}")
        except ModuleNotFoundError:
            print(f"serket: no architecture named {rest[0]!r}; known: {', '.join(_benchmarks())}", file=sys.stderr)
            return 2
        if not hasattr(module, "bench_main"):
            print(f"serket: {rest[0]!r} has no benchmark", file=sys.stderr)
            return 2
        module.bench_main(rest[1:])
        return 0
    print(f"serket: unknown command {command!r}\n\n{__doc__.strip()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
