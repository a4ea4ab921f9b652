"""Benchmark tooling: what runs the architectures' benchmarks and reports on them.

- :mod:`serket.bench.runner`: the shared benchmark parser and :func:`~serket.bench.runner.run_benchmark`
  (configurations x seeds, checkpointed, tables and files);
- :mod:`serket.bench.reporting`: tables, atomic JSON and text files, plots;
- :mod:`serket.bench.drawing`: drawing a graph as a figure or as Graphviz text;
- :mod:`serket.bench.evaluation`: a digit classifier for cross-modal coherence, merged histories;
- :mod:`serket.bench.cli`: the ``serket`` command, which finds benchmarks through entry points.

The architectures in :mod:`serket.graphs` import the runner for their ``bench_main``; nothing
here imports an architecture by name.
"""

from .drawing import draw_graph, graph_layout, graph_to_dot
from .evaluation import DigitClassifier, coherence, merge_histories
from .reporting import format_mean_sd, mean_sd, write_json, write_text
from .runner import benchmark_parser, parse_benchmark_args, peak_memory, run_benchmark

__all__ = [
    "run_benchmark",
    "benchmark_parser",
    "parse_benchmark_args",
    "peak_memory",
    "write_json",
    "write_text",
    "mean_sd",
    "format_mean_sd",
    "draw_graph",
    "graph_to_dot",
    "graph_layout",
    "DigitClassifier",
    "coherence",
    "merge_histories",
]
