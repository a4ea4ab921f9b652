"""Carrying out a benchmark's runs: in this process, in worker processes, or as Ray tasks.

A benchmark's grid is a list of *tasks*, each a piece of training and a seed. The same run
function, ``run(piece, seed, checkpoint_dir, draw) -> dict``, serves all three ways; it must be
picklable (a module-level function, or a :func:`functools.partial` of one with the benchmark's
parsed arguments), and so must what it returns (histories, figures, small tensors; never a
graph). Each run seeds itself from its seed and checkpoints under its own folder, so its figures
do not depend on where or beside what it ran, and an interrupted sweep resumes where it stopped.

Every run uses ``threads`` torch threads (default 1), however many workers there are: torch
splits a reduction by its thread count, so a sum over a large tensor differs in its last bits
between one thread and two, and a Gibbs sampler turns that bit into another trajectory. With
the thread count a setting of the run, not of the sweep, the figures are the same every way.

- ``workers=1``: one run after another in this process.
- ``workers=N``: N processes on this machine (``spawn``); a worker keeps what it loaded
  (:func:`per_process`) for the next run it gets. The default, as many workers as cores with
  one thread each, uses the machine: two one-thread processes do more work on two cores than
  one two-thread process, since most of a round is small kernels and Python that one thread
  cannot share.
- ``ray="local"`` or ``ray=ADDRESS``: one Ray task per run, asking for ``threads`` CPUs;
  ``local`` starts a Ray instance on this machine. On a cluster, every node needs this package
  (and the data and output folders at the same paths: checkpoints are written where the task
  runs).

Each worker prints its runs' per-round lines, each line prefixed by its run; the caller's
process adds one line per finished run (how many are done, what is still running), and samples
the memory of itself and its workers together (:class:`MemoryWatch`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from serket.errors import ConfigError, SerketError

__all__ = ["Task", "execute", "machine_cores", "per_process", "MemoryWatch", "rss_mib"]


@dataclass(frozen=True)
class Task:
    """One run of a sweep: a piece of training (a benchmark's configuration, or a part that several
    configurations share) with one seed, checkpointed under ``checkpoint_dir``; ``draw``: the run
    also writes its plots."""
    piece: str
    seed: int
    checkpoint_dir: Path
    draw: bool = False

    @property
    def name(self) -> str:
        return f"{self.piece} seed {self.seed}"


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now, in MiB (0 when it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def pss_mib(pid: int | str = "self") -> float:
    """Proportional resident memory of a process now, in MiB: its private pages plus its share
    of pages it shares with others (torch's libraries, some 400 MiB resident in every process
    that imports it, count once across processes). 0 when it has gone or the kernel does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class MemoryWatch:
    """Samples, every ``period`` seconds, the memory of this process alone (``children=False``)
    or of this process and its live child processes together. ``peak``: the largest resident
    memory seen (for several processes, the sum of theirs, which counts shared libraries once per
    process); ``peak_pss``: the largest sum of proportional memory (:func:`pss_mib`), the
    physical memory the processes took together. MiB; a context manager; Linux only (elsewhere
    the peaks stay 0)."""

    def __init__(self, period: float = 0.5, children: bool = True):
        self.period, self.children, self.peak, self.peak_pss = period, children, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="serket-memory-watch")

    def sample(self) -> float:
        pids: list[int | str] = ["self"]
        if self.children:
            import multiprocessing

            pids += [p.pid for p in multiprocessing.active_children()]
        total = sum(rss_mib(pid) for pid in pids)
        self.peak = max(self.peak, total)
        if self.children:
            self.peak_pss = max(self.peak_pss, sum(pss_mib(pid) for pid in pids))
        return total

    def _watch(self):
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False


_KEPT: dict = {}


def _frozen(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_frozen(v) for v in value)
    if hasattr(value, "__dict__") and not callable(value):  # an argparse Namespace
        return _frozen(vars(value))
    return repr(value)


def per_process(load: Callable, args):
    """``load(args)``, computed once per process and kept for the next run with the same
    arguments (a worker loads the data once, not once per run). Each loader keeps only its
    latest result."""
    name, key = (load.__module__, load.__qualname__), _frozen(args)
    if name not in _KEPT or _KEPT[name][0] != key:
        _KEPT.pop(name, None)  # let the old one go before loading the new
        _KEPT[name] = (key, load(args))
    return _KEPT[name][1]


def _run_task(run: Callable, task: Task, threads: int) -> dict:
    """One task, wherever it runs, with ``threads`` torch threads: its result, with its seconds
    and the peak resident memory of its process while it ran (MiB)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        with MemoryWatch(children=False) as watch:
            result = run(task.piece, task.seed, task.checkpoint_dir, task.draw)
    finally:
        torch.set_num_threads(saved)
        _give_back_freed_memory()
    if not isinstance(result, dict) or "history" not in result:
        raise ConfigError(f"the run function of {task.name} returned {type(result).__name__}, "
                          "not a dict with the trainer's 'history'")
    return {**result, "wall_seconds": time.perf_counter() - t0, "peak_rss_mib": watch.peak}


def _give_back_freed_memory() -> None:
    """Return to the system what the C allocator keeps of memory freed by the last run (glibc
    keeps freed blocks for reuse; a worker would carry them into its next run)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _worker_start(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _Progress:
    """One line per finished run: how many are done, the run's time, what is still running."""

    def __init__(self, tasks: list[Task], say: Callable[[str], None]):
        self.total, self.done, self.say, self.t0 = len(tasks), 0, say, time.perf_counter()
        self.running: list[str] = []

    def started(self, task: Task):
        self.running.append(task.name)

    def finished(self, task: Task, result: dict | None, error: BaseException | None = None):
        self.done += 1
        if task.name in self.running:
            self.running.remove(task.name)
        elapsed = time.perf_counter() - self.t0
        what = (f"failed: {error}" if error is not None else
                f"finished in {result['wall_seconds']:.0f} s, peak {result['peak_rss_mib']:.0f} MiB")
        still = f"; running: {', '.join(self.running)}" if self.running else ""
        self.say(f"[sweep {self.done}/{self.total}, {elapsed:.0f} s] {task.name} {what}{still}")


def execute(run: Callable, tasks: list[Task], *, workers: int = 1, threads: int = 1, ray: str | None = None,
            say: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict[tuple[str, int], dict]:
    """Carry out ``tasks`` with ``run``; returns ``{(piece, seed): result}``.

    A run that fails does not stop the others (each has checkpointed what it did); once all have
    ended, a :class:`~serket.errors.SerketError` names every run that failed and why, and the
    same command resumes them.
    """
    if workers < 1 or threads < 1:
        raise ConfigError(f"workers and threads must be at least 1, got {workers} and {threads}")
    progress = _Progress(tasks, say)
    if ray is not None:
        outcomes = _on_ray(run, tasks, ray, threads, progress)
    elif workers == 1 or len(tasks) <= 1:
        outcomes = {}
        for task in tasks:
            progress.started(task)
            try:
                outcomes[task] = _run_task(run, task, threads)
            except SerketError:
                raise  # in this process: the error already names the node and round
            progress.finished(task, outcomes[task])
    else:
        outcomes = _in_processes(run, tasks, workers, threads, progress)
    failed = {task: outcome for task, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    if failed:
        raise SerketError("; ".join(f"run {task.name} failed: {type(e).__name__}: {e}" for task, e in failed.items())
                          + " (the others finished; run the same command again to resume)")
    return {(task.piece, task.seed): outcome for task, outcome in outcomes.items()}


@contextmanager
def _main_script_kept_out(run: Callable):
    """While worker processes start: unless ``run`` lives in the main script, do not let them
    run that script again. A ``spawn`` worker re-imports the parent's main script to find what
    was defined there; a script that calls a benchmark at its top level, without an
    ``if __name__ == "__main__":`` guard, would start a sweep inside every worker."""
    func = run.func if isinstance(run, partial) else run
    main = sys.modules.get("__main__")
    if main is None or getattr(func, "__module__", None) == "__main__":
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    try:
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _in_processes(run, tasks, workers, threads, progress) -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    outcomes: dict = {}
    # spawn: a fresh interpreter per worker (forking a process that has started torch's threads
    # is unsafe); the environment is read by OpenMP when the worker imports torch
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_start, initargs=(threads,)) as pool:
            futures = {}
            with _main_script_kept_out(run):  # the workers start as tasks are submitted
                for task in tasks:
                    futures[pool.submit(_run_task, run, task, threads)] = task
            for task in tasks[:workers]:
                progress.started(task)
            queued = list(tasks[workers:])
            for future in as_completed(futures):
                task = futures[future]
                try:
                    outcomes[task] = future.result()
                    progress.finished(task, outcomes[task])
                except BrokenProcessPool as error:
                    outcomes[task] = SerketError(f"its worker process died ({error}); was it out of memory?")
                    progress.finished(task, None, outcomes[task])
                except Exception as error:  # noqa: BLE001 - reported with the run's name below
                    outcomes[task] = error
                    progress.finished(task, None, error)
                if queued:
                    progress.started(queued.pop(0))
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return outcomes


def _on_ray(run, tasks, address, threads, progress) -> dict:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, an optional extra: pip install 'neuro-serket[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(num_cpus=max(machine_cores(), threads), include_dashboard=False, log_to_driver=True)
        else:
            try:
                ray.init(address=address, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise ConfigError(f"--ray {address}: could not join a Ray cluster there: {error}") from None
    outcomes: dict = {}
    try:
        remote = ray.remote(num_cpus=threads, max_retries=0)(_run_task)
        refs = {}
        for task in tasks:  # Ray decides when each starts: none is shown as running
            refs[remote.remote(run, task, threads)] = task
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = refs[ready[0]]
            try:
                outcomes[task] = ray.get(ready[0])
                progress.finished(task, outcomes[task])
            except Exception as error:  # noqa: BLE001 - a task's error, reported with its name
                cause = getattr(error, "cause", None) or error
                outcomes[task] = cause
                progress.finished(task, None, cause)
    finally:
        if started_here:
            ray.shutdown()
    return outcomes
