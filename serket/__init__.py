"""neuro-serket: cognitive architectures from modules that learn by passing messages."""

import os as _os

# Spinning OpenMP workers made small torch steps many times slower on shared machines.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CheckpointError, DataError, GraphError, MessageError, PortError, SerketError
from .messages import Categorical, Counts, Gaussian, Message, NBest, Samples
from .module import Module, Port

__version__ = "0.1.0"
