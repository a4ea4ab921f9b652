"""Speech front-end throughput on the 3,000 spoken digits, and the time to synthesize them.

    python benchmarks/bench_frontend.py [--device cpu] [--repeats 5] [--json out.json]
    python benchmarks/bench_frontend.py --synth [--jobs 2] [--synth-twice]

The front end (13 MFCC + deltas + utterance CMVN, 8 kHz, 25 ms / 10 ms) runs over all clips of
FSDD (or the synthetic stand-in when FSDD cannot be had), in length-sorted batches; the script
prints the median utterances per second over the repeats, after one warm-up pass. ``--synth``
also times ``synthesize_digits`` making 3,000 clips in a temporary folder (``--synth-twice``
makes them twice and says whether the two sets are byte-identical).
"""

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket.audio import FrontEnd, pooled_features, synthesize_digits
from serket.bench.reporting import write_json
from serket.datasets import load_fsdd, load_synthetic


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def time_synthesis(jobs, twice):
    report = {}
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as root:
        digests = []
        for run in range(2 if twice else 1):
            folder = Path(root) / f"run{run}"
            started = time.perf_counter()
            manifest = synthesize_digits(folder, n_per_digit=300, seed=0, jobs=jobs)
            seconds = time.perf_counter() - started
            report.setdefault("synth_seconds", []).append(round(seconds, 2))
            digests.append(folder_digest(folder))
            print(f"synthesized 3000 clips in {seconds:.1f} s (jobs={jobs})")
        digits = load_synthetic(Path(root) / "run0")
        info = json.loads(manifest.read_text())
        report.update(synth_clips=len(digits), synth_engines=info["engines"],
                      synth_voices=len(info["voices"]), synth_source=digits.source)
        if twice:
            report["synth_byte_identical"] = digests[0] == digests[1]
            print(f"two runs byte-identical: {digests[0] == digests[1]}")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--synth", action="store_true", help="also time the 3,000-clip synthesis")
    p.add_argument("--synth-twice", action="store_true", help="synthesize twice, compare bytes")
    p.add_argument("--jobs", type=int, default=2, help="synthesis worker processes")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    report = {"device": str(device), "torch_threads": torch.get_num_threads()}
    if args.synth or args.synth_twice:
        report.update(time_synthesis(args.jobs, args.synth_twice))

    digits = load_fsdd(verbose=False)
    waveforms = [w.to(device) for w in digits.waveforms]
    audio_seconds = sum(len(w) for w in waveforms) / digits.rate
    front = FrontEnd(digits.rate).to(device)
    print(f"{len(digits)} clips ({audio_seconds:.0f} s of audio) from {digits.source}; "
          f"FrontEnd({front.extra_repr()})")

    times = []
    for repeat in range(args.repeats + 1):  # the first pass warms up
        sync(device)
        started = time.perf_counter()
        features, frames = front.extract(waveforms, batch_size=args.batch_size)
        pooled_features(features, frames)
        sync(device)
        if repeat:
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    report.update(
        source=digits.source, clips=len(digits), audio_seconds=round(audio_seconds, 1),
        feature_shape=list(features.shape), seconds=round(seconds, 4),
        utterances_per_second=round(len(digits) / seconds, 1),
        realtime_factor=round(audio_seconds / seconds, 1),
    )
    print(f"front end on {device}: {seconds:.3f} s for {len(digits)} clips = "
          f"{len(digits) / seconds:.0f} utterances/s ({audio_seconds / seconds:.0f}x real time)")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
