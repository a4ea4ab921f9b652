"""Alternate (SERKET) training: rounds of per-module learning, messages between them.

In each round every node in the schedule, in order, receives its latest incoming messages,
learns (:meth:`Module.update`) and publishes its outgoing messages. After each round the
trainer measures every module that predicts categories against the labels (labels reach
metrics only, never modules), calls the callbacks, prints a progress line, and writes a
checkpoint atomically. A run resumed from its checkpoint after round ``k`` gives the same
result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, DataError
from .graph import Graph
from .metrics import clustering_report
from .seeding import rng_state, seed_everything, set_rng_state

__all__ = ["AlternateTrainer", "train_alternate"]

CHECKPOINT_NAME = "checkpoint.pt"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AlternateTrainer:
    """Runs a graph for a number of rounds.

    Args:
        graph: a validated (or validatable) :class:`Graph`.
        rounds: number of rounds.
        schedule: node names in update order, repeats allowed; default ``graph.schedule()``.
        labels: (N,) true categories, for metrics only.
        checkpoint_dir: where ``checkpoint.pt`` is written after every round; ``None``: nowhere.
        resume: continue from the checkpoint in ``checkpoint_dir`` when there is one.
        callbacks: functions ``f(trainer, record)`` called after each round.
        progress: print a line per round (to ``stream``).
    """

    def __init__(self, graph: Graph, *, rounds: int, schedule: Iterable[str] | None = None,
                 labels: torch.Tensor | None = None, checkpoint_dir=None, resume: bool = True,
                 callbacks: Iterable[Callable] = (), progress: bool = True, stream=None,
                 prefix: str = ""):
        if rounds < 0:
            raise ValueError(f"rounds must be non-negative, got {rounds}")
        graph.validate()
        self.graph = graph
        self.rounds = int(rounds)
        self.schedule = graph.check_schedule(schedule if schedule is not None else graph.schedule())
        self.labels = None if labels is None else torch.as_tensor(labels).long().cpu()
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.progress = progress
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.history: list[dict] = []
        self.completed = 0

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Accuracy, ARI and NMI of every node that predicts categories."""
        if self.labels is None:
            return {}
        out = {}
        for name, node in self.graph.nodes.items():
            pred = node.predict()
            if pred is None:
                continue
            if pred.shape[0] != self.labels.shape[0]:
                raise DataError(f"node {name!r} predicted {pred.shape[0]} items but there are "
                                f"{self.labels.shape[0]} labels")
            out[name] = clustering_report(self.labels, pred.cpu())
        return out

    def _save(self) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "completed": self.completed,
            "rounds": self.rounds,
            "schedule": self.schedule,
            "graph": self.graph.state_dict(),
            "history": self.history,
            "rng": rng_state(),
        })

    def _try_resume(self) -> bool:
        path = self.checkpoint_path
        if not (self.resume and path is not None and path.exists()):
            return False
        payload = load_checkpoint(path)
        if payload["graph"].get("fingerprint") != self.graph.fingerprint():
            raise CheckpointError(f"checkpoint {path} was written by a different graph "
                                  f"(nodes, settings, ports or connections differ); use another checkpoint_dir")
        if payload["schedule"] != self.schedule:
            raise CheckpointError(f"checkpoint {path} was written with schedule {payload['schedule']}, "
                                  f"not {self.schedule}")
        self.graph.load_state_dict(payload["graph"])
        self.history = list(payload["history"])
        self.completed = int(payload["completed"])
        set_rng_state(payload["rng"])
        self._log(f"resumed from {path} after round {self.completed}")
        return True

    def _log(self, text: str) -> None:
        if self.progress:
            print(f"{self.prefix}{text}", file=self.stream, flush=True)

    def run(self) -> list[dict]:
        if not self._try_resume() and self.graph.seed is not None:
            seed_everything(self.graph.seed)
        start_round = self.completed
        for r in range(start_round + 1, self.rounds + 1):
            t0 = time.perf_counter()
            node_seconds: dict[str, float] = {}
            for name in self.schedule:
                t = time.perf_counter()
                self.graph.step(name)
                _sync(self.graph.device)
                node_seconds[name] = node_seconds.get(name, 0.0) + time.perf_counter() - t
            record = {
                "round": r,
                "seconds": time.perf_counter() - t0,
                "node_seconds": node_seconds,
                "metrics": self.evaluate(),
                "diagnostics": {n: node.diagnostics() for n, node in self.graph.nodes.items()
                                if hasattr(node, "diagnostics")},
            }
            self.history.append(record)
            self.completed = r
            for cb in self.callbacks:
                cb(self, record)
            self._save()
            self._log(self.format_record(record))
        return self.history

    def format_record(self, record: dict) -> str:
        times = " ".join(f"{n} {s:.1f}s" for n, s in record["node_seconds"].items() if s >= 0.05)
        scores = "  ".join(f"{n} acc {m['accuracy']*100:.1f} ari {m['ari']:.3f} nmi {m['nmi']:.3f}"
                           for n, m in record["metrics"].items())
        return f"round {record['round']:>3}/{self.rounds}  {record['seconds']:6.1f}s  [{times}]  {scores}"


def train_alternate(graph: Graph, rounds: int, **kwargs) -> list[dict]:
    """Build an :class:`AlternateTrainer` and run it; returns the per-round history."""
    return AlternateTrainer(graph, rounds=rounds, **kwargs).run()
