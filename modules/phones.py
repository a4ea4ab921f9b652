"""A pretrained phone recogniser: pocketsphinx's US-English acoustic model as a phone loop.

The backend the published Neuro-SERKET used (a pretrained phone-loop recogniser), here with the
US-English acoustic model that the ``pocketsphinx`` package ships (the optional extra
``neuro-serket[phones]``). It knows the 39 CMU phones of English and no words: its vocabulary
is :data:`PHONES`, and an utterance's hypotheses are phone strings.

How it decodes (what was found to work with pocketsphinx 5; figures in
``docs/reference/modules/asr.md``): the *allphone* search yields only its best path (no
lattice, no N-best), so the recogniser runs pocketsphinx's n-gram search over a dictionary in
which every phone is a "word" pronounced as itself, with the package's phone n-gram
(``en-us-phone.lm.bin``) as the "word" language model. That search keeps a lattice, and
``Decoder.nbest()`` reads an N-best list of phone strings off it. Audio below 16 kHz (FSDD is
8 kHz) is upsampled to the model's 16 kHz (better on FSDD than decoding at 8 kHz with a
narrowed filter bank: phone error 0.75 against 0.88 on the best path), and ``pad`` seconds of
silence are added at both ends (FSDD clips are cut tight; the model expects silence around
speech). Silence and noise fillers are dropped from the strings; strings that become equal are
merged (the best score kept); an utterance with fewer than ``n_best`` distinct strings pads its
list with empty hypotheses of score ``-inf``.

Decoding is deterministic, so decodes are cached on disk when a folder is given
(:meth:`PhoneRecognizer.use_cache`, the graphs give ``<serket cache>/phones``): one file per
utterance, keyed by the audio's samples and rate and by the decoder's settings and version.

Relearning. The acoustic model and pocketsphinx's own phone n-gram stay fixed; what the
recogniser learns from the hypotheses the head-to-head node resampled is a phone *bigram*
``P(b | a)`` over the phones plus utterance start and end, estimated from the resampled strings
of the last round with add-``lm_smoothing`` smoothing::

    P(b | a) = (n(a, b) + alpha) / (n(a) + alpha * (V + 1))

(rows: the V phones and the start; columns: the V phones and the end). Each utterance's N-best
list is rescored with it and re-sorted::

    log_score(h) = decoder_scale * log P_decoder(h) + lm_weight * log P_bigram(h)

where ``log P_decoder`` is pocketsphinx's path score (acoustic plus its phone n-gram, in nats)
and ``log P_bigram(h)`` the bigram's log probability of the string from start to end. Before the
first relearning the second term is absent. The graph reads the list as the most probable
hypotheses (``bag_weights="scores"``): the bag of phones the LDA sees is the softmax of these
scores over the list, so a relearned bigram that favours the strings the LDA chose moves each
bag towards them.

Ports:
    ``audio`` (accepts ``sequences``, size 1): waveforms in [-1, 1] at ``rate`` Hz, padded, with
    their lengths (:func:`serket.audio.features.waveform_sequences`).
    ``w`` (sends ``nbest``, accepts ``nbest``, size ``len(PHONES)``): N-best phone strings out;
    the resampled string of each utterance (B = 1) in.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import torch

from serket.errors import ConfigError, DataError, MessageError
from serket.files import atomic_write
from serket.messages import NBest, Sequences
from serket.module import Module, Port
from serket.validation import check_int, check_items, check_real

__all__ = ["PHONES", "RECOGNIZERS", "speech_recognizer", "PhoneRecognizer", "phone_bigram", "bigram_log_prob", "decode_phones",
           "edit_distance", "pocketsphinx_available"]

# the 39 phones of the CMU dictionary, as the US-English acoustic model names them
PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
          "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
          "UW", "V", "W", "Y", "Z", "ZH")
_PHONE_ID = {p: i for i, p in enumerate(PHONES)}
_MODEL_RATE = 16000
# bump when the way hypotheses are read off the decoder changes: old cache entries then miss
_CACHE_VERSION = 1


def pocketsphinx_available() -> bool:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError as err:
        raise ConfigError("PhoneRecognizer needs pocketsphinx (>= 5), which is not installed: "
                          "pip install 'neuro-serket[phones]' (or pip install pocketsphinx)") from err
    return pocketsphinx


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences (substitutions, insertions, deletions cost 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


# --- the bigram the recogniser relearns -------------------------------------------------------
def phone_bigram(strings, n_phones: int, smoothing: float) -> torch.Tensor:
    """(V + 1, V + 1) float64 log P(b | a) from phone-id strings: rows the V phones then the
    start, columns the V phones then the end; add-``smoothing`` estimates."""
    start = end = n_phones
    counts = torch.zeros(n_phones + 1, n_phones + 1, dtype=torch.float64)
    for string in strings:
        previous = start
        for phone in string:
            counts[previous, phone] += 1
            previous = phone
        counts[previous, end] += 1
    return torch.log((counts + smoothing) / (counts.sum(1, keepdim=True) + smoothing * (n_phones + 1)))


def bigram_log_prob(log_bigram: torch.Tensor, hypotheses: torch.Tensor) -> torch.Tensor:
    """log P(h) under ``log_bigram`` (:func:`phone_bigram`) of every hypothesis (..., L) padded
    with -1 (valid ids first): the sum over its transitions from the start to the end."""
    n_phones = log_bigram.shape[0] - 1
    valid = hypotheses >= 0
    ids = hypotheses.long().clamp_min(0)
    previous = torch.cat([torch.full_like(ids[..., :1], n_phones), ids[..., :-1]], -1)
    steps = log_bigram[previous, ids] * valid                    # start -> first, ... , into the last
    lengths = valid.sum(-1)
    last = ids.gather(-1, (lengths - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
    last = torch.where(lengths > 0, last, torch.full_like(last, n_phones))  # an empty string: start -> end
    return steps.sum(-1) + log_bigram[last, n_phones]


# --- decoding (pocketsphinx), cached on disk ----------------------------------------------------
def _decoder_settings(n_best: int, pad: float, language_weight: float, insertion_penalty: float,
                      beam: float) -> dict:
    ps = _pocketsphinx()
    return {"n_best": n_best, "pad": pad, "lw": language_weight, "wip": insertion_penalty, "beam": beam,
            "pocketsphinx": getattr(ps, "__version__", "5"), "cache_version": _CACHE_VERSION,
            "model": "en-us", "lm": "en-us-phone.lm.bin", "rate": _MODEL_RATE}


def _make_decoder(settings: dict, folder: str):
    ps = _pocketsphinx()
    model = Path(ps.get_model_path()) / "en-us"
    dictionary = Path(folder) / "phones.dict"
    dictionary.write_text("".join(f"{p} {p}\n" for p in PHONES))
    return ps.Decoder(hmm=str(model / "en-us"), lm=str(model / "en-us-phone.lm.bin"), dict=str(dictionary),
                      lw=settings["lw"], wip=settings["wip"], beam=settings["beam"], loglevel="FATAL")


def _to_model_rate(waveform: torch.Tensor, rate: int, pad: float):
    """int16 samples at 16 kHz, with ``pad`` seconds of silence at both ends."""
    import numpy as np
    from scipy.signal import resample_poly

    samples = waveform.detach().cpu().double().numpy()
    if rate != _MODEL_RATE:
        g = math.gcd(rate, _MODEL_RATE)
        samples = resample_poly(samples, _MODEL_RATE // g, rate // g)
    silence = np.zeros(int(round(pad * _MODEL_RATE)))
    samples = np.concatenate([silence, samples, silence])
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def _decode_one(decoder, samples, n_best: int) -> tuple[list, list]:
    """The distinct phone strings of one utterance (best path first, then the lattice's N-best)
    and their path scores in nats, at most ``n_best``."""
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    strings, scores = [], []

    def add(words, score):
        string = [_PHONE_ID[w] for w in words if w in _PHONE_ID]
        if string in strings:  # fillers dropped, two paths may read the same: keep the better
            return
        strings.append(string)
        scores.append(score)

    best = decoder.hyp()
    if best is None:
        return strings, scores
    # the python API gives path scores as logmath.exp(score): a probability relative to the best
    # senone of each frame; its log is the path's log score in nats. The best path's score comes
    # from another pass than the lattice's, so it takes the lattice's best score (it is the best).
    listed = []
    for k, hypothesis in enumerate(decoder.nbest() or ()):
        if hypothesis is None or k >= 4 * n_best:
            break
        listed.append((hypothesis.hypstr.split(), math.log(max(hypothesis.score, 1e-300))))
    top = max((score for _, score in listed), default=0.0)
    add([segment.word for segment in decoder.seg()], top)
    for words, score in listed:
        if len(strings) >= n_best:
            break
        add(words, score)
    return strings, scores


def decode_phones(waveforms, rate: int, *, n_best: int = 50, pad: float = 0.25, language_weight: float = 6.5,
                  insertion_penalty: float = 0.65, beam: float = 1e-48, cache_dir=None) -> list:
    """Each waveform's distinct phone strings (lists of :data:`PHONES` ids) and their decoder
    scores (nats), best first: a list of ``(strings, scores)``. With ``cache_dir``, each
    utterance's result is read from, or written to, a file keyed by its samples, its rate and the
    decoder's settings."""
    settings = _decoder_settings(n_best, pad, language_weight, insertion_penalty, beam)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / key if cache_dir is not None else None
    results, missing = [None] * len(waveforms), []
    names = []
    for i, waveform in enumerate(waveforms):
        digest = hashlib.sha256(waveform.detach().cpu().float().numpy().tobytes() + str(rate).encode()).hexdigest()
        names.append(f"{digest[:32]}.json")
        path = folder / names[-1] if folder is not None else None
        if path is not None and path.is_file():
            try:
                record = json.loads(path.read_text())
                results[i] = (record["strings"], [float(s) for s in record["scores"]])
                continue
            except (OSError, ValueError, KeyError):
                pass  # an unreadable entry is decoded again and rewritten
        missing.append(i)
    if missing:
        with tempfile.TemporaryDirectory() as scratch:
            decoder = _make_decoder(settings, scratch)
            for i in missing:
                strings, scores = _decode_one(decoder, _to_model_rate(waveforms[i], rate, pad), n_best)
                results[i] = (strings, scores)
                if folder is not None:
                    atomic_write(folder / names[i], json.dumps({"strings": strings, "scores": scores}))
    return results


class PhoneRecognizer(Module):
    """A pretrained phone-loop recogniser (pocketsphinx, US English) with N-best output and a
    relearned phone bigram (see the module's docstring for the decoding and the relearning).

    Args:
        name: node name.
        rate: the sample rate of the waveforms on port ``audio`` (Hz, at least 8000; upsampled to
            the model's 16 kHz).
        n_best: distinct phone strings per utterance at most.
        decoder_scale: weight of pocketsphinx's path score (nats) in a hypothesis's log score
            (the log of the score pocketsphinx's python API reports, relative to the best senone
            of each frame; the 50-best of an FSDD clip spread over about 0.06 of it, so the
            default 50 spreads the list's softmax over about 3 nats).
        lm_weight: weight of the relearned bigram's log probability in the log score.
        lm_smoothing: add-alpha smoothing of the relearned bigram.
        pad: seconds of silence added at both ends of each utterance before decoding.
        language_weight: pocketsphinx's weight on its own phone n-gram (``-lw``).
        insertion_penalty: pocketsphinx's per-phone insertion penalty (``-wip``).
        beam: pocketsphinx's main pruning beam (``-beam``).
        seed, device: see :class:`serket.module.Module` (decoding draws nothing).

    Learned state: ``decoded_`` (the decoder's N-best of the utterances on ``audio``, with its
    path scores), ``log_bigram_`` ((V + 1, V + 1) float64 log P(b | a), None before the first
    relearning), ``nbest_`` (what port ``w`` sends: ``decoded_`` rescored and re-sorted),
    ``n_relearned_``.
    """

    def __init__(self, name: str, rate: int = 8000, *, n_best: int = 50, decoder_scale: float = 50.0,
                 lm_weight: float = 1.0, lm_smoothing: float = 0.5, pad: float = 0.25,
                 language_weight: float = 6.5, insertion_penalty: float = 0.65, beam: float = 1e-48,
                 seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.rate = check_int(self, "rate", rate, minimum=8000)
        self.n_best = check_int(self, "n_best", n_best, minimum=1)
        self.decoder_scale = check_real(self, "decoder_scale", decoder_scale, minimum=0)
        self.lm_weight = check_real(self, "lm_weight", lm_weight, minimum=0)
        self.lm_smoothing = check_real(self, "lm_smoothing", lm_smoothing, above=0)
        self.pad = check_real(self, "pad", pad, minimum=0, maximum=5)
        self.language_weight = check_real(self, "language_weight", language_weight, above=0)
        self.insertion_penalty = check_real(self, "insertion_penalty", insertion_penalty, above=0)
        self.beam = check_real(self, "beam", beam, above=0, maximum=1)
        _pocketsphinx()  # a clear error now, not at the first update
        self.decoded_: NBest | None = None
        self.log_bigram_: torch.Tensor | None = None
        self.nbest_: NBest | None = None
        self.n_relearned_ = 0
        self._decode_cache: Path | None = None

    def use_cache(self, folder) -> PhoneRecognizer:
        """Keep decodes in ``folder`` (None: no cache). Not a setting: where decodes are kept
        changes no result."""
        self._decode_cache = None if folder is None else Path(folder)
        return self

    # --- ports and input ----------------------------------------------------------------------
    def ports(self):
        return {
            "audio": Port("audio", accepts=("sequences",), size=1, doc=f"waveforms at {self.rate} Hz"),
            "w": Port("w", sends=("nbest",), accepts=("nbest",), size=len(PHONES),
                      doc="N-best phone strings out; resampled strings in"),
        }

    def _check_input(self, port, message):
        if port == "audio":
            if message.n_items == 0:
                raise DataError(f"{self._who()}: no utterances on port 'audio'")
            values = message.values
            if bool((values.abs() > 1.0 + 1e-6).any()):
                raise DataError(f"{self._who()}: port 'audio' takes waveforms in [-1, 1] (one sample per "
                                f"frame, at {self.rate} Hz); got values up to {float(values.abs().max()):.3g}")
            shortest = int(message.lengths.min())
            if shortest < self.rate // 50:
                raise DataError(f"{self._who()}: an utterance of {shortest} samples is shorter than 20 ms "
                                f"at {self.rate} Hz; is the audio at the rate the recogniser was given?")
        elif port == "w":
            if message.hypotheses.shape[1] != 1:
                raise MessageError(f"{self._who()}: port 'w' takes one resampled hypothesis per utterance, "
                                   f"got {message.hypotheses.shape[1]}")

    # --- decoding and rescoring ----------------------------------------------------------------
    def _decode(self, audio: Sequences) -> NBest:
        waves = [audio.values[i, : int(audio.lengths[i]), 0] for i in range(audio.n_items)]
        results = decode_phones(waves, self.rate, n_best=self.n_best, pad=self.pad,
                                language_weight=self.language_weight, insertion_penalty=self.insertion_penalty,
                                beam=self.beam, cache_dir=self._decode_cache)
        length = max(1, max((len(s) for strings, _ in results for s in strings), default=1))
        hyps = torch.full((len(results), self.n_best, length), -1, dtype=torch.int16)
        scores = torch.full((len(results), self.n_best), float("-inf"), dtype=torch.float64)
        for i, (strings, path_scores) in enumerate(results):
            for b, (string, score) in enumerate(zip(strings[: self.n_best], path_scores)):
                hyps[i, b, : len(string)] = torch.tensor(string, dtype=torch.int16)
                scores[i, b] = score
            if not any(strings):
                # nothing but silence: one empty hypothesis would give the head-to-head node no
                # word to weigh, so the utterance is read as the most frequent vowel (a neutral
                # token) with the decoder's score
                hyps[i, 0, 0] = _PHONE_ID["AH"]
                scores[i, 0] = path_scores[0] if path_scores else 0.0
        return NBest(hyps.to(self.device), scores.to(self.device))

    def _rescore(self, decoded: NBest) -> NBest:
        """``decoded`` with log scores ``decoder_scale * path + lm_weight * log P_bigram``,
        each list sorted best first (empty places last)."""
        scores = self.decoder_scale * decoded.log_scores.double()
        if self.log_bigram_ is not None:
            lm = bigram_log_prob(self.log_bigram_.to(decoded.hypotheses.device), decoded.hypotheses)
            scores = scores + self.lm_weight * lm
        scores = torch.where(torch.isfinite(decoded.log_scores), scores, torch.full_like(scores, float("-inf")))
        order = scores.sort(dim=1, descending=True, stable=True).indices
        hyps = decoded.hypotheses.gather(1, order[:, :, None].expand_as(decoded.hypotheses))
        return NBest(hyps, scores.gather(1, order).float())

    def _relearn(self, chosen: NBest) -> None:
        check_items(self, "the resampled hypotheses on port 'w'", chosen.n_items, "the audio on port 'audio'",
                    self.inbox["audio"].n_items)
        hyps = chosen.hypotheses[:, 0]
        if bool((hyps >= len(PHONES)).any()):
            raise MessageError(f"{self._who()}: a resampled hypothesis uses a phone id >= {len(PHONES)}")
        strings = [[int(p) for p in row if p >= 0] for row in hyps.cpu()]
        self.log_bigram_ = phone_bigram(strings, len(PHONES), self.lm_smoothing).to(self.device)
        self.n_relearned_ += 1

    def update(self) -> None:
        if "audio" not in self.inbox:
            raise DataError(f"{self._who()}: no audio received on port 'audio'")
        audio: Sequences = self.inbox["audio"]
        if self.decoded_ is None or self.decoded_.n_items != audio.n_items:
            self.decoded_ = self._decode(audio)
        if "w" in self.inbox:
            self._relearn(self.inbox.pop("w"))  # consumed: used once
        self.nbest_ = self._rescore(self.decoded_)

    def publish(self):
        return {} if self.nbest_ is None else {"w": self.nbest_}

    def infer(self, audio=None, w=None) -> dict:
        """For new utterances: ``{"w": NBest}``, their N-best phone strings decoded as the module
        decodes its own and rescored with the bigram it learned (none before a relearning)."""
        if w is not None:
            raise DataError(f"{self._who()}: infer decodes new utterances given on port 'audio'; port 'w' "
                            f"takes resampled hypotheses for learning, not for new items")
        if self.decoded_ is None:
            raise DataError(f"{self._who()}: nothing learned yet; infer needs a first update")
        return {"w": self._rescore(self._decode(audio))}

    def best_strings(self) -> list[list[str]]:
        """Each utterance's best phone string, as phone names."""
        return [[PHONES[int(p)] for p in row if p >= 0] for row in self.nbest_.hypotheses[:, 0].cpu()]

    def diagnostics(self) -> dict:
        if self.nbest_ is None:
            return {}
        best = self.nbest_.hypotheses[:, 0]
        return {"relearned": self.n_relearned_, "phones_per_best_path": float((best >= 0).sum(1).double().mean()),
                "hypotheses_per_utterance": float(torch.isfinite(self.nbest_.log_scores).sum(1).double().mean()),
                "mean_best_log_score": float(self.nbest_.log_scores[:, 0].mean())}


# the recogniser backends a speech graph may choose: "units" discovers acoustic units from feature
# frames (serket.modules.asr.Recognizer); "pocketsphinx" is the pretrained phone loop above
RECOGNIZERS = ("units", "pocketsphinx")


def speech_recognizer(name: str, backend: str, *, n_units: int, dim: int, seed: int, cache=None,
                      settings: dict | None = None) -> tuple[Module, int]:
    """The recogniser node ``name`` of the chosen ``backend`` and the size of its vocabulary.

    ``"units"``: a :class:`~serket.modules.asr.Recognizer` of ``n_units`` acoustic units over
    ``dim``-dimensional feature frames; ``"pocketsphinx"``: a :class:`PhoneRecognizer` over
    waveforms (``settings`` carries their ``rate``), keeping its decodes in ``cache`` (a folder,
    or None for none). ``settings``: the module's other keywords."""
    if backend == "units":
        from .asr import Recognizer

        return Recognizer(name, n_units=n_units, dim=dim, seed=seed, **(settings or {})), n_units
    if backend == "pocketsphinx":
        module = PhoneRecognizer(name, seed=seed, **(settings or {}))
        if cache is not None:
            module.use_cache(cache)
        return module, len(PHONES)
    raise ConfigError(f"unknown recognizer {backend!r}; use one of {list(RECOGNIZERS)}")
