"""Checks of settings at construction, each failing with a :class:`ConfigError` that names the
owner (``"VAE 'vae'"``), the setting, the range it must lie in and the value it got.

    epochs = check_int(self, "epochs", epochs, minimum=1)
    lr = check_real(self, "lr", lr, above=0)
"""

from __future__ import annotations

import math
import numbers

from .errors import ConfigError, MessageError

__all__ = ["owner_name", "check_int", "check_real", "check_choice", "check_sizes", "check_items"]


def owner_name(owner) -> str:
    """``"VAE 'vae'"`` for a node with a name, the class or the string itself otherwise."""
    if isinstance(owner, str):
        return owner
    name = getattr(owner, "name", None)
    return f"{type(owner).__name__} {name!r}" if name is not None else type(owner).__name__


def check_int(owner, setting: str, value, *, minimum: int | None = None, maximum: int | None = None,
              none: bool = False):
    """``value`` as an int in [minimum, maximum] (None allowed when ``none``)."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{owner_name(owner)}: {setting} must be an integer, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None
                  else f"in [{minimum}, {maximum}]")
        raise ConfigError(f"{owner_name(owner)}: {setting} must be an integer {bounds}, got {value!r}")
    return value


def check_real(owner, setting: str, value, *, above: float | None = None, minimum: float | None = None,
               maximum: float | None = None, none: bool = False):
    """``value`` as a finite float, ``> above``, ``>= minimum`` and ``<= maximum`` where given."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{owner_name(owner)}: {setting} must be a number, got {value!r}")
    value = float(value)
    wanted = [f"> {above:g}" if above is not None else "", f">= {minimum:g}" if minimum is not None else "",
              f"<= {maximum:g}" if maximum is not None else ""]
    if (not math.isfinite(value) or (above is not None and not value > above)
            or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)):
        rule = " and ".join(w for w in wanted if w)
        raise ConfigError(f"{owner_name(owner)}: {setting} must be a finite number"
                          f"{' ' + rule if rule else ''}, got {value!r}")
    return value


def check_choice(owner, setting: str, value, choices):
    """``value`` if it is one of ``choices``."""
    if value not in tuple(choices):
        raise ConfigError(f"{owner_name(owner)}: {setting} must be one of {list(choices)}, got {value!r}")
    return value


def check_sizes(owner, setting: str, values, *, minimum: int = 1, allow_empty: bool = False) -> tuple:
    """A sequence of integer sizes (hidden widths, vocabulary sizes), each >= ``minimum``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{owner_name(owner)}: {setting} must be a sequence of integers, got {values!r}")
    values = tuple(values)
    if not values and not allow_empty:
        raise ConfigError(f"{owner_name(owner)}: {setting} must hold at least one size, got {values!r}")
    for value in values:
        check_int(owner, f"{setting} entries", value, minimum=minimum)
    return tuple(int(v) for v in values)


def check_items(owner, what: str, n_items: int, reference: str, n_reference: int) -> None:
    """Refuse two things that must describe the same items but do not (a prior with 300 items
    for data with 500): a :class:`~serket.errors.MessageError` naming both and their counts."""
    if int(n_items) != int(n_reference):
        raise MessageError(f"{owner_name(owner)}: {what} has {int(n_items)} items but {reference} has "
                           f"{int(n_reference)}")
