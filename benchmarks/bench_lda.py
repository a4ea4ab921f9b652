"""Time one LDA update (100 collapsed Gibbs sweeps) vectorised against the exact per-token loop.

Corpus: 3,000 synthetic documents of 100 tokens (the size of the Neuro-SERKET speech side:
3,000 utterances, each scaled to 100 tokens), V = 40 words, K = 10 topics; each document has one
dominant topic (weight 0.8, the rest spread evenly) and each topic's word distribution is drawn
from Dirichlet(0.1). Three samplers of the same model:

* vectorised: :class:`serket.modules.lda.LDA` with its default ``block_size`` (one token per
  document per block: 3,000 tokens per batched step, 100 steps per sweep), timed over a whole
  100-sweep update;
* per token, module: the same sampler with ``block_size=1``, the exact sequential collapsed Gibbs
  sampler; a Python loop over the tokens, so it is timed on a slice of the corpus
  (``--loop-docs`` documents, one sweep) and *extrapolated* linearly to 300,000 tokens x 100
  sweeps (its cost per token does not depend on the corpus size);
* per token, textbook: a plain NumPy loop (leave the token out of three count tables, score K
  topics, draw, put it back), timed for ``--loop-sweeps`` sweep(s) of the whole corpus and
  extrapolated to 100 sweeps.

It also reports, for the vectorised sampler at a few block sizes (and seeds), the collapsed log
joint and the clustering accuracy after the update: if the parallel approximation mattered, the
log joint would fall as the blocks grow (it does once a block holds many tokens per document).

Measured with this corpus at 300 documents of 100 tokens (the figures the LDA's docstring once
carried), read every 50 sweeps from sweep 100 to 400: the log joint of the exact sampler (one
chain) averaged -90,980 (sd 140), that of the default blocks -90,960 (sd 150; three chains), and
that of one block of all 30,000 tokens -91,320 (sd 160): blocks of one token per document cost
nothing measurable there, whole-corpus blocks do. A sweep of 3,000 such documents costs 100
batched steps instead of 300,000.

Usage::

    python benchmarks/bench_lda.py [--device cpu|cuda] [--json out.json]
"""

import argparse
import time

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from serket.bench.reporting import write_json
from serket.messages import Counts
from serket.modules.lda import LDA


def synthetic_corpus(n_docs, n_tokens, vocab, k, seed=0):
    """Counts (N, V) float32 and the true dominant topic (N,) of each document."""
    rng = np.random.default_rng(seed)
    phi = rng.dirichlet(np.full(vocab, 0.1), size=k)
    truth = np.arange(n_docs) % k
    theta = np.full((n_docs, k), 0.2 / (k - 1))
    theta[np.arange(n_docs), truth] = 0.8
    counts = np.stack([rng.multinomial(n_tokens, p) for p in theta @ phi])
    return torch.tensor(counts, dtype=torch.float32), torch.tensor(truth)


def accuracy(truth, predicted, k):
    confusion = np.zeros((k, k))
    np.add.at(confusion, (truth.numpy(), predicted.cpu().numpy()), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / len(truth))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_update(counts, k, device, *, sweeps, block_size=None, seed=0):
    lda = LDA("bench", n_topics=k, vocab_sizes=(counts.shape[1],), sweeps=sweeps, block_size=block_size,
              seed=seed, device=device)
    lda.receive("w0", Counts(counts.to(device)))
    _sync(device)
    start = time.perf_counter()
    lda.update()
    _sync(device)
    return time.perf_counter() - start, lda


def textbook_sweep(docs, words, topics, n_dk, n_kw, n_k, *, alpha, beta, vocab, rng):
    """Sequential collapsed Gibbs written the plain way, one token at a time (NumPy)."""
    k = n_k.shape[0]
    for i in rng.permutation(len(docs)):
        d, w, z = docs[i], words[i], topics[i]
        n_dk[d, z] -= 1
        n_kw[z, w] -= 1
        n_k[z] -= 1
        p = (n_dk[d] + alpha) * (n_kw[:, w] + beta) / (n_k + vocab * beta)
        z = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), k - 1)
        n_dk[d, z] += 1
        n_kw[z, w] += 1
        n_k[z] += 1
        topics[i] = z


def time_textbook(counts, k, n_sweeps, seed=0):
    rng = np.random.default_rng(seed)
    c = counts.long().numpy()
    cells = np.repeat(np.arange(c.size), c.ravel())
    docs, words = cells // c.shape[1], cells % c.shape[1]
    topics = rng.integers(k, size=len(docs))
    n_dk = np.zeros((c.shape[0], k))
    np.add.at(n_dk, (docs, topics), 1)
    n_kw = np.zeros((k, c.shape[1]))
    np.add.at(n_kw, (topics, words), 1)
    n_k = n_kw.sum(1)
    times = []
    for _ in range(n_sweeps):
        start = time.perf_counter()
        textbook_sweep(docs, words, topics, n_dk, n_kw, n_k, alpha=1.0, beta=1.0, vocab=c.shape[1], rng=rng)
        times.append(time.perf_counter() - start)
    return times, len(docs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--loop-docs", type=int, default=50,
                        help="documents in the slice the module's exact loop is timed on")
    parser.add_argument("--loop-sweeps", type=int, default=1, help="whole-corpus sweeps of the NumPy loop")
    parser.add_argument("--block-sizes", default="300,30000,all",
                        help="extra block sizes for the quality check ('all': every token in one block)")
    parser.add_argument("--quality-seeds", type=int, default=2, help="seeds per block size in the quality check")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    counts, truth = synthetic_corpus(args.docs, args.tokens, args.vocab, args.k)
    n_tokens = int(counts.sum())

    # warm up kernels and the allocator on a small slice
    time_update(counts[:200], args.k, device, sweeps=2)
    vectorised_s, lda = time_update(counts, args.k, device, sweeps=args.sweeps)
    quality = {}
    sizes = [None] + [n_tokens if s == "all" else int(s) for s in args.block_sizes.split(",") if s]
    for size in sizes:
        rows = []
        for seed in range(args.quality_seeds):
            if size is None and seed == 0:
                seconds, fitted = vectorised_s, lda
            else:
                seconds, fitted = time_update(counts, args.k, device, sweeps=args.sweeps, block_size=size, seed=seed)
            rows.append((fitted.log_joint(), accuracy(truth, fitted.predict(), args.k), seconds))
        log_joints, accuracies, seconds = (np.array(column) for column in zip(*rows))
        quality["default" if size is None else str(size)] = {
            "block_size": args.docs if size is None else size, "log_joint": log_joints.tolist(),
            "accuracy": accuracies.tolist(), "seconds": seconds.tolist()}

    # the module's exact sampler on a slice, extrapolated per token
    loop_slice = counts[:args.loop_docs]
    time_update(loop_slice[:5], args.k, device, sweeps=1, block_size=1)
    slice_s, _ = time_update(loop_slice, args.k, device, sweeps=1, block_size=1)
    per_token_module = slice_s / int(loop_slice.sum())
    exact_module_s = per_token_module * n_tokens * args.sweeps

    textbook_times, _ = time_textbook(counts, args.k, args.loop_sweeps)
    textbook_s = float(np.median(textbook_times)) * args.sweeps

    figures = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "docs": args.docs, "tokens_per_doc": args.tokens, "n_tokens": n_tokens, "vocab": args.vocab,
        "k": args.k, "sweeps": args.sweeps,
        "vectorised_update_s": vectorised_s,
        "exact_module_update_s_extrapolated": exact_module_s,
        "exact_module_per_token_us": 1e6 * per_token_module,
        "exact_module_timed_tokens": int(loop_slice.sum()),
        "textbook_update_s_extrapolated": textbook_s,
        "textbook_sweep_s": textbook_times,
        "speedup_vs_exact_module": exact_module_s / vectorised_s,
        "speedup_vs_textbook": textbook_s / vectorised_s,
        "quality": quality,
    }
    print(f"LDA collapsed Gibbs, one update of {args.sweeps} sweeps over {args.docs} documents x "
          f"{args.tokens} tokens ({n_tokens} tokens), V={args.vocab}, K={args.k}, on "
          f"{figures['device_name']} ({figures['torch_threads']} threads)")
    print(f"  vectorised (block_size={args.docs}, one token per document): {vectorised_s:8.2f} s")
    print(f"  exact, module (block_size=1):  {exact_module_s:8.1f} s  extrapolated from one sweep of "
          f"{figures['exact_module_timed_tokens']} tokens ({figures['exact_module_per_token_us']:.0f} us/token)"
          f"  -> {figures['speedup_vs_exact_module']:.0f}x")
    print(f"  exact, NumPy textbook loop:    {textbook_s:8.1f} s  extrapolated from {len(textbook_times)} "
          f"whole sweep(s) of {np.median(textbook_times):.2f} s  -> {figures['speedup_vs_textbook']:.0f}x")
    print(f"  quality after one update, {args.quality_seeds} seed(s) each (if the blocks mattered, the log "
          f"joint would fall as block_size grows):")
    for row in quality.values():
        joints = ", ".join(f"{x:.0f}" for x in row["log_joint"])
        print(f"    block_size={row['block_size']:>6}: log joint {joints}; accuracy "
              f"{min(row['accuracy']):.3f}-{max(row['accuracy']):.3f}; {np.mean(row['seconds']):.2f} s per update")
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
