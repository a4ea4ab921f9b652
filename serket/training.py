"""Training a graph: alternate (SERKET) rounds of per-module learning, or joint optimisation.

In each round every node in the schedule, in order, receives its latest incoming messages,
learns (:meth:`Module.update`) and publishes its outgoing messages. After each round the
trainer measures every module that predicts categories against the labels (labels reach
metrics only, never modules), calls the callbacks, prints a progress line, and writes a
checkpoint atomically. A run resumed from its checkpoint after round ``k`` gives the same
result as an uninterrupted run with the same seed.

Each round's record holds, per node, the seconds it took (``node_seconds``) and the memory of
the process: ``node_peak_rss_mib``, the peak resident memory of the process (MiB, from
``getrusage``) once the node's work in the round was done, and ``node_peak_rss_growth_mib``,
how far the node's work raised that peak (0 when it stayed under the peak reached before it);
both are absent where the platform does not report a peak (Windows) and in records written
before they existed.

:class:`JointTrainer` (``mode="joint"`` in :func:`train`) optimises the graph's differentiable
modules together: in each round, ``epochs`` passes over the items in minibatches, each
minibatch one backward pass through the sum of every differentiable module's loss, with the
tensors crossing head-to-tail connections kept live so that gradients flow across them (the
upper module scores the lower one's latent sample, ``-log p(z)``, in place of the lower
module's closed-form prior term). The modules that are not differentiable (Gibbs samplers,
combiners, the recogniser) take their ordinary step after each round's epochs, with the
messages the differentiable modules publish then. The same graph, with the same module code,
trains either way.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from .checkpoint import folder_problem, load_checkpoint, save_checkpoint
from .connections import HEAD_TO_TAIL, Observation
from .errors import CheckpointError, ConfigError, DataError, GraphError, SerketError, with_context
from .graph import Graph, fingerprint_differences
from .validation import check_int
from .module import JointTraining, derive_seed
from .metrics import clustering_report
from .seeding import rng_state, seed_everything, set_rng_state

__all__ = ["AlternateTrainer", "JointTrainer", "train", "train_alternate", "train_joint", "peak_rss_mib"]

CHECKPOINT_NAME = "checkpoint.pt"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float | None:
    """The peak resident memory of this process so far, in MiB (``getrusage``'s ``ru_maxrss``),
    or None where the platform does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB elsewhere


class _NodeMeter:
    """Seconds and peak memory of each node over one round (see the module's docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.growth: dict[str, float] = {}

    @contextlib.contextmanager
    def measure(self, name: str):
        before = peak_rss_mib()
        t = time.perf_counter()
        yield
        _sync(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
        after = peak_rss_mib()
        if after is not None:
            self.peak[name] = round(after, 1)
            self.growth[name] = round(self.growth.get(name, 0.0) + after - before, 1)

    def record(self) -> dict:
        """The record's keys: ``node_seconds`` and, where measured, the memory per node."""
        out = {"node_seconds": self.seconds}
        if self.peak:
            out["node_peak_rss_mib"] = self.peak
            out["node_peak_rss_growth_mib"] = self.growth
        return out


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
        if not isinstance(graph, Graph):
            raise ConfigError(f"{type(self).__name__}: graph must be a serket Graph, got {type(graph).__name__}")
        rounds = check_int(type(self).__name__, "rounds", rounds, minimum=0)
        graph.validate()
        self.graph = graph
        self.rounds = rounds
        self.schedule = graph.check_schedule(schedule if schedule is not None else graph.schedule())
        self.labels = None if labels is None else torch.as_tensor(labels).long().cpu()
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if self.checkpoint_dir is not None:  # found now, not after the first round has run
            problem = folder_problem(self.checkpoint_dir)
            if problem:
                raise CheckpointError(f"checkpoint_dir: {problem}")
        self.resume = resume
        self.callbacks = list(callbacks)
        self.progress = progress
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.history: list[dict] = []
        self.completed = 0
        self._meter = _NodeMeter(graph.device)  # the current round's, filled by _run_round

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
            "trainer": self.trainer_settings(),
        })

    def _try_resume(self) -> bool:
        path = self.checkpoint_path
        if not (self.resume and path is not None and path.exists()):
            return False
        payload = load_checkpoint(path)
        differences = fingerprint_differences(payload["graph"].get("fingerprint"), self.graph.fingerprint())
        if differences:
            raise CheckpointError(f"checkpoint {path} was written by a different graph: " + "; ".join(differences)
                                  + "; to start fresh, delete it or use another checkpoint_dir (or resume=False)")
        if payload["schedule"] != self.schedule:
            raise CheckpointError(f"checkpoint {path} was written with schedule {payload['schedule']}, "
                                  f"not {self.schedule}")
        saved = payload.get("trainer", {"mode": "alternate"})
        if saved != self.trainer_settings():
            raise CheckpointError(f"checkpoint {path} was written by a trainer with {saved}, not "
                                  f"{self.trainer_settings()}; use another checkpoint_dir")
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
            self._meter = _NodeMeter(self.graph.device)
            try:
                self._run_round(r)
            except SerketError as error:  # say which round; the graph has named the node and port
                raise with_context(error, f"round {r}") from error
            record = {
                "round": r,
                "mode": self.round_mode(r),
                "seconds": time.perf_counter() - t0,
                **self._meter.record(),
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

    def round_mode(self, r: int) -> str:
        return "alternate"

    def trainer_settings(self) -> dict:
        """What a checkpoint must have been written with to be resumed by this trainer."""
        return {"mode": "alternate"}

    def _run_round(self, r: int) -> dict[str, float]:
        """One alternate round: every node of the schedule in turn; returns seconds per node
        (and leaves them, with the memory per node, in ``self._meter``)."""
        for name in self.schedule:
            with self._meter.measure(name):
                self.graph.step(name)
        return self._meter.seconds

    def format_record(self, record: dict) -> str:
        times = " ".join(f"{n} {s:.1f}s" for n, s in record["node_seconds"].items() if s >= 0.05)
        scores = "  ".join(f"{n} acc {m['accuracy']*100:.1f} ari {m['ari']:.3f} nmi {m['nmi']:.3f}"
                           for n, m in record["metrics"].items())
        return f"round {record['round']:>3}/{self.rounds}  {record['seconds']:6.1f}s  [{times}]  {scores}"


def train_alternate(graph: Graph, rounds: int, **kwargs) -> list[dict]:
    """Build an :class:`AlternateTrainer` and run it; returns the per-round history."""
    return AlternateTrainer(graph, rounds=rounds, **kwargs).run()


class JointTrainer(AlternateTrainer):
    """Joint training of a graph's differentiable modules on one summed objective.

    Takes the arguments of :class:`AlternateTrainer`, and these:

    Args:
        epochs: passes over the items per round (the non-differentiable modules step once per round).
        batch_size: items per minibatch.
        warmup: the first ``warmup`` rounds are alternate rounds (a pretraining: each module
            learns alone from the messages it has, as in SERKET), the rest joint.

    The differentiable modules are those implementing :class:`~serket.module.JointTraining`.
    Each round: they receive the latest messages and run
    :meth:`~serket.module.JointTraining.joint_begin`; ``epochs`` passes of minibatches, each a
    forward pass through those modules children-first, one backward pass through the sum of
    their losses, and a step of every module's ``joint_optimizer()``; then, children first, each
    receives what the modules below it have just published (this round's latent),
    :meth:`~serket.module.JointTraining.joint_end` runs, the round is counted as one update of
    it (``n_updates``) and its messages are published; so what an upper module sends, and the
    categories the metrics read, come from this round's latent. Then the other nodes of the
    schedule step in their order.
    """

    def __init__(self, graph: Graph, *, rounds: int, epochs: int = 1, batch_size: int = 500,
                 warmup: int = 0, **kwargs):
        self.epochs = check_int("JointTrainer", "epochs", epochs, minimum=1)
        self.batch_size = check_int("JointTrainer", "batch_size", batch_size, minimum=1)
        self.warmup = check_int("JointTrainer", "warmup", warmup, minimum=0)
        super().__init__(graph, rounds=rounds, **kwargs)
        order = {n: i for i, n in enumerate(graph.schedule())}
        self.differentiable = sorted((n for n, m in graph.modules.items() if isinstance(m, JointTraining)),
                                     key=order.__getitem__)
        if not self.differentiable:
            raise GraphError("joint training needs at least one differentiable module; "
                             f"none of {sorted(graph.modules)} is (use mode='alternate')")
        diff = set(self.differentiable)
        # live routes: head-to-tail edges between two differentiable modules carry the lower
        # module's tensor up, with its graph attached unless the edge is one-way
        self.routes: list[tuple[str, str, str, str, bool]] = []
        self.scored: dict[str, set[str]] = {n: set() for n in self.differentiable}
        for c in graph.connections():
            if c.kind == HEAD_TO_TAIL and c.parent in diff and c.child in diff and c.blocked != "up":
                attached = c.blocked != "down"
                self.routes.append((c.child, c.child_port, c.parent, c.parent_port, attached))
                if attached:
                    self.scored[c.child].add(c.child_port)

    def round_mode(self, r: int) -> str:
        return "alternate" if r <= self.warmup else "joint"

    def trainer_settings(self) -> dict:
        return {"mode": "joint", "epochs": self.epochs, "batch_size": self.batch_size, "warmup": self.warmup}

    def _items(self) -> int:
        counts = {}
        for name in self.differentiable:
            for port, message in self.graph.node(name).inbox.items():
                counts[f"{name}.{port}"] = message.n_items
        if not counts:
            raise DataError(f"joint training: the differentiable modules {self.differentiable} have no data")
        if len(set(counts.values())) > 1:
            raise DataError(f"joint training needs the same items on every port of the differentiable "
                            f"modules; they hold {counts}")
        return next(iter(counts.values()))

    def _run_round(self, r: int) -> dict[str, float]:
        if r <= self.warmup:
            return super()._run_round(r)
        graph = self.graph
        with self._meter.measure("joint"):
            self._joint_round(r)
        diff = set(self.differentiable)
        for name in self.schedule:
            if name in diff:
                continue
            with self._meter.measure(name):
                graph.step(name)
        return self._meter.seconds

    def _joint_round(self, r: int) -> None:
        """The joint part of a round: the differentiable modules' epochs and their publishing."""
        graph, device = self.graph, self.graph.device
        for name, node in graph.nodes.items():  # data first: observations publish what they hold
            if isinstance(node, Observation):
                graph.store(name)
        modules = {n: graph.deliver(n) for n in self.differentiable}
        for m in modules.values():
            m.joint_begin()
        n_items = self._items()
        optimizers = [o for o in (m.joint_optimizer() for m in modules.values()) if o is not None]
        scored = {n: frozenset(s) for n, s in self.scored.items()}
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed((graph.seed or 0) + r, "joint-trainer"))
        for _ in range(self.epochs):
            order = torch.randperm(n_items, generator=generator, device=device)
            for start in range(0, n_items, self.batch_size):
                idx = order[start:start + self.batch_size]
                outputs: dict[str, dict] = {}
                loss = None
                for name, module in modules.items():
                    live = {}
                    for child, cport, parent, pport, attached in self.routes:
                        if parent == name and cport in outputs.get(child, {}):
                            value = outputs[child][cport]
                            live[pport] = value if attached else value.detach()  # tensor or Rows
                    part, outputs[name] = module.joint_forward(idx, live, scored[name])
                    if part is not None:
                        loss = part if loss is None else loss + part
                if loss is None:
                    raise GraphError(f"joint training: none of {self.differentiable} returned a loss")
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in optimizers:
                    opt.step()
        for name, module in modules.items():
            # children end first and store what they publish; each module then receives it
            # before its own joint_end, so what it sends next (and its predictions, which the
            # metrics read) comes from this round's latent, not the one the round began with
            graph.deliver(name)
            module.joint_end()
            module.n_updates += 1  # a joint round is one update of each module in it
            graph.store(name)


def train_joint(graph: Graph, rounds: int, **kwargs) -> list[dict]:
    """Build a :class:`JointTrainer` and run it; returns the per-round history."""
    return JointTrainer(graph, rounds=rounds, **kwargs).run()


def train(graph: Graph, rounds: int, *, mode: str = "alternate", **kwargs) -> list[dict]:
    """Train ``graph`` for ``rounds`` rounds, ``mode="alternate"`` or ``"joint"``: the one flag
    that switches a graph between the two (joint-only options: ``epochs``, ``batch_size``, ``warmup``)."""
    if mode == "alternate":
        joint_only = sorted(set(kwargs) & JOINT_ONLY)
        if joint_only:
            raise ConfigError(f"train: {', '.join(joint_only)} only apply to mode='joint' "
                              f"(alternate rounds train each module with its own settings)")
        return train_alternate(graph, rounds, **kwargs)
    if mode == "joint":
        return train_joint(graph, rounds, **kwargs)
    raise ConfigError(f"train: mode must be 'alternate' or 'joint', got {mode!r}")


JOINT_ONLY = frozenset({"epochs", "batch_size", "warmup"})
