"""Audio: WAV files, the speech front end, the features the speech architectures use, and
digits synthesized by text-to-speech engines.

- :mod:`serket.audio.wav`: reading WAV files with errors that name them; resampling;
- :mod:`serket.audio.frontend`: waveforms -> MFCC / log-mel frames, deltas, normalisation;
- :mod:`serket.audio.features`: frame sequences and pooled vectors of utterances;
- :mod:`serket.audio.synthesis`: spoken digits from espeak-ng, flite and festival (subprocesses).
"""

from . import features, frontend, synthesis, wav
from .features import *  # noqa: F403
from .frontend import *  # noqa: F403
from .synthesis import *  # noqa: F403
from .wav import *  # noqa: F403

__all__ = [*wav.__all__, *frontend.__all__, *features.__all__, *synthesis.__all__]
