"""Errors that name what went wrong: the node, the port, the file, the shape or the value."""


class SerketError(Exception):
    """Base class of every error neuro-serket raises on purpose."""


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
