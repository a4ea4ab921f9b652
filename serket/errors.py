"""Errors that name what went wrong: the node, the port, the file, the shape or the value."""


class SerketError(Exception):
    """Base class of every error neuro-serket raises on purpose."""


def with_context(error: SerketError, context: str) -> SerketError:
    """The same kind of error, its message prefixed by ``context`` (the node, the port, the
    round), keeping what the error carries (e.g. a message error's ``kind``)."""
    named = type(error)(f"{context}: {error}")
    named.__dict__.update(error.__dict__)
    return named


class MessageError(SerketError, ValueError):
    """A message that is not what it claims to be (shape, finiteness, normalisation, device)."""


class PortError(SerketError, KeyError):
    """A port that does not exist on a module, or a message kind the port does not take."""

    def __str__(self):  # KeyError quotes its argument; we want the sentence as written
        return str(self.args[0]) if self.args else ""


class GraphError(SerketError, ValueError):
    """A graph that cannot be trained: unknown nodes, mismatched ports, unmediated cycles."""


class DataError(SerketError, ValueError):
    """Input data that a module or loader cannot use: NaN pixels, wrong shapes, empty sets."""


class CheckpointError(SerketError, RuntimeError):
    """A checkpoint that cannot be read back (truncated, corrupt, or from another graph)."""


class ConfigError(SerketError, ValueError):
    """A setting of the wrong type or out of its range, named with the node that has it."""
