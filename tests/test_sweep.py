"""Sweeps (serket.bench.sweep): the same runs one after another, in worker processes and as Ray
tasks give the same results; a failed run is named and does not stop the others; shared pieces
are trained once; the memory watch sees what worker processes hold."""

import os
import time

import pytest
import torch

from serket.bench.runner import run_benchmark
from serket.bench.sweep import MemoryWatch, Task, execute, per_process
from serket.errors import SerketError


def _run(piece, seed, checkpoint_dir, draw):
    """A run: a seeded computation big enough to use threads, and where and how it ran."""
    if piece == "broken":
        raise ValueError(f"the data of seed {seed} are damaged")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200_000, generator=g)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (checkpoint_dir / "trained").write_text("once")  # a piece trained twice would find it
    accuracy = float((x > 0).float().mean())
    return {"history": [{"seconds": 0.1, "metrics": {"node": {"accuracy": accuracy, "ari": 0.0, "nmi": 0.0}}}],
            "value": float((x * x).sum()), "pid": os.getpid(), "threads": torch.get_num_threads(), "draw": draw}


def _tasks(tmp_path, pieces=("a", "b"), seeds=(0, 1, 2)):
    return [Task(p, s, tmp_path / f"{p}-seed{s}", draw=s == seeds[-1]) for p in pieces for s in seeds]


def test_workers_give_the_same_results_as_one_process(tmp_path):
    lines = []
    alone = execute(_run, _tasks(tmp_path / "one"), workers=1, say=lines.append)
    together = execute(_run, _tasks(tmp_path / "two"), workers=2, say=lines.append)
    threads = execute(_run, _tasks(tmp_path / "threads", seeds=(0,)), workers=1, threads=2, say=lambda line: None)
    assert alone.keys() == together.keys() == {(p, s) for p in "ab" for s in (0, 1, 2)}
    for key in alone:
        assert alone[key]["value"] == together[key]["value"]  # bit for bit
        assert alone[key]["draw"] == together[key]["draw"] == (key[1] == 2)
    # in this process, then in two others, each run with one thread
    assert {r["pid"] for r in alone.values()} == {os.getpid()}
    assert os.getpid() not in {r["pid"] for r in together.values()}
    assert {r["threads"] for r in alone.values()} == {r["threads"] for r in together.values()} == {1}
    assert threads[("a", 0)]["threads"] == 2  # a setting of the run
    # one progress line per finished run, counting up to 6 in each sweep
    assert len(lines) == 12 and lines[5].startswith("[sweep 6/6") and lines[11].startswith("[sweep 6/6")
    assert all(r["peak_rss_mib"] > 0 and r["wall_seconds"] >= 0 for r in together.values())


def test_a_failed_run_is_named_and_the_others_finish(tmp_path):
    tasks = _tasks(tmp_path, pieces=("a", "broken"), seeds=(3,)) + _tasks(tmp_path, pieces=("b",), seeds=(4,))
    with pytest.raises(SerketError, match=r"run broken seed 3 failed: ValueError: the data of seed 3 are damaged"):
        execute(_run, tasks, workers=2, say=lambda line: None)
    assert (tmp_path / "a-seed3" / "trained").is_file() and (tmp_path / "b-seed4" / "trained").is_file()


def test_a_run_that_returns_no_history_is_refused(tmp_path):
    with pytest.raises(SerketError, match="run function of a seed 0 returned list"):
        execute(lambda *args: [], [Task("a", 0, tmp_path)], say=lambda line: None)


def test_a_benchmark_trains_a_shared_piece_once(tmp_path):
    # rows "left" and "both" share piece "a"; "both" is made of "a" and "b"
    pieces = {"left": ["a"], "both": ["a", "b"]}

    def combine(config, seed, parts):
        if config == "left":
            return parts["a"]
        history = [{**parts["a"]["history"][0], "metrics": {"node": {
            "accuracy": parts["a"]["history"][0]["metrics"]["node"]["accuracy"] + 1.0, "ari": 0.0, "nmi": 0.0}}}]
        return {"history": history}

    bench = run_benchmark(title="t", data_line="data: none", configs=["left", "both"], seeds=[0, 1], run=_run,
                          pieces=pieces.get, combine=combine, nodes="node", out=tmp_path, workers=2)
    trained = sorted(p.parent.name for p in (tmp_path / "checkpoints").glob("*/trained"))
    assert trained == ["a-seed0", "a-seed1", "b-seed0", "b-seed1"]
    left = [r["final"]["node"]["accuracy"] for r in bench["runs"]["left"]]
    both = [r["final"]["node"]["accuracy"] for r in bench["runs"]["both"]]
    assert both == [a + 1.0 for a in left]
    import json

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sweep"]["runs"] == 4 and results["sweep"]["workers"] == 2


def test_per_process_loads_once_per_arguments():
    calls = []

    def load(args):
        calls.append(args)
        return [args]

    first = per_process(load, {"n": 1})
    assert per_process(load, {"n": 1}) is first and calls == [{"n": 1}]
    per_process(load, {"n": 2})
    assert calls == [{"n": 1}, {"n": 2}]


def _hold(mib, seconds):
    block = bytearray(mib * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    time.sleep(seconds)


def test_the_memory_watch_counts_worker_processes():
    import multiprocessing

    with MemoryWatch(period=0.1) as before:
        time.sleep(0.3)
    child = multiprocessing.get_context("spawn").Process(target=_hold, args=(300, 2.0))
    with MemoryWatch(period=0.1) as watch:
        child.start()
        child.join()
    assert child.exitcode == 0
    assert watch.peak_pss - before.peak_pss > 250  # the child's 300 MiB, proportionally counted
    assert watch.peak - before.peak > 250


def test_ray_local_gives_the_sequential_figures(tmp_path, capfd, golden_figures):
    """The main job's --quick sweep as Ray tasks on a Ray instance started here: the figures
    pinned from the sequential run. Ray is an optional extra of the package; the test extra
    installs it."""
    from serket.bench.cli import main

    assert main(["bench", "neuro-serket", "--quick", "--ray", "local", "--out", str(tmp_path)]) == 0
    golden_figures("neuro-serket", tmp_path / "results.json")
    out = capfd.readouterr().out
    assert "as Ray tasks (local)" in out and "[sweep 5/5" in out
