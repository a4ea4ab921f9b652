"""The layout holds: the import ladder of ARCHITECTURE.md, read from the source without importing it.

Every ``.py`` file of ``serket/`` (its subpackages included), ``modules/`` (installed as
``serket.modules``) and ``graphs/`` (installed as ``serket.graphs``) is parsed with :mod:`ast`;
each import, those inside functions included, becomes an edge between dotted module names
(relative imports resolved). The ladder::

    core (serket.*, outside the subpackages below)
      <- serket.audio, serket.datasets (datasets may use audio)
      <- serket.modules
      <- serket.graphs
      <- serket.bench (benchmark tooling), examples, benchmarks

One exception, on purpose: a graph's ``bench_parser()`` / ``bench_main()`` (what ``serket bench
NAME`` runs) import the benchmark runner and reports from ``serket.bench``. Benchmark tooling is
what those two functions are, and the command finds them through entry points, so
``serket.bench`` never imports a graph by name and no cycle can form.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import NamedTuple

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# a copy of the tests beside an installed package (benchmarks/device_check.sh) has no sources to read
pytestmark = pytest.mark.skipif(not (ROOT / "serket" / "__init__.py").is_file(),
                                reason="the source folders serket/, modules/, graphs/ are not beside the tests")
FOLDERS = {"serket": ROOT / "serket", "serket.modules": ROOT / "modules", "serket.graphs": ROOT / "graphs"}
SUBPACKAGES = ("serket.datasets", "serket.audio", "serket.bench", "serket.modules", "serket.graphs")
# what the core never imports: it starts no process, downloads nothing, draws nothing
FORBIDDEN_IN_CORE = ("subprocess", "urllib", "http", "matplotlib", "requests", "socket")
# which layers each layer may import (its own included)
ALLOWED = {
    "core": {"core"},
    "serket.audio": {"core", "serket.audio"},
    "serket.datasets": {"core", "serket.audio", "serket.datasets"},
    "serket.modules": {"core", "serket.modules"},
    # serket.bench: the one exception, see the module's docstring; serket.graphs: only the graph itself
    "serket.graphs": {"core", "serket.datasets", "serket.audio", "serket.modules", "serket.bench", "serket.graphs"},
    # the CLI finds the graphs through entry points, never by name
    "serket.bench": {"core", "serket.datasets", "serket.audio", "serket.modules", "serket.bench"},
}


class Source(NamedTuple):
    name: str  # dotted, as installed
    path: Path
    is_package: bool  # an __init__.py
    text: str
    tree: ast.Module

    @property
    def where(self) -> str:
        return str(self.path.relative_to(ROOT))


class Import(NamedTuple):
    source: Source
    line: int
    target: str  # the dotted module imported (for ``from X import a``: X.a where that is a module)
    names: tuple[str, ...]  # for ``from X import a, b``: the names taken from ``target``
    text: str  # the statement as written

    def __str__(self) -> str:
        return f"{self.source.where}:{self.line}: {self.text}"


def _sources() -> dict[str, Source]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [part for part in relative.parts if part != "__init__"]
            if package == "serket" and parts and parts[0] in ("modules", "graphs"):
                continue  # not where those packages live
            name = ".".join([package, *parts])
            text = path.read_text()
            found[name] = Source(name, path, path.name == "__init__.py", text, ast.parse(text, str(path)))
    return found


SOURCES = _sources()


def _resolve_relative(source: Source, module: str | None, level: int) -> str:
    package = source.name if source.is_package else source.name.rpartition(".")[0]
    base = package.split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(source: Source) -> list[Import]:
    out = []
    for node in ast.walk(source.tree):
        text = ast.get_source_segment(source.text, node) if isinstance(node, (ast.Import, ast.ImportFrom)) else None
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(source, node.lineno, alias.name, (), text))
        elif isinstance(node, ast.ImportFrom):
            module = _resolve_relative(source, node.module, node.level) if node.level else node.module
            plain = []
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                if submodule in SOURCES:  # ``from serket.datasets import mnist``: the module itself
                    out.append(Import(source, node.lineno, submodule, (), text))
                else:
                    plain.append(alias.name)
            if plain:
                out.append(Import(source, node.lineno, module, tuple(plain), text))
    return sorted(out, key=lambda i: i.line)


IMPORTS = [i for source in SOURCES.values() for i in _imports(source)]


def _known(target: str) -> str | None:
    """The serket module that importing ``target`` names (itself, or the nearest package above)."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in SOURCES:
            return ".".join(parts)
        parts.pop()
    return None


def layer(name: str) -> str:
    for package in SUBPACKAGES:
        if name == package or name.startswith(package + "."):
            return package
    return "core"


def _serket_imports():
    for i in IMPORTS:
        if i.target == "serket" or i.target.startswith("serket."):
            yield i, _known(i.target) or i.target


def test_every_file_is_found_and_mapped():
    assert "serket" in SOURCES and "serket.graph" in SOURCES
    assert {"serket.modules.vae", "serket.graphs.vae_gmm", "serket.datasets.mnist", "serket.audio.wav",
            "serket.bench.cli"} <= set(SOURCES)
    assert not any(name.startswith(("serket.modules.modules", "serket.graphs.graphs")) for name in SOURCES)
    # relative imports resolve as Python resolves them
    spoken = SOURCES["serket.datasets.spoken_digits"]
    assert _resolve_relative(spoken, "folders", 1) == "serket.datasets.folders"
    assert _resolve_relative(spoken, "errors", 2) == "serket.errors"
    assert _resolve_relative(SOURCES["serket.datasets"], "mnist", 1) == "serket.datasets.mnist"


def test_every_serket_import_names_a_module_that_exists():
    """Stale paths (a module moved away) are found here, in the scripts and tests too."""
    scripts = [p for folder in ("examples", "benchmarks", "tests") for p in sorted((ROOT / folder).rglob("*.py"))]
    problems = []
    for path in [source.path for source in SOURCES.values()] + scripts:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module]
            else:
                continue
            for target in targets:
                if (target == "serket" or target.startswith("serket.")) and target not in SOURCES:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: no module {target}")
    assert not problems, "imports of serket modules that do not exist:\n  " + "\n  ".join(problems)


def test_the_core_imports_no_subpackage_and_starts_no_process_downloads_nothing_draws_nothing():
    problems = []
    for i in IMPORTS:
        if layer(i.source.name) != "core":
            continue
        top = i.target.split(".")[0]
        if top in FORBIDDEN_IN_CORE:
            problems.append(f"{i}  (the core imports {top})")
        elif i.target.startswith("serket.") and layer(i.target) != "core":
            problems.append(f"{i}  (the core imports {layer(i.target)})")
    assert not problems, "the core reaches beyond itself:\n  " + "\n  ".join(problems)


def test_each_layer_imports_only_what_is_below_it():
    problems = []
    for i, target in _serket_imports():
        here, there = layer(i.source.name), layer(target)
        if there not in ALLOWED[here]:
            problems.append(f"{i}  ({here} imports {there}: it may import only {sorted(ALLOWED[here])})")
        elif here == "serket.graphs" and there == "serket.graphs" and target != i.source.name:
            problems.append(f"{i}  (a graph imports another graph, {target}: shared helpers belong in "
                            f"serket.datasets, serket.audio or serket.bench)")
    assert not problems, "imports against the ladder:\n  " + "\n  ".join(problems)


def test_no_module_imports_another_modules_private_names():
    problems = []
    for source in SOURCES.values():
        if layer(source.name) != "serket.modules":
            continue
        aliases = {}  # local name -> another serket.modules module imported whole
        for i in (i for i in IMPORTS if i.source is source):
            target = _known(i.target) or i.target
            if layer(target) != "serket.modules" or target in (source.name, "serket.modules"):
                continue
            private = [name for name in i.names if name.startswith("_") and not name.startswith("__")]
            if private:
                problems.append(f"{i}  (private {', '.join(private)} of {target})")
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("serket.modules.") and alias.name != source.name:
                        aliases[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom):
                module = _resolve_relative(source, node.module, node.level) if node.level else node.module
                for alias in node.names:
                    if f"{module}.{alias.name}" in SOURCES and f"{module}.{alias.name}" != source.name:
                        aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        for node in ast.walk(source.tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                problems.append(f"{source.where}:{node.lineno}: {node.value.id}.{node.attr}  "
                                f"(private {node.attr} of {aliases[node.value.id]})")
    assert not problems, "a module uses another module's private names:\n  " + "\n  ".join(problems)


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(SOURCES)
    for i, target in _serket_imports():
        here = i.source.name
        if i.source.is_package and target.startswith(here + "."):
            continue  # a package re-exporting its own submodules
        if target != here:
            graph.add_edge(here, target, statement=str(i))
    return graph


def test_no_import_cycles():
    graph = import_graph()
    cycles = sorted(nx.simple_cycles(graph), key=len)
    described = []
    for cycle in cycles[:5]:
        edges = zip(cycle, cycle[1:] + cycle[:1])
        described.append(" -> ".join(cycle + cycle[:1]) + "".join(
            f"\n      {graph.edges[a, b]['statement']}" for a, b in edges))
    assert not cycles, f"{len(cycles)} import cycle(s) among serket modules:\n  " + "\n  ".join(described)


def _benchmark_entry_points() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["entry-points"]["serket.benchmarks"]


def test_every_registered_benchmark_is_an_importable_module_with_bench_parser_and_bench_main():
    entries = _benchmark_entry_points()
    assert entries, "pyproject.toml registers no serket.benchmarks entry points"
    for name, target in entries.items():
        assert ":" not in target, f"pyproject.toml: benchmark {name} = {target!r} must name a module"
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            pytest.fail(f"pyproject.toml: benchmark {name} = {target!r} cannot be imported: {error}")
        for function in ("bench_parser", "bench_main"):
            assert callable(getattr(module, function, None)), (
                f"pyproject.toml: benchmark {name} = {target!r}: {module.__file__} defines no {function}()")


# --------------------------------------------------------------------------------------------
# One place sets the OpenMP thread policy: serket/__init__.py, before anything loads torch

SCRIPTS = sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")) + [
    ROOT / "serket" / "bench" / "cli.py", ROOT / "tests" / "conftest.py"]


def _top_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of the imports at a file's top level, in order."""
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module))
    return out


def test_the_thread_policy_is_set_once_before_torch_loads():
    init = ROOT / "serket" / "__init__.py"
    body = ast.parse(init.read_text()).body
    sets = [k for k, node in enumerate(body) if "OMP_WAIT_POLICY" in ast.dump(node)]
    first_relative = next(k for k, node in enumerate(body) if isinstance(node, ast.ImportFrom) and node.level)
    assert sets and sets[0] < first_relative, "serket/__init__.py must set OMP_WAIT_POLICY before its imports"
    pattern = re.compile(r"""environ[^\n]*["']OMP_WAIT_POLICY["']""")
    elsewhere = []
    for folder in ("serket", "modules", "graphs", "examples", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == init:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                # the documentation pages import torch first, so their subprocess gets it from the environment
                if pattern.search(line) and not (path.name == "test_docs.py" and "env.setdefault" in line):
                    elsewhere.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for path in sorted((ROOT / ".ci").glob("*")) + sorted((ROOT / "benchmarks").glob("*.sh")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "OMP_WAIT_POLICY=" in line:
                elsewhere.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not elsewhere, "OMP_WAIT_POLICY is set outside serket/__init__.py:\n  " + "\n  ".join(elsewhere)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_imports_serket_before_torch(script):
    imports = _top_level_imports(script)
    torch_at = next((line for line, name in imports if name == "torch" or name.startswith("torch.")), None)
    serket_at = next((line for line, name in imports if name == "serket" or name.startswith("serket.")), None)
    if torch_at is not None or serket_at is not None:
        assert serket_at is not None and (torch_at is None or serket_at < torch_at), (
            f"{script.relative_to(ROOT)}: `import serket` must come before `import torch` "
            f"(line {torch_at}), so that serket/__init__.py sets the thread policy first")
