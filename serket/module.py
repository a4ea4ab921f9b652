"""The module protocol: what an author writes, and what the base class does for them.

Every node of a graph — a module, an observation, a combiner — is a :class:`Node`: it has a
name, declares its ports (:class:`Port`), receives messages on them, updates, and publishes one
message per port. A :class:`Module` is a node that is a generative model: a ``torch.nn.Module``
with its own seeded random stream, which can also be used alone (:meth:`Module.fit`).

An author of a module writes

* ``__init__``: store every argument under its own name (``self.sweeps = sweeps``). The
  signature *is* the declaration of the module's settings: printing the module shows them, and a
  checkpoint refuses to resume with other ones (:func:`settings`);
* :meth:`~Node.ports`, :meth:`~Node.update` (learn from :attr:`~Node.inbox`), :meth:`~Node.publish`
  and, where the module has categories, :meth:`~Node.predict`;
* learned state as attributes whose names end in ``_`` (``means_``, ``topics_``, an optimiser
  ``optimizer_``), created in ``__init__`` (``None`` until learned). The base class saves,
  restores and moves them, whatever their shape; private attributes named ``_cached_...`` are
  derived caches, dropped whenever state is loaded or the module moves.

The base class counts updates (:attr:`Module.n_updates`), seeds the module's stream from the
graph seed and its name, converts and checks what arrives, and moves everything between devices.
Two optional protocols stand apart: :class:`JointTraining` (below) for modules that take part in
joint training's summed objective, and :class:`~serket.inference.SharedCategory` for modules whose
category can be fitted jointly with other modules'.
"""

from __future__ import annotations

import functools
import inspect
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .errors import ConfigError, DataError, GraphError, MessageError, PortError
from .validation import check_int, owner_name
from .messages import MESSAGE_KINDS, Message, as_float_data

__all__ = ["Port", "Node", "Module", "JointTraining", "Rows", "settings", "resolve_device", "derive_seed"]


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



# --- settings: the __init__ signature is the declaration ---------------------------------------
_NOT_SETTINGS = frozenset({"self", "name", "device"})


def _setting_names(cls) -> tuple[str, ...]:
    names = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass in (Node, Module, object) or klass.__module__.startswith("torch"):
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _NOT_SETTINGS or p.name in names:
                continue
            names.append(p.name)
        break  # the most derived __init__ declares the settings
    return tuple(names)


def _plain(value):
    """``value`` as plain data (numbers, strings, tuples, dicts of them), or ``None`` plus False."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value, True
    if isinstance(value, torch.device):
        return str(value), True
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return tuple(i for i, _ in items), all(ok for _, ok in items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in sorted(value.items())}
        return {k: i for k, (i, _) in items.items()}, all(ok for _, ok in items.values())
    return None, False


def settings(node) -> dict:
    """A node's settings, read from its ``__init__`` signature: each argument's stored value,
    by name, as plain data (data tensors, such as an observation's, are left out: the graph's
    fingerprint holds a digest of them instead). The printed form of a node and the checkpoint
    fingerprint both come from here, so no setting can be missed by one and not the other."""
    out = {}
    for key in _setting_names(type(node)):
        if not hasattr(node, key):
            raise ConfigError(f"{owner_name(node)}: __init__ takes {key!r} but does not store it as "
                              f"self.{key}; every argument of __init__ must be kept under its own name")
        value, ok = _plain(getattr(node, key))
        if ok:
            out[key] = value
    return out


# --- learned state: attributes named with a trailing underscore ---------------------------------
def _is_learned(key: str) -> bool:
    return key.endswith("_") and not key.startswith("_")


def _pack(value):
    """Learned state as what ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu()}
    if isinstance(value, Message):
        return {"message": value.state()}
    if isinstance(value, torch.Generator):
        return {"generator": value.get_state(), "device": str(value.device)}
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return {"state_dict": value.state_dict()}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [_pack(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": {k: _pack(v) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"plain": value}
    raise ConfigError(f"learned state of type {type(value).__name__} cannot be saved; keep tensors, "
                      f"numbers, strings, messages, optimisers and lists or dicts of them")


def _unpack(packed, current, device):
    kind = "generator" if "generator" in packed else next(iter(packed))  # a generator also records its device
    value = packed[kind]
    if kind == "tensor":
        # a copy: a state dict made on this device holds the saving module's own tensors, which
        # its next update may change in place (a Gibbs chain's assignments)
        return value.to(device, copy=True)
    if kind == "message":
        return Message.from_state(value).to(device)
    if kind == "generator":
        if isinstance(current, torch.Generator) and current.device.type == torch.device(packed["device"]).type:
            current.set_state(value)
        return current
    if kind == "state_dict":
        current.load_state_dict(value)  # an optimiser: restored in place, tensors follow its params
        return current
    if kind in ("list", "tuple"):
        items = [_unpack(v, None, device) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {k: _unpack(v, (current or {}).get(k) if isinstance(current, dict) else None, device)
                for k, v in value.items()}
    return value


def _moved(value, device, changed: bool):
    if isinstance(value, (torch.Tensor, Message)):
        return value.to(device)
    if isinstance(value, list):
        return [_moved(v, device, changed) for v in value]
    if isinstance(value, tuple):
        return tuple(_moved(v, device, changed) for v in value)
    if isinstance(value, dict):
        return {k: _moved(v, device, changed) for k, v in value.items()}
    if changed and isinstance(value, torch.optim.Optimizer):
        value.load_state_dict(value.state_dict())  # casts its state to where its parameters now are
    return value


class Node:
    """One node of a graph: a name, ports, an inbox, ``update`` and ``publish``.

    Modules, observations and the connection nodes share this base. A subclass declares
    :meth:`ports` and fills in :meth:`update` and :meth:`publish` (and :meth:`predict` where it has
    categories); its settings are its ``__init__`` arguments and its learned state its attributes
    ending in ``_`` (see the module docstring).
    """

    def __init__(self, name: str, device="cpu"):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name
        self.inbox: dict[str, Message] = {}  # the last message received on each port
        self._device = resolve_device(device, self)

    @property
    def device(self) -> torch.device:
        """Where the node's tensors live."""
        return self._device

    # --- the protocol ---------------------------------------------------------------------------
    def ports(self) -> dict[str, Port]:
        """The node's ports by name."""
        raise NotImplementedError(f"{type(self).__name__} must declare its ports")

    def update(self) -> None:
        """Learn (or combine), given the latest messages in :attr:`inbox`."""

    def publish(self) -> dict[str, Message]:
        """The outgoing message on each port that has one."""
        return {}

    def predict(self, **messages) -> torch.Tensor | None:
        """A category per item, when the node has categories; else ``None``.

        Without arguments: for the items it learned from. With ``port=message`` arguments: for
        new items, without learning from them (the argmax of the categorical message that
        :meth:`infer` returns, times a prior given on that port). A subclass overrides the first
        case only; the base class routes calls with arguments through :meth:`infer`.
        """
        return self._predict_new(messages) if messages else None

    def _predict_new(self, messages: dict) -> torch.Tensor | None:
        given = self._new_items(messages)
        return self._categories(given, self._infer_new(given))

    def _new_items(self, messages: dict) -> dict[str, Message]:
        """New items for :meth:`infer`, converted and checked as by ``receive`` (against each
        other, not against the inbox, which is left as it was), one number of items on every port."""
        messages = {port: m for port, m in messages.items() if m is not None}
        if not messages:
            raise DataError(f"{self._who()}: infer needs new items on at least one of its ports "
                            f"{sorted(self.ports())}")
        learned_inbox, self.inbox = self.inbox, {}
        try:
            # _check_input compares a port's items with the other ports' in the inbox: here,
            # with the other new items given, never with what the node learned from
            for port, message in messages.items():
                message = self._incoming(port, message)
                self._check_input(port, message)
                self.inbox[port] = message
            given = self.inbox
        finally:
            self.inbox = learned_inbox
        counts = {port: m.n_items for port, m in given.items()}
        if len(set(counts.values())) > 1:
            raise DataError(f"{self._who()}: the new items differ in number between ports: {counts}")
        return given

    def _infer_new(self, given: dict[str, Message]) -> dict[str, Message]:
        """The node's own ``infer`` on checked new items (:meth:`_new_items`), without
        gradients; what it returns must be one message row per new item."""
        infer = type(self).infer
        with torch.no_grad():
            out = getattr(infer, "__wrapped__", infer)(self, **given)
        n = next(iter(given.values())).n_items
        for port, message in out.items():
            if not isinstance(message, Message) or message.n_items != n:
                raise MessageError(f"{self._who()}: infer returned {type(message).__name__} on port "
                                   f"{port!r} for {getattr(message, 'n_items', '?')} items; expected a "
                                   f"Message for each of the {n} new items")
        return out

    def _categories(self, given: dict, inferred: dict[str, Message]) -> torch.Tensor | None:
        """The category of each new item from the messages given (checked, on the node's
        device) and what :meth:`infer` returned for them: the argmax of the
        first categorical message it sent, times the prior given on the same port if one was
        (a module's category message leaves its received prior out, as in training); ``None``
        without a categorical message."""
        for port, message in inferred.items():
            if message.kind != "categorical":
                continue
            log_p = message.probs.clamp_min(1e-30).log()
            prior = given.get(port)
            if prior is not None and prior.kind == "categorical":
                log_p = log_p + prior.probs.clamp_min(1e-30).log()
            return log_p.argmax(dim=1)
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        infer = cls.__dict__.get("infer")
        if infer is not None and not getattr(infer, "_serket_wrapped", False):
            cls.infer = _checked_infer(infer)
        predict = cls.__dict__.get("predict")
        if predict is not None and not getattr(predict, "_serket_wrapped", False):
            cls.predict = _routed_predict(predict)

    def receive(self, port: str, message) -> None:
        """Take a message on a port: checked against the port's declaration, moved to the node's
        device and kept in :attr:`inbox` (a plain tensor becomes the port's first accepted kind
        among ``samples``, ``counts`` and ``categorical``)."""
        message = self._incoming(port, message)
        self._check_input(port, message)
        self.inbox[port] = message

    def infer(self, **messages) -> dict[str, Message]:
        """For new items: the messages the node would send on its other ports, given messages (or
        tensors) for those items on some of its ports, without learning from them.

        Each ``port=message`` is checked as :meth:`receive` checks it (and against the other
        given ports: the same number of items), but nothing is kept: the learned state and the
        inbox are as before. Runs without gradients. A node that cannot infer on new items
        raises :class:`~serket.errors.GraphError` naming itself.

        Example: ``gmm.infer(x=latents)["c"]`` is the :class:`~serket.messages.Categorical`
        posterior over the clusters of each new latent.
        """
        raise GraphError(f"{self._who()} cannot infer on new items (it does not implement infer)")

    def _incoming(self, port: str, message) -> Message:
        """``message`` (a Message or tensor) checked against ``port``'s declaration, on the node's
        device and in its parameters' dtype."""
        if isinstance(message, torch.Tensor):
            message = self._wrap_tensor(port, message)
        if not isinstance(message, Message):
            raise MessageError(f"{self._who()} port {port!r}: expected a Message or tensor, "
                               f"got {type(message).__name__}")
        spec = self._port(port)
        if message.kind not in spec.accepts:
            raise PortError(f"{self._who()} port {port!r} does not accept {message.kind!r} messages "
                            f"(it accepts {list(spec.accepts) or 'nothing'})")
        if spec.size is not None and message.size is not None and message.size != spec.size:
            raise MessageError(f"{self._who()} port {port!r}: message width {message.size} does not "
                               f"match the port's size {spec.size}")
        message = message.to(self._device)
        dtype = self._parameter_dtype()
        if dtype is not None:  # data of any float dtype, converted once, to what the weights are
            message = message.astype(dtype)
        return message

    def _check_input(self, port: str, message: Message) -> None:
        """May be overridden: module-specific checks of what arrives (data ranges, item counts);
        raise :class:`~serket.errors.DataError` naming the port."""

    # --- what the base class does ---------------------------------------------------------------
    def _who(self) -> str:
        return f"{'module' if isinstance(self, Module) else 'node'} {self.name!r} ({type(self).__name__})"

    def _port(self, name: str) -> Port:
        ports = self.ports()
        if name not in ports:
            raise PortError(f"{self._who()} has no port {name!r}; its ports are {sorted(ports)}")
        return ports[name]

    def _parameter_dtype(self) -> torch.dtype | None:
        return None

    def _wrap_tensor(self, port: str, tensor: torch.Tensor) -> Message:
        kinds = [k for k in self._port(port).accepts if k in ("samples", "counts", "categorical")]
        kind = kinds[0] if kinds else "samples"
        owner = f"{self._who()} port {port!r}"
        if kind == "counts" and not (tensor.is_floating_point() or tensor.is_complex()):
            tensor = tensor.to(torch.get_default_dtype())  # integer counts are what counts are
        tensor = as_float_data(tensor, owner)
        try:
            return MESSAGE_KINDS[kind](tensor)
        except MessageError as err:
            raise MessageError(f"{owner}: {err}") from None

    def _learned(self) -> dict:
        return {k: v for k, v in vars(self).items() if _is_learned(k)}

    def _drop_caches(self) -> None:
        for key in [k for k in vars(self) if k.startswith("_cached_")]:
            setattr(self, key, None)

    def _node_state(self) -> dict:
        return {"inbox": {k: m.state() for k, m in self.inbox.items()},
                "learned": {k: _pack(v) for k, v in self._learned().items()}}

    def _load_node_state(self, state: dict) -> None:
        self.inbox = {k: Message.from_state(v).to(self._device) for k, v in state["inbox"].items()}
        current = self._learned()
        for key, packed in state["learned"].items():
            setattr(self, key, _unpack(packed, current.get(key), self._device))
        self._drop_caches()

    def _move_node(self, device: torch.device) -> None:
        changed, self._device = device != self._device, device
        self.inbox = {k: m.to(device) for k, m in self.inbox.items()}
        for key, value in self._learned().items():
            if isinstance(value, torch.Generator) and value.device.type != device.type:
                raise ConfigError(f"{self._who()}: learned generator {key!r} cannot move to {device}")
            setattr(self, key, _moved(value, device, changed))
        self._drop_caches()

    # torch-like verbs for nodes that are not torch modules (Module takes torch's own)
    def to(self, device):
        self._move_node(resolve_device(device, self))
        return self

    def state_dict(self) -> dict:
        return self._node_state()

    def load_state_dict(self, state: dict) -> None:
        self._load_node_state(state)

    def extra_repr(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in settings(self).items())
        return f"name={self.name!r}" + (f", {shown}" if shown else "") + f", device={self._device}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _checked_infer(infer):
    """Wrap a subclass's ``infer``: the messages arrive converted and checked
    (:meth:`Node._new_items`), it runs without gradients, and what it returns is checked
    (:meth:`Node._infer_new`)."""
    @functools.wraps(infer)
    def checked(self, **messages):
        return self._infer_new(self._new_items(messages))
    checked._serket_wrapped = True
    return checked


def _routed_predict(predict):
    """Wrap a subclass's ``predict`` (written for the items it learned from) so that a call with
    messages predicts new items through ``infer`` instead."""
    @functools.wraps(predict)
    def routed(self, **messages):
        if messages:
            return self._predict_new(messages)
        return predict(self)
    routed._serket_wrapped = True
    return routed


def _counted(update):
    """Wrap a subclass's ``update`` so that the base counts completed updates, once per call
    from outside (an ``update`` that calls ``super().update()`` is still one update)."""
    @functools.wraps(update)
    def counted(self, *args, **kwargs):
        if self._updating:
            return update(self, *args, **kwargs)
        self._updating = True
        try:
            result = update(self, *args, **kwargs)
        finally:
            self._updating = False
        self.n_updates += 1
        return result
    counted._serket_counted = True
    return counted


class Module(torch.nn.Module, Node):
    """Base class of every neuro-serket module: a :class:`Node` that is a ``torch.nn.Module``.

    Beyond :class:`Node`, a module has a ``seed`` and its own random stream (:attr:`generator`,
    derived from the seed and the module's name, so that adding a module to a graph does not
    change the numbers the others draw), counts its updates (:attr:`n_updates`) and can be used
    alone on plain tensors (:meth:`fit`). ``to(device)`` moves it, ``state_dict()`` saves its
    parameters, buffers, learned attributes, inbox and stream, so that a resumed run continues
    exactly.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        update = cls.__dict__.get("update")
        if update is not None and not getattr(update, "_serket_counted", False):
            cls.update = _counted(update)

    def __init__(self, name: str, *, seed: int = 0, device="cpu"):
        torch.nn.Module.__init__(self)
        Node.__init__(self, name, device)
        self.seed = check_int(self, "seed", seed)
        self.n_updates = 0  # completed updates (alternate rounds or joint rounds), counted by the base
        self._updating = False
        self.generator = torch.Generator(device=self._device)
        self.generator.manual_seed(derive_seed(self.seed, name))

    def update(self) -> None:
        """Learn, given the latest messages in :attr:`inbox`."""
        raise NotImplementedError(f"{type(self).__name__} must implement update()")

    def publish(self) -> dict[str, Message]:
        """The outgoing message on each port that has one."""
        raise NotImplementedError(f"{type(self).__name__} must implement publish()")

    def fit(self, **messages) -> "Module":
        """Use the module alone: receive each ``port=message`` (or tensor), then update once."""
        for port, message in messages.items():
            if message is not None:
                self.receive(port, message)
        self.update()
        return self

    # --- what the base class does ---------------------------------------------------------------
    def _parameter_dtype(self) -> torch.dtype | None:
        for parameter in self.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return None

    def _apply(self, fn, recurse=True):
        # torch calls _apply for .to()/.cuda()/.cpu(); keep our own tensors and device in step.
        result = super()._apply(fn, recurse)
        device = fn(torch.zeros(())).device
        if device != self._device:
            # a generator cannot move between devices: reseed one on the new device from the
            # seed and the number of updates so far, so runs stay reproducible per device
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name))
        self._move_node(device)
        return result

    def get_extra_state(self):
        state = self._node_state()
        state.update(n_updates=self.n_updates, generator=self.generator.get_state(),
                     generator_device=str(self._device))
        return state

    def set_extra_state(self, state):
        self.n_updates = int(state["n_updates"])
        if torch.device(state["generator_device"]).type == self._device.type:
            self.generator.set_state(state["generator"])
        else:
            self.generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name))
        self._load_node_state(state)

    def extra_repr(self) -> str:
        return Node.extra_repr(self)

    __repr__ = torch.nn.Module.__repr__


class JointTraining:
    """Optional protocol: a module that takes part in joint training's summed objective.

    Mix it in before :class:`Module` (``class VAE(JointTraining, Module)``) and implement
    :meth:`joint_forward` and :meth:`joint_optimizer`; :meth:`joint_begin` and :meth:`joint_end`
    are optional. Each joint round the trainer calls ``joint_begin()``, then for every minibatch
    ``joint_forward`` on every differentiable module, one backward pass through the sum of their
    losses and one step of each ``joint_optimizer()``, then ``joint_end()``; it counts the round
    as one update. Modules without this protocol are stepped between rounds instead.
    """

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
            (or :class:`Rows`) for the neighbours.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement joint_forward()")

    def joint_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser the joint trainer steps for this module."""
        raise NotImplementedError(f"{type(self).__name__} must implement joint_optimizer()")

    def joint_begin(self) -> None:
        """Called before a round of joint training, after the round's messages arrived."""

    def joint_end(self) -> None:
        """Called after a round of joint training: compute what :meth:`publish` sends next, from
        this round's parameters."""
