"""LDA + ASR on spoken digits: a recogniser and a topic model learn words and categories together.

Run (a few minutes on 2 cores with the defaults):

    python examples/lda_asr_fsdd.py
    python examples/lda_asr_fsdd.py --every 10 --rounds 2 --units 16 --sweeps 10   # a smoke test

The recogniser discovers acoustic units from the audio alone and sends each utterance's N-best
unit paths; the LDA groups the utterances into topics. First separate (the recogniser decodes
once, the LDA learns on its output, nothing goes back), then linked (head-to-head by
sampling-importance-resampling: the LDA weighs the N-best paths, one is resampled per
utterance, and the recogniser relearns from them), each printing the LDA's accuracy per round.
"""

import argparse

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket.audio import speech_sequences
from serket.datasets import load_speech
from serket.graphs.lda_asr import run_lda_asr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=int, default=1, help="keep every k-th utterance (1: all 3,000)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--sweeps", type=int, default=100)
    p.add_argument("--chains", type=int, default=4, help="LDA chains in the first round, the likeliest kept")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    digits = load_speech("auto")                       # FSDD: data folder, cache, download or bundled copy
    if args.every > 1:
        digits = digits.subset((torch.arange(len(digits)) % args.every == 0).nonzero().squeeze(1))
    print(f"{len(digits)} utterances from {digits.source}")
    sequences = speech_sequences(digits.waveforms, digits.rate, digits.speakers)
    results = {}
    for linked in (False, True):
        name = "linked" if linked else "separate"
        out = run_lda_asr(sequences, digits.labels, rounds=args.rounds, linked=linked, seed=args.seed,
                          n_units=args.units, prefix=f"[{name}] ",
                          asr={"n_best": 10 if args.every > 1 else 50, "discriminant": 20},
                          lda={"sweeps": args.sweeps, "chains": args.chains})
        results[name] = out["final"]["accuracy"]
    print(f"LDA accuracy: separate {results['separate'] * 100:.1f}%, linked {results['linked'] * 100:.1f}%")
    return results


if __name__ == "__main__":
    main()
