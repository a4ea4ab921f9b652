"""Phone error of the pretrained phone recogniser (pocketsphinx, US English) on FSDD.

Each recording is decoded as :class:`serket.modules.phones.PhoneRecognizer` decodes it (phone
loop, N-best off the lattice; decodes cached under ``<serket cache>/phones``) and compared with
the CMU dictionary's pronunciations of its digit word: the phone error rate (edit distance over
the reference's length, the nearer of "zero"'s two pronunciations) of the best path, and the
oracle (the lowest) over the N-best list, per digit and overall.

    python benchmarks/phone_error.py [--n-best 50] [--takes all|train|test]
"""

from __future__ import annotations

import argparse
import time

from serket.datasets.folders import cache_dir
from serket.datasets.spoken_digits import load_fsdd
from serket.modules.phones import PHONES, decode_phones, edit_distance

# the CMU dictionary (cmudict-en-us.dict, as pocketsphinx ships it) for the digit words
PRONUNCIATIONS = {0: [["Z", "IH", "R", "OW"], ["Z", "IY", "R", "OW"]], 1: [["W", "AH", "N"]], 2: [["T", "UW"]],
                  3: [["TH", "R", "IY"]], 4: [["F", "AO", "R"]], 5: [["F", "AY", "V"]],
                  6: [["S", "IH", "K", "S"]], 7: [["S", "EH", "V", "AH", "N"]], 8: [["EY", "T"]],
                  9: [["N", "AY", "N"]]}


def phone_error(string_ids, digit: int) -> float:
    """Edit distance to the nearest pronunciation of ``digit``, over that pronunciation's length."""
    phones = [PHONES[i] for i in string_ids]
    return min(edit_distance(phones, ref) / len(ref) for ref in PRONUNCIATIONS[digit])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-best", type=int, default=50)
    p.add_argument("--takes", choices=["all", "train", "test"], default="all")
    args = p.parse_args(argv)
    digits = load_fsdd()
    if args.takes != "all":
        train, test = digits.split()
        digits = train if args.takes == "train" else test
    import torch
    start = time.perf_counter()
    results = decode_phones([torch.as_tensor(w) for w in digits.waveforms], digits.rate, n_best=args.n_best,
                            cache_dir=cache_dir() / "phones")
    seconds = time.perf_counter() - start
    table = {}
    for (strings, _), digit in zip(results, digits.labels.tolist()):
        errors = [phone_error(s, digit) for s in strings] or [1.0]
        row = table.setdefault(digit, {"best": 0.0, "oracle": 0.0, "n": 0, "lists": 0})
        row["best"] += errors[0]
        row["oracle"] += min(errors)
        row["lists"] += len(strings)
        row["n"] += 1
    print(f"FSDD ({digits.source}), {len(digits)} recordings, {args.n_best}-best, decoded or read in {seconds:.1f} s")
    print("digit  best-path PER  oracle PER  hypotheses")
    for digit in sorted(table):
        row = table[digit]
        print(f"{digit:>5}  {row['best'] / row['n']:>13.3f}  {row['oracle'] / row['n']:>10.3f}  "
              f"{row['lists'] / row['n']:>10.1f}")
    n = sum(r["n"] for r in table.values())
    overall = {"best": sum(r["best"] for r in table.values()) / n, "oracle": sum(r["oracle"] for r in table.values()) / n}
    print(f"  all  {overall['best']:>13.3f}  {overall['oracle']:>10.3f}")
    return {"per_digit": table, "overall": overall}


if __name__ == "__main__":
    main()
