"""One recogniser pass over the spoken digits: decode (N-best) and relearn from resampled paths.

    python benchmarks/bench_asr.py [--device cpu] [--n-best 10] [--json out.json]

Uses the 3,000 FSDD recordings (or the synthetic set when they are absent), the LDA+ASR front
end, and a recogniser with 64 units. Prints the seconds of the first update (k-means + decode),
of a decode, and of a relearn-and-decode pass, each the median of a few repeats.
"""

import argparse
import statistics
import time

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket.audio import speech_sequences
from serket.bench.reporting import write_json
from serket.datasets import load_speech
from serket.messages import NBest
from serket.modules.asr import Recognizer


def _timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-best", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    digits = load_speech("auto")
    t = time.perf_counter()
    seq = speech_sequences(digits.waveforms, digits.rate, digits.speakers, device=device)
    features_s = time.perf_counter() - t
    asr = Recognizer("asr", n_units=64, dim=seq.size, n_best=args.n_best, device=device)
    asr.receive("audio", seq)
    first_s, _ = _timed(asr.update, device, 1)
    decode_s, nbest = _timed(asr.decode, device, args.repeats)
    chosen = NBest(nbest.hypotheses[:, 1:2], nbest.log_scores[:, 1:2])

    def relearn_and_decode():
        asr.receive("w", chosen)
        asr.update()

    relearn_s, _ = _timed(relearn_and_decode, device, args.repeats)
    frames = int(seq.lengths.sum())
    result = {"data": digits.source, "utterances": len(digits), "frames": frames, "device": str(device),
              "n_best": args.n_best, "features_s": features_s, "first_update_s": first_s,
              "decode_s": decode_s, "relearn_and_decode_s": relearn_s}
    print(f"{len(digits)} utterances ({digits.source}), {frames} frames, 64 units, {args.n_best}-best, {device}:")
    print(f"  front end (MFCC+deltas, trim, speaker CMVN)  {features_s:7.2f} s")
    print(f"  first update (k-means, 3 restarts + decode)  {first_s:7.2f} s")
    print(f"  decode (N-best paths and scores)            {decode_s:7.2f} s")
    print(f"  relearn from resampled paths + decode        {relearn_s:7.2f} s")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
