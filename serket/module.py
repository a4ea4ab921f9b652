"""The module protocol: one generative model that talks to the rest only through its ports.

A module

* declares its ports (:class:`Port`): the variables it shares, and the message kinds it sends
  and accepts on each;
* receives messages on those ports (:meth:`Module.receive`) — its data, or priors and
  posteriors from the modules it is connected to;
* learns in :meth:`Module.update` given what it last received;
* publishes one message per port in :meth:`Module.publish`.

A module never imports another module. It works alone on plain tensors through
:meth:`Module.fit`, so it can be tested and used without a graph.

Modules are ``torch.nn.Module`` subclasses: ``to(device)`` moves them, ``state_dict()`` saves
their parameters, buffers and (through ``get_extra_state``) everything else they learned,
including their random generator, so that a run resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .errors import ConfigError, MessageError, PortError
from .validation import check_int, owner_name
from .messages import MESSAGE_KINDS, Message, as_float_data

__all__ = ["Port", "Module", "Rows", "resolve_device", "derive_seed"]


@dataclass(frozen=True)
class Port:
    """A named variable a module shares.

    Args:
        name: the variable's name in the field's words (``"z"``, ``"c"``, ``"x"``).
        sends: message kinds the module publishes on this port.
        accepts: message kinds the module takes on this port.
        size: the width of the payload (latent dimension, number of categories, vocabulary),
            or ``None`` when any width is fine.
        doc: one line on what the port carries.
    """

    name: str
    sends: tuple[str, ...] = ()
    accepts: tuple[str, ...] = ()
    size: int | None = None
    doc: str = ""

    def __str__(self):
        sends = "/".join(self.sends) or "-"
        accepts = "/".join(self.accepts) or "-"
        size = "" if self.size is None else f"[{self.size}]"
        return f"{self.name}{size} (sends {sends}; accepts {accepts})"


class Rows(NamedTuple):
    """A live tensor with several rows per minibatch item, for joint training.

    ``values`` (R, D) with their autograd graph; ``items`` (R,) the position of each row's item
    in the minibatch; ``weights`` (R,) each row's weight in the objective (0 for rows that do
    not count, such as a missing modality's). A module that sends one row per item sends a
    plain (B, D) tensor instead.
    """

    values: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor

    def detach(self) -> "Rows":
        return Rows(self.values.detach(), self.items, self.weights)


def resolve_device(device, owner=None) -> torch.device:
    """``"auto"`` (or None) picks CUDA when present; otherwise ``"cpu"``, ``"cuda"``, ``"cuda:N"``
    or a ``torch.device`` of those types. Anything else, or CUDA asked for where there is none,
    is a :class:`~serket.errors.ConfigError` naming ``owner`` (a module, a graph) and the device."""
    who = f"{owner_name(owner)}: " if owner is not None else ""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wanted = "'auto', 'cpu', 'cuda' or 'cuda:N'"
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"{who}device must be {wanted}, got {device!r}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{who}device must be {wanted}, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"{who}device must be {wanted}, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{who}device {str(resolved)!r} was asked for, but CUDA is not available here")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"{who}device {str(resolved)!r} was asked for, but this machine has "
                              f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return resolved


def derive_seed(seed: int, name: str) -> int:
    # Each module draws from its own stream, derived from the graph seed and its name, so that
    # adding a module to a graph does not change the random numbers the others see.
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


class Module(torch.nn.Module):
    """Base class of every neuro-serket module.

    Subclasses set their configuration in ``__init__``, declare :meth:`ports`, and fill in
    :meth:`update` and :meth:`publish`; they may override :meth:`predict` (a category per item,
    for metrics) and :meth:`_check_input` (clear errors on bad data).
    """

    def __init__(self, name: str, *, seed: int = 0, device="cpu"):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name
        self.seed = check_int(self, "seed", seed)
        self.inbox: dict[str, Message] = {}
        self.n_updates = 0
        self._device = resolve_device(device, self)
        self.generator = torch.Generator(device=self._device)
        self.generator.manual_seed(derive_seed(self.seed, name))

    # --- ports and messages ------------------------------------------------------------------
    def ports(self) -> dict[str, Port]:
        """The module's ports by name."""
        raise NotImplementedError(f"{type(self).__name__} must declare its ports")

    def port(self, name: str) -> Port:
        ports = self.ports()
        if name not in ports:
            raise PortError(
                f"module {self.name!r} ({type(self).__name__}) has no port {name!r}; "
                f"its ports are {sorted(ports)}"
            )
        return ports[name]

    def receive(self, port: str, message) -> None:
        """Take a message on a port (a plain tensor becomes the port's first accepted kind
        among ``samples``, ``counts`` and ``categorical``)."""
        if isinstance(message, torch.Tensor):
            message = self._wrap_tensor(port, message)
        if not isinstance(message, Message):
            raise MessageError(
                f"module {self.name!r} port {port!r}: expected a Message or tensor, "
                f"got {type(message).__name__}"
            )
        spec = self.port(port)
        if message.kind not in spec.accepts:
            raise PortError(
                f"module {self.name!r} port {port!r} does not accept {message.kind!r} messages "
                f"(it accepts {list(spec.accepts) or 'nothing'})"
            )
        if spec.size is not None and message.size is not None and message.size != spec.size:
            raise MessageError(
                f"module {self.name!r} port {port!r}: message width {message.size} does not "
                f"match the port's size {spec.size}"
            )
        message = message.to(self._device)
        dtype = self._parameter_dtype()
        if dtype is not None:  # data of any float dtype, converted once, to what the weights are
            message = message.astype(dtype)
        self._check_input(port, message)
        self.inbox[port] = message

    def _parameter_dtype(self) -> torch.dtype | None:
        """The dtype of the module's floating parameters, or None when it has none."""
        for parameter in self.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return None

    def _wrap_tensor(self, port: str, tensor: torch.Tensor) -> Message:
        kinds = [k for k in self.port(port).accepts if k in ("samples", "counts", "categorical")]
        kind = kinds[0] if kinds else "samples"
        owner = f"module {self.name!r} port {port!r}"
        if kind == "counts" and not (tensor.is_floating_point() or tensor.is_complex()):
            tensor = tensor.to(torch.get_default_dtype())  # integer counts are what counts are
        tensor = as_float_data(tensor, owner)
        try:
            return MESSAGE_KINDS[kind](tensor)
        except MessageError as err:
            raise MessageError(f"module {self.name!r} port {port!r}: {err}") from None

    def _check_input(self, port: str, message: Message) -> None:
        """Hook for module-specific checks of what arrives (data ranges, item counts)."""

    def update(self) -> None:
        """Learn, given the latest messages in the inbox."""
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def publish(self) -> dict[str, Message]:
        """The outgoing message on each port that has one."""
        raise NotImplementedError(f"{type(self).__name__} must implement publish()")

    def predict(self) -> torch.Tensor | None:
        """A category per item for metrics, when the module has categories; else ``None``."""
        return None

    def fit(self, **messages) -> "Module":
        """Use the module alone: receive each ``port=message`` (or tensor), then update once."""
        for port, message in messages.items():
            if message is not None:
                self.receive(port, message)
        self.update()
        return self

    # --- joint training (optional: differentiable modules only) -------------------------------
    def joint_forward(self, idx: torch.Tensor, live: dict, scored: frozenset) -> tuple:
        """One minibatch of joint training: ``(loss, outputs)``.

        Args:
            idx: (B,) item indices of the minibatch; the module indexes its inbox with them.
            live: ``{port: tensor}`` computed in this minibatch by differentiable neighbours
                (with their graphs attached); these replace the inbox's messages on those ports.
            scored: the module's ports whose outgoing tensor a differentiable upper module
                scores: that module adds ``-log p(z)`` to the objective, so this one must leave
                its prior term out (keeping only ``E_q[log q(z)]``).

        Returns:
            ``loss``: a scalar tensor, this module's share of the summed objective, averaged
            over the minibatch's items (or None); ``outputs``: ``{port: tensor}`` live tensors
            for the neighbours. Modules that do not override this are not differentiable: the
            joint trainer steps them between epochs instead.
        """
        raise NotImplementedError

    @property
    def differentiable(self) -> bool:
        """Whether the module takes part in joint training's summed objective."""
        return type(self).joint_forward is not Module.joint_forward

    def joint_begin(self) -> None:
        """Hook: called before a round of joint training, after the round's messages arrived."""

    def joint_end(self) -> None:
        """Hook: called after a round of joint training; compute what :meth:`publish` sends."""
        self.n_updates += 1

    def joint_optimizer(self):
        """The optimiser the joint trainer steps for this module (its ``optimizer`` by default)."""
        return getattr(self, "optimizer", None)

    # --- a category shared with other modules (the tail-to-tail combiner's joint fit) ----------
    # A module whose categorical port is shared through a combiner may let the combiner fit the
    # shared category jointly: the combiner then runs EM over all members from several starts and
    # keeps the start with the highest joint likelihood. The four hooks below are pure except
    # ``category_adopt``; ``port`` is the categorical port connected to the combiner.
    def category_start(self, port: str, generator: torch.Generator) -> torch.Tensor:
        """(N, K) responsibilities of a fresh start drawn from this module's own data alone."""
        raise NotImplementedError(f"{type(self).__name__} cannot share a category jointly")

    def category_fit(self, port: str, responsibilities: torch.Tensor):
        """The parameters of the module's per-category distributions refitted to (N, K) soft
        responsibilities (the module itself is left unchanged)."""
        raise NotImplementedError(f"{type(self).__name__} cannot share a category jointly")

    def category_log_likelihood(self, port: str, params) -> torch.Tensor:
        """(N, K) float64 ``log p(item i's data | category k)`` under ``params`` (from
        :meth:`category_fit`), up to a per-item constant, the module's evidence weight included."""
        raise NotImplementedError(f"{type(self).__name__} cannot share a category jointly")

    def category_adopt(self, port: str, responsibilities: torch.Tensor, params) -> None:
        """Install the joint fit: the module's learned state follows ``responsibilities`` and
        ``params``, and its next :meth:`update` continues from there."""
        raise NotImplementedError(f"{type(self).__name__} cannot share a category jointly")

    @property
    def shares_categories(self) -> bool:
        """Whether the module implements the shared-category hooks."""
        return type(self).category_fit is not Module.category_fit

    # --- devices and state -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def _apply(self, fn, recurse=True):
        # torch calls _apply for .to()/.cuda()/.cpu(); keep our own tensors and device in step.
        result = super()._apply(fn, recurse)
        probe = fn(torch.zeros(()))
        if probe.device != self._device:
            self._device = probe.device
            # a generator cannot move between devices: reseed one on the new device from the
            # seed and the number of updates so far, so runs stay reproducible per device
            self.generator = torch.Generator(device=self._device)
            self.generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name))
        self.inbox = {k: m.to(self._device) for k, m in self.inbox.items()}
        self._move_state(self._device)
        return result

    def _move_state(self, device: torch.device) -> None:
        """Hook: move learned tensors that are neither parameters nor buffers."""

    def _learned_state(self) -> dict:
        """Hook: learned state beyond parameters and buffers (plain tensors, ints, dicts)."""
        return {}

    def _load_learned_state(self, state: dict) -> None:
        """Hook: the inverse of :meth:`_learned_state`."""

    def get_extra_state(self):
        return {
            "n_updates": self.n_updates,
            "generator": self.generator.get_state(),
            "generator_device": str(self._device),
            "inbox": {k: m.state() for k, m in self.inbox.items()},
            "learned": self._learned_state(),
        }

    def set_extra_state(self, state):
        self.n_updates = int(state["n_updates"])
        if torch.device(state["generator_device"]).type == self._device.type:
            self.generator.set_state(state["generator"])
        else:
            self.generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name))
        self.inbox = {k: Message.from_state(v).to(self._device) for k, v in state["inbox"].items()}
        self._load_learned_state(state["learned"])
        self._move_state(self._device)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, device={self._device}"

    def describe(self) -> str:
        """One line per port, for graph summaries."""
        lines = [f"{self.name}: {type(self).__name__}"]
        lines += [f"  port {p}" for p in self.ports().values()]
        return "\n".join(lines)
