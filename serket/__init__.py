"""neuro-serket: cognitive architectures from modules that learn by passing messages.

``serket`` itself is the core (messages, the module protocol, connections, the graph, training,
checkpoints, seeding, metrics, the conformance check); beside it, :mod:`serket.datasets`,
:mod:`serket.audio` and :mod:`serket.bench` (benchmark tooling), and the module library
:mod:`serket.modules` and the ready-made architectures :mod:`serket.graphs`.
"""

import os as _os

# Spinning OpenMP workers made small torch steps many times slower on shared machines. This is the
# one place the policy is set: OpenMP reads it when torch loads, so every script imports serket
# before torch (tests/test_layout.py checks both).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CheckpointError, DataError, GraphError, MessageError, PortError, SerketError
from .messages import Categorical, Counts, Gaussian, Message, NBest, Samples
from .module import Module, Port

__version__ = "0.1.0"
