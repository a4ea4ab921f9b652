import pytest
import torch

from serket.checkpoint import load_checkpoint, save_checkpoint
from serket.connections import Observation
from serket.errors import CheckpointError
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.training import AlternateTrainer


def _data(n=90, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=gen) > 0.5).float()
    labels = torch.arange(n) % 3
    flips = (torch.rand(n, d, generator=gen) < 0.05).float()
    return (protos[labels] - flips).abs(), labels


def _graph(x, seed=0):
    g = Graph(seed=seed)
    g.add(Observation("images", x))
    g.add(VAE("vae", x_dim=16, z_dim=2, hidden=(16,), epochs=3, batch_size=30, lr=3e-3, seed=seed))
    g.add(GMM("gmm", n_clusters=3, dim=2, sweeps=5, seed=seed))
    g.observe("images", "vae.x")
    g.head_to_tail(upper="gmm.x", lower="vae.z")
    return g


def _final_state(g):
    vae, gmm = g.node("vae"), g.node("gmm")
    return [p.detach().clone() for p in vae.parameters()] + [gmm.predict().clone(), gmm.responsibilities_.clone()]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    x, y = _data()
    full = _graph(x)
    AlternateTrainer(full, rounds=4, labels=y, checkpoint_dir=tmp_path / "a", progress=False).run()

    first = _graph(x)
    AlternateTrainer(first, rounds=2, labels=y, checkpoint_dir=tmp_path / "b", progress=False).run()
    # new process in spirit: fresh objects, global generators disturbed, resume from round 2
    torch.manual_seed(12345)
    resumed = _graph(x)
    trainer = AlternateTrainer(resumed, rounds=4, labels=y, checkpoint_dir=tmp_path / "b", progress=False)
    history = trainer.run()
    assert [h["round"] for h in history] == [1, 2, 3, 4]
    for a, b in zip(_final_state(full), _final_state(resumed)):
        assert torch.equal(a, b)
    # and the run is not trivially constant: another seed ends elsewhere
    other = _graph(x, seed=1)
    AlternateTrainer(other, rounds=4, progress=False).run()
    assert not all(torch.equal(a, b) for a, b in zip(_final_state(full), _final_state(other)))


def test_history_has_metrics_and_terms(tmp_path):
    x, y = _data()
    history = AlternateTrainer(_graph(x), rounds=2, labels=y, progress=False).run()
    assert set(history[-1]["metrics"]["gmm"]) == {"accuracy", "ari", "nmi"}
    assert {"reconstruction", "kl", "loss"} <= set(history[-1]["diagnostics"]["vae"])


def test_corrupt_truncated_and_foreign_checkpoints_are_named(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="checkpoint.pt is not a neuro-serket checkpoint.*start fresh"):
        load_checkpoint(bad)
    bad.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is empty \(0 bytes\)"):
        load_checkpoint(bad)
    folder = tmp_path / "folder" / "checkpoint.pt"
    folder.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(folder)
    x, y = _data()
    AlternateTrainer(_graph(x), rounds=1, checkpoint_dir=tmp_path / "ok", progress=False).run()
    good = (tmp_path / "ok" / "checkpoint.pt").read_bytes()
    truncated = tmp_path / "trunc" / "checkpoint.pt"
    truncated.parent.mkdir()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt is damaged"):
        AlternateTrainer(_graph(x), rounds=2, checkpoint_dir=truncated.parent, progress=False).run()
    for position in (len(good) // 3, len(good) - 40):  # one flipped byte, anywhere past the header
        flipped = bytearray(good)
        flipped[position] ^= 0x01
        truncated.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="is damaged .*sha256"):
            load_checkpoint(truncated)
    older = tmp_path / "older.pt"
    torch.save({"format": "neuro-serket-checkpoint/1"}, older)  # what earlier versions wrote
    with pytest.raises(CheckpointError, match="not a neuro-serket checkpoint"):
        load_checkpoint(older)
    save_checkpoint(tmp_path / "foreign.pt", {"something": 1})
    payload = load_checkpoint(tmp_path / "foreign.pt")
    assert payload["something"] == 1
    # a checkpoint of a different graph
    g = Graph(seed=0)
    g.add(Observation("images", x))
    g.add(VAE("vae", x_dim=16, z_dim=2, hidden=(16,), epochs=1))
    g.add(GMM("clusters", n_clusters=3, dim=2, sweeps=2))
    g.observe("images", "vae.x")
    g.head_to_tail(upper="clusters.x", lower="vae.z")
    with pytest.raises(CheckpointError, match="different graph"):
        AlternateTrainer(g, rounds=2, checkpoint_dir=tmp_path / "ok", progress=False).run()


def test_no_temporary_files_are_left_behind(tmp_path):
    x, _ = _data()
    AlternateTrainer(_graph(x), rounds=2, checkpoint_dir=tmp_path, progress=False).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_linked_vae_gmm_on_real_mnist_beats_a_floor():
    from serket.datasets import load_mnist_subset
    from serket.graphs.vae_gmm import run_vae_gmm

    x, y = load_mnist_subset(per_class=100, seed=0, verbose=False)
    result = run_vae_gmm(x, y, rounds=3, linked=True, seed=0, progress=False,
                         vae={"epochs": 10, "first_epochs": 40, "batch_size": 100}, gmm={"sweeps": 20})
    # 1,000 images, ~80 epochs: measured 0.55-0.65 across seeds 0-2; chance is 0.1 (and a
    # single Gaussian on the raw pixels would give ~0.2)
    assert result["final"]["accuracy"] > 0.45


def test_benchmark_command_runs_end_to_end(tmp_path, capfd, golden_figures):
    from serket.bench.cli import main

    # one run after another in this process (the other benchmarks' smoke tests run in workers)
    assert main(["bench", "vae-gmm", "--quick", "--seeds", "0", "--workers", "1", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert out.splitlines()[0].startswith("data: MNIST train")
    assert golden_figures("vae-gmm", tmp_path / "results.json").keys() == {"separate", "linked"}
    assert "| linked |" in out and "| separate |" in out
    for name in ("results.json", "results.md", "accuracy_per_round.png", "confusion_linked.png",
                 "latent_linked.png", "graph_linked.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    # a second run, in two worker processes, resumes from the checkpoints instead of training again
    assert main(["bench", "vae-gmm", "--quick", "--seeds", "0", "--workers", "2", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert out.count("resumed from") == 2 and "round   1/2" not in out


def test_example_runs_as_a_smoke_test(load_example):
    example = load_example("vae_gmm_mnist.py")
    results = example.main(["--per-class", "10", "--rounds", "2", "--epochs", "1", "--sweeps", "3"])
    assert set(results) == {"separate", "linked"}


def test_a_checkpoint_is_not_resumed_with_other_module_settings(tmp_path):
    x, y = _data()
    AlternateTrainer(_graph(x), rounds=1, checkpoint_dir=tmp_path, progress=False).run()
    g = _graph(x)
    g.node("gmm").sweeps = 7  # same graph, another setting
    with pytest.raises(CheckpointError, match="node .gmm. setting sweeps: checkpoint 5, here 7"):
        AlternateTrainer(g, rounds=2, checkpoint_dir=tmp_path, progress=False).run()


def test_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / ".checkpoint.pt.zz.tmp"]
    for path in stale:
        path.write_bytes(b"")  # what a writer killed before its first byte leaves
    other = tmp_path / ".results.json.x.tmp"
    other.write_bytes(b"")
    save_checkpoint(tmp_path / "checkpoint.pt", {"completed": 1})
    assert not any(path.exists() for path in stale) and other.exists()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["completed"] == 1


def test_history_records_peak_memory_per_node(tmp_path):
    import json

    x, y = _data()
    history = AlternateTrainer(_graph(x), rounds=2, labels=y, checkpoint_dir=tmp_path, progress=False).run()
    for record in history:
        peaks, growth = record["node_peak_rss_mib"], record["node_peak_rss_growth_mib"]
        assert set(peaks) == set(growth) == set(record["node_seconds"]) == {"images", "vae", "gmm"}
        assert all(p > 0 for p in peaks.values()) and all(g >= 0 for g in growth.values())
        # the peak never falls: each node's is at least that of the nodes before it in the round
        assert peaks["images"] <= peaks["vae"] <= peaks["gmm"]
    json.dumps(history)  # the records stay JSON
    # and they survive the checkpoint, which holds the history
    assert load_checkpoint(tmp_path / "checkpoint.pt")["history"][-1]["node_peak_rss_mib"] == peaks


def test_a_checkpoint_is_its_header_and_the_bytes_torch_save_writes(tmp_path):
    import hashlib
    import io

    payload = {"completed": 3, "tensors": [torch.arange(10_000, dtype=torch.int16), torch.randn(300, 7)],
               "history": [{"round": 1, "seconds": 0.5}]}
    path = save_checkpoint(tmp_path / "checkpoint.pt", payload)
    buffer = io.BytesIO()
    torch.save({"format": "neuro-serket-checkpoint/3", **payload}, buffer)
    body = buffer.getvalue()
    expected = f"neuro-serket-checkpoint/3 sha256={hashlib.sha256(body).hexdigest()}\n".encode() + body
    assert path.read_bytes() == expected
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["tensors"][0], payload["tensors"][0]) and loaded["completed"] == 3
