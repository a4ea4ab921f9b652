"""Time one collapsed Gibbs sweep of the GMM: blocked (vectorised) against one point at a time.

Data: 3,000 points in 10-D from a 10-component Gaussian mixture, K = 10 (the size of the
Neuro-SERKET MNIST experiment's latent space). Three samplers of the same model:

* vectorised: :func:`serket.modules.gmm.gibbs_sweep` with ``block_size=256`` (the module's
  default), 256 items per batched step;
* per point (module): the same function with ``block_size=1``, the exact sequential sampler, a
  Python loop over the points (each step batched over the K clusters);
* per point (textbook): a hand-written loop that takes each point out of its cluster's
  statistics, scores every cluster with the Student-t predictive, draws, and puts it back.

The kernels of a blocked sweep: on a GPU the sweep is latency-bound (a few hundred small
kernels per sweep, each launched from Python), so the benchmark also counts the torch operators
one sweep calls (each one that is not a view or an allocation launches at least one kernel on a
GPU), for the module's sweep and for :func:`reference_sweep`, the sweep as it was written before
it was restructured for fewer kernels (issue 14), and checks that both draw the same chain to
the bit.

Measured on this problem (the figures the GMM's docstring once carried): at the default 256
items per block the blocked and the exact sampler reach the same clusterings and log joints
within their own run-to-run spread (three seeds, 20 sweeps), and a sweep costs 12 batched steps
instead of 3,000. In float32 the log conditionals of these 3,000 items were off by up to 0.04
(0.008 once centred on the prior mean), which is why the module works in float64.

Usage::

    python benchmarks/bench_gmm_gibbs.py [--device cpu|cuda] [--repeats 5] [--json out.json]
"""

import argparse
import collections
import contextlib
import statistics
import time
import warnings

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from serket.bench.reporting import write_json
from serket.modules.gmm import (
    GMM,
    ClusterCollapseWarning,
    NormalWishart,
    SweepResult,
    _count_terms,
    _features,
    _moments,
    _posterior,
    _quadratic_forms,
    gibbs_sweep,
    normal_wishart_posterior,
    student_t_log_predictive,
    sufficient_statistics,
)
from serket.sampling import gumbel_noise

# operators that only make a view of a tensor or allocate one: no kernel on any device
NO_KERNEL_OPS = {"view", "_unsafe_view", "slice", "select", "t", "transpose", "expand", "diagonal", "squeeze",
                 "unsqueeze", "reshape", "as_strided", "alias", "permute", "detach", "unbind", "split",
                 "narrow", "empty", "empty_like", "empty_strided"}


class OperatorCount(TorchDispatchMode):
    """Counts the aten operators called inside it (by name)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    def kernels(self):
        """Operators that do more than make a view or allocate: on a GPU, each launches one
        kernel or more."""
        return sum(count for name, count in self.calls.items() if name not in NO_KERNEL_OPS)

    def host_syncs(self):
        """``.item()``, ``.tolist()``, ``bool(tensor)``...: each waits for the device."""
        return self.calls["_local_scalar_dense"]


def reference_sweep(points, assignments, prior, *, alpha, n_clusters, block_size, generator,
                    log_prior=None, record=False, statistics=None):
    """:func:`gibbs_sweep` as it was before issue 14 (the same arithmetic in the same order, but
    with the monomials, the identity, three count-table gathers and the one-hot comparisons made
    in every block, the table of count terms made in every sweep and the draws and conditionals
    written block by block), kept to count its operators and to check the module's sweep against."""
    n, dim = points.shape
    dtype, device = points.dtype, points.device
    labels = torch.arange(n_clusters, device=device)
    moments = _moments(points, assignments, n_clusters) if statistics is None else statistics
    base = prior.scale0 + prior.kappa0 * torch.outer(prior.mean0, prior.mean0)
    kappa0_mean0 = prior.kappa0 * prior.mean0
    every_count = torch.arange(n + 1, dtype=dtype, device=device)
    kappas, nus = prior.kappa0 + every_count, prior.nu0 + every_count
    table = _count_terms(kappas, nus, every_count, alpha, n_clusters, dim)
    order = torch.randperm(n, generator=generator, device=device)
    gumbel = gumbel_noise((n, n_clusters), generator=generator, dtype=dtype, device=device)
    xs, current = points[order], assignments[order]
    log_prior = None if log_prior is None else log_prior[order]
    if record:
        conditionals = torch.empty(n, n_clusters, dtype=dtype, device=device)
        own_conditionals = torch.empty_like(conditionals)
    tiny = torch.finfo(dtype).tiny
    for start in range(0, n, block_size):
        block = slice(start, start + block_size)
        old = current[block]
        counts, sums, outer = moments[:, 0], moments[:, 1:1 + dim], moments[:, 1 + dim:].reshape(n_clusters, dim, dim)
        count = counts.long()
        post = _posterior(kappas[count], nus[count], kappa0_mean0 + sums, outer, base)
        features = _features(xs[block])
        eye = torch.eye(dim, dtype=dtype, device=device)
        a = (features @ _quadratic_forms(post.chol, post.mean, eye)).clamp_min(0)
        terms, half_logdet = table[count], 0.5 * post.logdet
        log_new = (terms[:, 0] - half_logdet) - terms[:, 4] * torch.log1p(terms[:, 2] * a)
        log_own = (terms[:, 1] - half_logdet) - terms[:, 5] * torch.log((1 - terms[:, 3] * a).clamp_min(tiny))
        logits = torch.where(old[:, None] == labels, log_own, log_new)
        full = logits if log_prior is None else logits + log_prior[block]
        new = (full + gumbel[block]).argmax(1)
        if record:
            conditionals[block] = torch.softmax(full, 1)
            own_conditionals[block] = torch.softmax(logits, 1)
        delta = (new[:, None] == labels).to(dtype) - (old[:, None] == labels).to(dtype)
        moments = moments + delta.T @ features
        current[block] = new
    assignments[order] = current
    if not record:
        return SweepResult(assignments, moments, None, None)
    unsorted = torch.empty_like(conditionals), torch.empty_like(own_conditionals)
    unsorted[0][order], unsorted[1][order] = conditionals, own_conditionals
    return SweepResult(assignments, moments, unsorted[0], unsorted[1])


def compare_sweeps(points, assignments, prior, *, k, block_size, log_prior, seed=4):
    """Operators of a sweep (the second of an update: statistics carried, nothing recorded) of
    the module's sweep and of the reference, and whether both chains agree to the bit after a
    third sweep that records the conditionals, as an update's last one does."""
    outcomes = {}
    for name, sweep in (("module", gibbs_sweep), ("reference", reference_sweep)):
        chain = assignments.clone()
        generator = torch.Generator(device=points.device).manual_seed(seed)
        counter, carried = OperatorCount(), None
        for s in range(3):
            with counter if s == 1 else contextlib.nullcontext():
                result = sweep(points, chain, prior, alpha=1.0, n_clusters=k, block_size=block_size,
                               generator=generator, log_prior=log_prior, record=s == 2,
                               statistics=carried)
            carried = result.statistics
        outcomes[name] = (counter, result)
    (mine, got), (theirs, expected) = outcomes["module"], outcomes["reference"]
    identical = all(torch.equal(x, y) for x, y in zip(got, expected))
    return mine, theirs, identical


def time_against_reference(points, assignments, prior, *, k, block_size, log_prior, repeats, seed):
    """Seconds of a sweep of the module's sweep and of the reference, each on its own chain,
    timed in turn (so that a busy machine slows both alike); medians."""
    chains = {}
    for name, sweep in (("module", gibbs_sweep), ("reference", reference_sweep)):
        generator = torch.Generator(device=points.device).manual_seed(seed)
        chain = assignments.clone()
        carried = sweep(points, chain, prior, alpha=1.0, n_clusters=k, block_size=block_size,
                        generator=generator, log_prior=log_prior).statistics
        chains[name] = [sweep, chain, generator, carried, []]
    for _ in range(repeats):
        for state in chains.values():
            sweep, chain, generator, carried, times = state
            _sync(points.device)
            start = time.perf_counter()
            state[3] = sweep(points, chain, prior, alpha=1.0, n_clusters=k, block_size=block_size,
                             generator=generator, log_prior=log_prior, statistics=carried).statistics
            _sync(points.device)
            times.append(time.perf_counter() - start)
    return chains["module"][4], chains["reference"][4]


def synthetic_mixture(n, dim, k, generator, dtype=torch.float64):
    centres = 3.0 * torch.randn(k, dim, generator=generator, dtype=dtype)
    labels = torch.randint(k, (n,), generator=generator)
    spread = 0.5 + torch.rand(k, 1, generator=generator, dtype=dtype)
    return centres[labels] + spread[labels] * torch.randn(n, dim, generator=generator, dtype=dtype), labels


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sweeps(points, assignments, prior, *, k, block_size, repeats, seed):
    """Seconds of each of ``repeats`` consecutive sweeps of one chain (statistics carried over
    from sweep to sweep, as within an update)."""
    generator = torch.Generator(device=points.device).manual_seed(seed)
    statistics = gibbs_sweep(points, assignments, prior, alpha=1.0, n_clusters=k, block_size=256,
                             generator=generator).statistics
    times = []
    for _ in range(repeats):
        _sync(points.device)
        start = time.perf_counter()
        statistics = gibbs_sweep(points, assignments, prior, alpha=1.0, n_clusters=k,
                                 block_size=block_size, generator=generator,
                                 statistics=statistics).statistics
        _sync(points.device)
        times.append(time.perf_counter() - start)
    return times


def textbook_sweep(points, assignments, prior, *, k, alpha, generator):
    """Sequential collapsed Gibbs written the plain way, one point at a time."""
    counts, sums, outer = (t.clone() for t in sufficient_statistics(points, assignments, k))
    for i in torch.randperm(points.shape[0], generator=generator, device=points.device).tolist():
        x, old = points[i], assignments[i]
        xx = torch.outer(x, x)
        counts[old] -= 1
        sums[old] -= x
        outer[old] -= xx
        post = normal_wishart_posterior(prior, counts, sums, outer)
        logp = torch.log(counts + alpha / k) + student_t_log_predictive(x[None], post)[0]
        u = torch.rand(k, generator=generator, dtype=points.dtype, device=points.device)
        new = (logp - torch.log(-torch.log(u))).argmax()
        counts[new] += 1
        sums[new] += x
        outer[new] += xx
        assignments[i] = new
    return assignments


def time_textbook(points, assignments, prior, *, k, repeats, seed):
    generator = torch.Generator(device=points.device).manual_seed(seed)
    times = []
    for _ in range(repeats):
        _sync(points.device)
        start = time.perf_counter()
        textbook_sweep(points, assignments, prior, k=k, alpha=1.0, generator=generator)
        _sync(points.device)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed sweeps per sampler (median reported)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    data, _ = synthetic_mixture(args.n, args.dim, args.k, torch.Generator().manual_seed(0))
    points = (data - data.mean(0)).to(device)
    # the module's default prior: m0 = data mean, S0 = (nu0 - D - 1) v K^(-2/D) I
    nu0 = args.dim + 2.0
    v = float(points.var(0, unbiased=False).mean())
    scale0 = (nu0 - args.dim - 1) * v * args.k ** (-2.0 / args.dim) * torch.eye(args.dim, dtype=torch.float64)
    prior = NormalWishart(torch.zeros(args.dim, dtype=torch.float64, device=device), 0.01, nu0, scale0.to(device))
    start = torch.randint(args.k, (args.n,), generator=torch.Generator().manual_seed(1)).to(device)

    # warm up both paths (kernels, allocator), then time from the same state
    for block in (args.block_size, 1):
        time_sweeps(points[:300], start[:300].clone(), prior, k=args.k, block_size=block, repeats=1, seed=2)
    blocked = time_sweeps(points, start.clone(), prior, k=args.k, block_size=args.block_size,
                          repeats=args.repeats, seed=3)
    loop_repeats = max(1, min(args.repeats, 3))
    per_point = time_sweeps(points, start.clone(), prior, k=args.k, block_size=1,
                            repeats=loop_repeats, seed=3)
    textbook = time_textbook(points, start.clone(), prior, k=args.k, repeats=loop_repeats, seed=3)

    # operators (kernels on a GPU) per sweep, against the sweep before issue 14; with a prior on c
    # as in a graph (the trainer sends one)
    log_prior = torch.log_softmax(torch.randn(args.n, args.k, generator=torch.Generator().manual_seed(5),
                                              dtype=torch.float64), 1).to(device)
    mine, theirs, identical = compare_sweeps(points, start.clone(), prior, k=args.k,
                                             block_size=args.block_size, log_prior=log_prior)
    with_prior, reference = time_against_reference(points, start, prior, k=args.k, block_size=args.block_size,
                                                   log_prior=log_prior, repeats=4 * args.repeats, seed=3)

    # a whole default update (50 sweeps, k-means++ start) through the module, for scale
    gmm = GMM("bench", n_clusters=args.k, dim=args.dim, device=device)
    _sync(device)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # a cluster may die from a poor start; we only time here
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        gmm.fit(data.float().to(device))
    _sync(device)
    update_s = time.perf_counter() - t0

    figures = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "n": args.n, "dim": args.dim, "k": args.k, "block_size": args.block_size,
        "vectorised_sweep_s": statistics.median(blocked),
        "per_point_sweep_s": statistics.median(per_point),
        "textbook_sweep_s": statistics.median(textbook),
        "vectorised_all_s": blocked,
        "per_point_all_s": per_point,
        "textbook_all_s": textbook,
        "update_50_sweeps_s": update_s,
        "with_prior_sweep_s": statistics.median(with_prior),
        "reference_sweep_s": statistics.median(reference),
        "with_prior_all_s": with_prior,
        "reference_all_s": reference,
        "kernels_per_sweep": mine.kernels(),
        "operators_per_sweep": sum(mine.calls.values()),
        "reference_kernels_per_sweep": theirs.kernels(),
        "reference_operators_per_sweep": sum(theirs.calls.values()),
        "host_syncs_per_sweep": mine.host_syncs(),
        "identical_to_reference": identical,
    }
    figures["speedup"] = figures["per_point_sweep_s"] / figures["vectorised_sweep_s"]
    figures["speedup_vs_textbook"] = figures["textbook_sweep_s"] / figures["vectorised_sweep_s"]
    ms = {key: 1e3 * figures[key] for key in ("vectorised_sweep_s", "per_point_sweep_s", "textbook_sweep_s")}
    print(f"GMM collapsed Gibbs, one sweep over {args.n} x {args.dim}-D points, K={args.k}, "
          f"on {figures['device_name']} ({figures['torch_threads']} threads)")
    print(f"  vectorised (block_size={args.block_size}):  {ms['vectorised_sweep_s']:9.2f} ms  (median of {len(blocked)})")
    print(f"  per point, module (block_size=1): {ms['per_point_sweep_s']:9.2f} ms  (median of {len(per_point)})"
          f"  -> {figures['speedup']:.0f}x")
    print(f"  per point, textbook loop:        {ms['textbook_sweep_s']:9.2f} ms  (median of {len(textbook)})"
          f"  -> {figures['speedup_vs_textbook']:.0f}x")
    print(f"  a default update (50 sweeps, k-means++ start): {update_s:.2f} s")
    blocks = -(-args.n // args.block_size)
    print(f"  with a prior on c, against the sweep before issue 14 (timed in turn):")
    print(f"    kernels (operators other than views and allocations) per sweep: {figures['kernels_per_sweep']} "
          f"({figures['kernels_per_sweep'] / blocks:.1f} per block of {blocks}, "
          f"{figures['kernels_per_sweep'] / args.n:.3f} per item; all operators "
          f"{figures['operators_per_sweep']}), host syncs {figures['host_syncs_per_sweep']}")
    print(f"    before issue 14: {figures['reference_kernels_per_sweep']} kernels "
          f"({figures['reference_operators_per_sweep']} operators)  -> now "
          f"{figures['kernels_per_sweep'] / figures['reference_kernels_per_sweep']:.2f}x the kernels")
    print(f"    a sweep: {1e3 * figures['with_prior_sweep_s']:.2f} ms, before "
          f"{1e3 * figures['reference_sweep_s']:.2f} ms (medians of {len(reference)})  -> now "
          f"{figures['with_prior_sweep_s'] / figures['reference_sweep_s']:.2f}x the time; "
          f"same chain to the bit: {identical}")
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
