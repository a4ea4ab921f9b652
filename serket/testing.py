"""The conformance check every serket module must pass (in the manner of ``check_estimator``).

``check_module(factory, inputs)`` builds modules with ``factory()`` (same seed each time), feeds
them ``inputs`` (``{port: Message}``) and checks:

1. the declared ports are well formed (known message kinds); every ``__init__`` argument is
   stored under its own name (:func:`~serket.module.settings` reads them all) and the printed
   form shows each setting;
2. what is published matches the declarations (port, kind, size, number of items, device); an
   update is counted once (``n_updates``);
3. seeded determinism: two modules from the factory publish identical messages;
4. save/load: a module restored from another's ``state_dict`` (through ``torch.save`` /
   ``torch.load(weights_only=True)``) holds the same learned state (every attribute ending in
   ``_``, each created in ``__init__``) and continues exactly as the original does;
5. device moves: ``to("cpu")`` (and ``to("cuda")`` where there is one) keeps the module working
   and its messages on the new device;
6. clear errors on bad input: an unknown port, a kind the port does not accept, a wrong width,
   non-finite values.
"""

from __future__ import annotations

import io

import torch

from .errors import ConfigError, MessageError, PortError, SerketError
from .messages import MESSAGE_KINDS, Message, Samples
from .module import settings

__all__ = ["check_module"]


def _feed(module, inputs):
    for port, message in inputs.items():
        module.receive(port, message)
    module.update()
    return module.publish()


def _same(a: dict[str, Message], b: dict[str, Message], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: published ports differ: {sorted(a)} vs {sorted(b)}"
    for port in a:
        ta, tb = a[port]._tensors(), b[port]._tensors()
        for field in ta:
            x, y = ta[field].cpu(), tb[field].cpu()
            assert x.shape == y.shape and torch.equal(x, y), f"{what}: port {port!r} field {field!r} differs"


def _check_published(module, out: dict[str, Message], n_items: int, device) -> None:
    ports = module.ports()
    for port, message in out.items():
        assert port in ports, f"{module.name}: published on undeclared port {port!r}"
        spec = ports[port]
        assert message.kind in spec.sends, f"{module.name}.{port}: sent {message.kind!r}, declares {spec.sends}"
        if spec.size is not None and message.size is not None:
            assert message.size == spec.size, f"{module.name}.{port}: width {message.size} != size {spec.size}"
        assert message.n_items == n_items, f"{module.name}.{port}: {message.n_items} items, expected {n_items}"
        assert message.device.type == torch.device(device).type, f"{module.name}.{port}: message on {message.device}"


def _same_state(a, b, what: str) -> None:
    """Learned values equal exactly: tensors, messages, generators, optimisers, containers."""
    if isinstance(a, Message) or isinstance(b, Message):
        assert type(a) is type(b), f"{what}: {type(a).__name__} vs {type(b).__name__}"
        for field, x in a._tensors().items():
            _same_state(x, b._tensors()[field], f"{what}.{field}")
    elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{what}: a tensor on one side only"
        x, y = a.detach().cpu(), b.detach().cpu()
        assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y), f"{what} differs"
    elif isinstance(a, torch.Generator):
        assert isinstance(b, torch.Generator), f"{what}: a generator on one side only"
        _same_state(a.get_state(), b.get_state(), what)
    elif hasattr(a, "state_dict") and hasattr(a, "load_state_dict"):
        _same_state(a.state_dict(), b.state_dict(), what)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _same_state(a[key], b[key], f"{what}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{what}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{what}: {a!r} vs {b!r}"  # NaN equals NaN here


def check_module(factory, inputs: dict[str, Message], *, n_items: int | None = None) -> None:
    """Run the conformance checks; raises ``AssertionError`` naming the first failure."""
    module = factory()
    name = module.name
    # 1. settings: the __init__ signature is the declaration, and printing shows it
    try:
        declared = settings(module)
    except ConfigError as err:
        raise AssertionError(f"{name}: {err}") from None
    shown = module.extra_repr()
    for key, value in declared.items():
        assert f"{key}={value!r}" in shown, f"{name}: the printed form {shown!r} does not show {key}={value!r}"
    fresh_learned = set(module._learned())
    ports = module.ports()
    assert ports, f"{name}: declares no ports"
    for spec in ports.values():
        unknown = set(spec.sends) | set(spec.accepts)
        unknown -= set(MESSAGE_KINDS)
        assert not unknown, f"{name}.{spec.name}: unknown message kinds {unknown}"
    if n_items is None:
        n_items = next(iter(inputs.values())).n_items

    # 2. declared output
    out = _feed(module, inputs)
    assert out, f"{name}: published nothing after an update"
    _check_published(module, out, n_items, module.device)
    assert module.n_updates == 1, f"{name}: one update counted as {module.n_updates} (the base class counts them)"
    late = sorted(set(module._learned()) - fresh_learned)
    assert not late, f"{name}: learned state {late} is not created in __init__ (set it to None there)"

    # 3. seeded determinism
    twin = factory()
    _same(out, _feed(twin, inputs), f"{name}: two modules with the same seed")

    # 4. save / load round trip, through bytes as a checkpoint would
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    restored = factory()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.n_updates == module.n_updates, f"{name}: n_updates not restored"
    for key, value in module._learned().items():
        _same_state(value, getattr(restored, key), f"{name}: learned {key} after a save/load round trip")
    _same(_feed(module, inputs), _feed(restored, inputs), f"{name}: a module restored from its state dict")

    # 5. device moves
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        moved = factory().to(device)
        assert moved.device.type == device, f"{name}: to({device!r}) left it on {moved.device}"
        _check_published(moved, _feed(moved, inputs), n_items, device)

    # 6. clear errors on bad input
    fresh = factory()
    _expect(PortError, lambda: fresh.receive("no-such-port", next(iter(inputs.values()))), name, "unknown port")
    for port, spec in ports.items():
        wrong = [k for k in ("samples", "categorical") if k not in spec.accepts]
        if spec.accepts and wrong:
            bad = Samples(torch.zeros(n_items, spec.size or 3)) if wrong[0] == "samples" else \
                MESSAGE_KINDS["categorical"](torch.full((n_items, spec.size or 3), 1.0 / (spec.size or 3)))
            _expect(PortError, lambda: fresh.receive(port, bad), name, f"kind {bad.kind!r} on port {port!r}")
        if spec.size is not None and "samples" in spec.accepts:
            _expect(MessageError, lambda: fresh.receive(port, Samples(torch.zeros(n_items, spec.size + 1))),
                    name, f"wrong width on port {port!r}")
    _expect(MessageError, lambda: Samples(torch.tensor([[float("nan")]])), name, "NaN values")


def _expect(error, action, name, what):
    try:
        action()
    except error as err:
        assert str(err), f"{name}: {what} raised {type(err).__name__} with no message"
        return
    except SerketError as err:
        raise AssertionError(f"{name}: {what} raised {type(err).__name__}, expected {error.__name__}: {err}")
    raise AssertionError(f"{name}: {what} was accepted silently")
