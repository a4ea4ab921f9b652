"""A speech recogniser that learns its acoustic units from the audio alone.

No labels and no vocabulary are given. The recogniser discovers ``n_units`` acoustic units —
diagonal Gaussians over speech frames (the front end's features plus the frame's relative
position in the utterance, so that a unit also says *when* in a word it sounds) — first by
k-means over all frames, then by relearning from hypotheses. A "word" here is a discovered
unit; a whole-utterance hypothesis is the sequence of units of its frames.

Decoding: each frame's posterior over units, ``q(u | f) ∝ w_u N(f; m_u, diag(v_u))``. The
N-best list of an utterance holds the best path (the most probable unit of every frame) and
``n_best - 1`` paths drawn from the frame posteriors, each with its log score
``sum_t log q(u_t | f_t)``. Drawn paths make the list a proper proposal for
sampling-importance-resampling: the head-to-head node weights each path by another module's
word probabilities P(u | d) and resamples one; the recogniser relearns its units (means,
variances, unigram weights) from the frames' resampled units, blending the new estimates into
the old by ``relearn_rate``, and decodes again.

Ports:
    ``audio`` (accepts ``sequences``, size D): padded feature frames and their counts.
    ``w`` (sends ``nbest``, accepts ``nbest``, size ``n_units``): N-best unit paths out;
    the resampled path of each utterance (B = 1) in.

Without resampled hypotheses the recogniser decodes once and keeps its N-best (the
"recogniser alone" baseline). New utterances are decoded the same way by
:meth:`Recognizer.infer`, with the learned units and a fresh stream for the drawn paths.
"""

from __future__ import annotations

import math

import torch

from serket.clustering import kmeans
from serket.errors import ConfigError, DataError, MessageError
from serket.messages import NBest, Sequences
from serket.module import Module, Port, derive_seed
from serket.sampling import gumbel_noise
from serket.validation import check_int, check_items, check_real

__all__ = ["Recognizer", "diagonal_gaussian_log_likelihood"]

# uniforms for the Gumbel draws are kept off 0 and 1, where log(-log(u)) is infinite in float32
_UNIFORM_FLOOR, _UNIFORM_CEILING = 1e-12, 1 - 1e-7
# ridge added to the within-unit scatter, relative to its mean variance: keeps it invertible
# when some units hold too few frames to span every dimension
_WITHIN_RIDGE = 1e-4
# frames whose N-best draws are made together (the noise of one block is chunk x (B - 1) x U)
_DECODE_CHUNK = 4096


def _unit_dtype(n_units: int) -> torch.dtype:
    """The smallest integer type that holds unit ids 0..n_units-1 and the padding -1: the N-best
    hypotheses (N, B, frames) are mostly padding and the largest tensor of a run, so int16 where
    it suffices (a quarter of int64). Indexing converts to int64 a block at a time."""
    return torch.int16 if n_units <= torch.iinfo(torch.int16).max else torch.int32


def diagonal_gaussian_log_likelihood(frames, means, variances, *, chunk: int = 32768):
    """log N(f; m_u, diag(v_u)) for every frame and unit: (M, U), computed in chunks."""
    const = -0.5 * (variances.log().sum(1) + means.shape[1] * math.log(2 * math.pi))  # (U,)
    precision = 1.0 / variances                                                  # (U, D)
    mp = means * precision
    mmp = (means * mp).sum(1)                                                    # (U,)
    out = []
    for start in range(0, frames.shape[0], chunk):
        f = frames[start:start + chunk]
        quad = (f * f) @ precision.T - 2.0 * f @ mp.T + mmp                      # (m, U)
        out.append(const - 0.5 * quad)
    return torch.cat(out)


class Recognizer(Module):
    """Unsupervised recogniser over discovered acoustic units, with N-best output.

    Args:
        name: node name.
        n_units: U, the number of acoustic units (the recogniser's vocabulary).
        dim: D, feature values per frame (the front end's dimension).
        n_best: hypotheses per utterance (the best path and ``n_best - 1`` drawn paths).
        position_weight: scale of the relative-position feature appended to each frame
            (0 switches it off).
        relearn_rate: weight of the estimates from resampled hypotheses when blended into the
            current units (1 = replace them).
        shrinkage: each unit's variance is shrunk towards the pooled variance by this share.
        variance_floor: smallest variance per dimension.
        restarts, iterations: restarts and Lloyd iterations of the first k-means over the frames
            (:func:`serket.clustering.kmeans`; the restart with the least inertia is kept).
        discriminant: when set, relearning also learns a linear projection of the frames to
            this many dimensions that best separates the resampled units (Fisher's criterion:
            between-unit against within-unit scatter), and models the units in that space.
            None (default): units live in the front end's feature space.
        seed, device: see :class:`serket.module.Module`.

    Learned state: ``means_``, ``variances_`` (U, D') and ``log_weights_`` (U,) of the units
    (D' = ``discriminant`` when set, else D + 1), ``projection_`` (D + 1, D') or None,
    ``nbest_`` (the N-best list sent on ``w``, its unit ids int16 up to 32,767 units),
    ``n_relearned_`` (relearnings so far).
    """

    def __init__(self, name: str, n_units: int = 64, dim: int = 39, *, n_best: int = 10,
                 position_weight: float = 2.0, relearn_rate: float = 0.5, shrinkage: float = 0.1,
                 variance_floor: float = 1e-3, restarts: int = 3, iterations: int = 25,
                 discriminant: int | None = None, seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.n_units = check_int(self, "n_units", n_units, minimum=2)
        self.dim = check_int(self, "dim", dim, minimum=1)
        self.n_best = check_int(self, "n_best", n_best, minimum=1)
        self.position_weight = check_real(self, "position_weight", position_weight, minimum=0)
        self.relearn_rate = check_real(self, "relearn_rate", relearn_rate, above=0, maximum=1)
        self.shrinkage = check_real(self, "shrinkage", shrinkage, minimum=0)
        if not self.shrinkage < 1:
            raise ConfigError(f"Recognizer {name!r}: shrinkage must be a finite number >= 0 and < 1, "
                              f"got {self.shrinkage!r}")
        self.variance_floor = check_real(self, "variance_floor", variance_floor, above=0)
        self.restarts = check_int(self, "restarts", restarts, minimum=1)
        self.iterations = check_int(self, "iterations", iterations, minimum=0)
        # the discriminant space lives in the features plus the relative-position feature
        self.discriminant = check_int(self, "discriminant", discriminant, minimum=1, maximum=self.dim + 1,
                                      none=True)
        self.means_ = self.variances_ = self.log_weights_ = self.projection_ = None
        self.nbest_: NBest | None = None
        self.n_relearned_ = 0
        self._cached_frames = None  # (message, frames (M, D+1), item of each frame, position)

    # --- ports and input ----------------------------------------------------------------------
    def ports(self):
        return {
            "audio": Port("audio", accepts=("sequences",), size=self.dim, doc="padded feature frames"),
            "w": Port("w", sends=("nbest",), accepts=("nbest",), size=self.n_units,
                      doc="N-best unit paths out; resampled paths in"),
        }

    def _check_input(self, port, message):
        if port == "audio":
            if message.n_items == 0:
                raise DataError(f"Recognizer {self.name!r}: no utterances on port 'audio'")
            # the first k-means needs a frame per unit; once the units are learned, any utterance
            # decodes (new ones given to infer, too)
            if self.means_ is None and int(message.lengths.sum()) < self.n_units:
                raise DataError(f"Recognizer {self.name!r}: {int(message.lengths.sum())} frames in all "
                                f"cannot train {self.n_units} units")
        elif port == "w":
            if message.hypotheses.shape[1] != 1:
                raise MessageError(f"Recognizer {self.name!r}: port 'w' takes one resampled hypothesis per "
                                   f"utterance, got {message.hypotheses.shape[1]}")

    def _flat_frames(self):
        if "audio" not in self.inbox:
            raise DataError(f"Recognizer {self.name!r}: no audio received on port 'audio'")
        audio: Sequences = self.inbox["audio"]
        if self._cached_frames is not None and self._cached_frames[0] is audio:
            return self._cached_frames[1:]
        frames, item, position = self._frames_of(audio)
        self._cached_frames = (audio, frames, item, position)
        return frames, item, position

    def _frames_of(self, audio: Sequences):
        """The valid frames of ``audio`` with their relative position appended, (M, D + 1), the
        utterance of each frame (M,) and its position in it (M,)."""
        mask = audio.mask()
        item = torch.arange(audio.n_items, device=self.device)[:, None].expand_as(mask)[mask]
        position = torch.arange(mask.shape[1], device=self.device)[None, :].expand_as(mask)[mask]
        relative = position.to(audio.values.dtype) / (audio.lengths[item] - 1).clamp_min(1)
        frames = torch.cat([audio.values[mask], self.position_weight * relative[:, None]], 1).float()
        return frames, item, position

    # --- learning -----------------------------------------------------------------------------
    def _estimate(self, frames, labels):
        """Unit means, variances and log weights from labelled frames; empty units get None rows."""
        counts = torch.bincount(labels, minlength=self.n_units).to(frames.dtype)
        sums = torch.zeros(self.n_units, frames.shape[1], device=frames.device).index_add_(0, labels, frames)
        squares = torch.zeros_like(sums).index_add_(0, labels, frames * frames)
        safe = counts.clamp_min(1)[:, None]
        means = sums / safe
        variances = (squares / safe - means * means).clamp_min(0)
        pooled = frames.var(0, unbiased=False)
        variances = ((1 - self.shrinkage) * variances + self.shrinkage * pooled).clamp_min(self.variance_floor)
        log_weights = torch.log((counts + 1.0) / (counts.sum() + self.n_units))
        return means, variances, log_weights, counts > 0

    def _initialise(self, frames):
        _, labels = kmeans(frames, self.n_units, iterations=self.iterations, restarts=self.restarts,
                           generator=self.generator)
        self.means_, self.variances_, self.log_weights_, _ = self._estimate(frames, labels)

    def _relearn(self, frames, item, position, chosen: NBest) -> None:
        check_items(self, "the resampled hypotheses on port 'w'", chosen.n_items, "the audio on port 'audio'",
                    self.inbox["audio"].n_items)
        labels = chosen.hypotheses[item, 0, position].long()
        if bool((labels < 0).any()) or bool((labels >= self.n_units).any()):
            raise MessageError(f"Recognizer {self.name!r}: a resampled hypothesis is shorter than its "
                               f"utterance or uses an unknown unit")
        if self.discriminant is not None:
            self.projection_ = self._fisher_projection(frames, labels)
            self.means_, self.variances_, log_weights, _ = self._estimate(frames @ self.projection_, labels)
            self.log_weights_ = torch.log_softmax(
                (1 - self.relearn_rate) * self.log_weights_ + self.relearn_rate * log_weights, 0)
            self.n_relearned_ += 1
            return
        means, variances, log_weights, seen = self._estimate(frames, labels)
        rate = self.relearn_rate * seen.to(means.dtype)[:, None]  # units nobody chose keep their model
        self.means_ = (1 - rate) * self.means_ + rate * means
        self.variances_ = (1 - rate) * self.variances_ + rate * variances
        self.log_weights_ = torch.log_softmax(
            (1 - self.relearn_rate) * self.log_weights_ + self.relearn_rate * log_weights, 0)
        self.n_relearned_ += 1

    def _fisher_projection(self, frames, labels):
        """(D, p): directions maximising between-unit over within-unit scatter of the frames."""
        frames = frames.double()
        counts = torch.bincount(labels, minlength=self.n_units).double()
        means = torch.zeros(self.n_units, frames.shape[1], dtype=frames.dtype,
                            device=frames.device).index_add_(0, labels, frames) / counts.clamp_min(1)[:, None]
        centred = frames - means[labels]
        within = centred.T @ centred / frames.shape[0]
        within = within + _WITHIN_RIDGE * torch.eye(within.shape[0], dtype=within.dtype, device=within.device) * within.diagonal().mean()
        offsets = (means - frames.mean(0)) * counts.sqrt()[:, None]
        between = offsets.T @ offsets / frames.shape[0]
        chol = torch.linalg.cholesky(within)
        inv = torch.linalg.solve_triangular(chol, torch.eye(chol.shape[0], dtype=chol.dtype, device=chol.device), upper=False)
        values, vectors = torch.linalg.eigh(inv @ between @ inv.T)
        top = vectors[:, values.argsort(descending=True)[: self.discriminant]]
        return (inv.T @ top).float()

    def frame_log_posteriors(self, frames=None):
        """log q(u | f) for every valid frame: (M, U)."""
        if frames is None:
            frames = self._flat_frames()[0]
        if self.projection_ is not None:
            frames = frames @ self.projection_
        ll = diagonal_gaussian_log_likelihood(frames, self.means_, self.variances_) + self.log_weights_
        return torch.log_softmax(ll, 1)

    def decode(self) -> NBest:
        """The N-best unit paths of the utterances in the inbox (what port ``w`` sends), drawn
        from the module's own stream."""
        frames, item, position = self._flat_frames()
        return self._decode(self.inbox["audio"], frames, item, position, self.generator)

    def _decode(self, audio: Sequences, frames, item, position, generator: torch.Generator) -> NBest:
        """The best path and ``n_best - 1`` paths drawn from the frame posteriors (Gumbel-max
        with ``generator``) of ``audio``'s frames (:meth:`_frames_of`), with their log scores."""
        logq = self.frame_log_posteriors(frames)
        best = logq.argmax(1, keepdim=True)
        if self.n_best > 1:
            # Gumbel-max draws from q(u | f), a block of frames at a time: the noise for all frames
            # at once, (M, B - 1, U), is the largest tensor of a whole run
            drawn = []
            for start in range(0, logq.shape[0], _DECODE_CHUNK):
                block = logq[start:start + _DECODE_CHUNK]
                gumbel = gumbel_noise((block.shape[0], self.n_best - 1, self.n_units), generator=generator,
                                      device=self.device, low=_UNIFORM_FLOOR, high=_UNIFORM_CEILING)
                drawn.append(gumbel.add_(block[:, None, :]).argmax(2))
            paths = torch.cat([best, torch.cat(drawn)], 1)  # (M, B)
        else:
            paths = best
        frame_scores = logq.gather(1, paths)               # (M, B)
        n, length = audio.n_items, audio.values.shape[1]
        scores = torch.zeros(n, paths.shape[1], device=self.device).index_add_(0, item, frame_scores)
        hyps = torch.full((n, paths.shape[1], length), -1, dtype=_unit_dtype(self.n_units), device=self.device)
        hyps[item, :, position] = paths.to(hyps.dtype)
        return NBest(hyps, scores)

    def update(self) -> None:
        frames, item, position = self._flat_frames()
        relearned = False
        if self.means_ is None:
            self._initialise(frames)
            relearned = True
        elif "w" in self.inbox:
            self._relearn(frames, item, position, self.inbox.pop("w"))  # consumed: used once
            relearned = True
        if relearned or self.nbest_ is None or self.nbest_.n_items != self.inbox["audio"].n_items:
            self.nbest_ = self.decode()

    def publish(self):
        return {} if self.nbest_ is None else {"w": self.nbest_}

    def infer(self, audio=None, w=None) -> dict:
        """For new utterances: ``{"w": NBest}``, the N-best unit paths the module would send for
        them, decoded with the units it learned exactly as it decodes its own (:meth:`decode`):
        the best path and ``n_best - 1`` paths drawn from the frame posteriors. The draws come
        from a fresh stream seeded from the module's seed and update count, so infer is
        repeatable and leaves the training stream as it was."""
        if w is not None:
            raise DataError(f"{self._who()}: infer decodes new utterances given on port 'audio'; port 'w' "
                            f"takes resampled hypotheses for learning, not for new items")
        if self.means_ is None:
            raise DataError(f"{self._who()}: nothing learned yet; infer needs a first update")
        frames, item, position = self._frames_of(audio)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name + ":infer"))
        return {"w": self._decode(audio, frames, item, position, generator)}

    def best_units(self) -> torch.Tensor:
        """(N, V) counts of each unit on each utterance's best path."""
        hyps = self.nbest_.hypotheses[:, 0]
        counts = torch.zeros(hyps.shape[0], self.n_units, device=self.device)
        return counts.scatter_add_(1, hyps.clamp_min(0).long(), (hyps >= 0).to(counts.dtype))

    def diagnostics(self) -> dict:
        if self.nbest_ is None:
            return {}
        used = int((self.best_units().sum(0) > 0).sum())
        return {"units_used": used, "relearned": self.n_relearned_,
                "mean_best_log_score": float(self.nbest_.log_scores[:, 0].mean())}
