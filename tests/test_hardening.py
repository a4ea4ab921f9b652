"""Bad or unusual input at the graph's doors, in checkpoints and during training: a clear, named
error or correct handling, never a deep torch error and never silent damage."""

import numpy as np
import pytest
import torch

from serket.checkpoint import load_checkpoint
from serket.connections import Observation
from serket.errors import CheckpointError, DataError, GraphError, MessageError
from serket.graph import Graph
from serket.messages import Samples
from serket.modules.gmm import GMM
from serket.modules.multimodal import JMVAE, MVAE
from serket.modules.vae import VAE
from serket.training import AlternateTrainer, train


def _vae_gmm(images, *, seed=0, sweeps=2):
    g = Graph(seed=seed)
    g.add(Observation("images", images))
    g.add(VAE("vae", x_dim=images.shape[1], z_dim=2, hidden=(8,), epochs=1, first_epochs=1, batch_size=20))
    g.add(GMM("gmm", n_clusters=2, dim=2, sweeps=sweeps))
    g.observe("images", "vae.x")
    g.head_to_tail(upper="gmm.x", lower="vae.z")
    return g


def test_any_float_dtype_is_converted_once_at_the_door():
    base = torch.rand(40, 12, generator=torch.Generator().manual_seed(0))
    results = {}
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        g = _vae_gmm(base.to(dtype))
        assert g.node("images").data.values.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        history = AlternateTrainer(g, rounds=1, progress=False).run()
        results[dtype] = g.node("vae").latent_
        assert len(history) == 1
    # the VAE takes its input in its weights' dtype: float64 data give exactly the float32 run
    assert torch.equal(results[torch.float32], results[torch.float64])
    numpy_data = np.asarray(base.double().numpy())  # what numpy gives by default: float64
    vae = VAE("alone", x_dim=12, z_dim=2, hidden=(8,), epochs=1, first_epochs=1).fit(x=torch.from_numpy(numpy_data))
    assert vae.latent_.dtype == torch.float32
    for model in (MVAE, JMVAE):
        module = model("mm", {"a": 12, "b": 3}, likelihoods={"a": "bernoulli"}, z_dim=2, hidden=(8,),
                       epochs=1, first_epochs=1, batch_size=20)
        module.fit(a=base.double(), b=torch.randn(40, 3, dtype=torch.float64))
        assert torch.isfinite(module.latent_).all()


def test_integer_data_where_real_values_are_meant_is_refused_by_name():
    pixels = (torch.rand(10, 4) * 255).to(torch.uint8)
    with pytest.raises(DataError, match=r"observation 'images': integer data \(torch.uint8\)"):
        Observation("images", pixels)
    with pytest.raises(DataError, match=r"module 'vae' \(VAE\) port 'x': integer data \(torch.int64\)"):
        VAE("vae", x_dim=4, z_dim=2, hidden=(4,), epochs=1).receive("x", torch.ones(3, 4, dtype=torch.int64))
    mask = Observation("mask", torch.ones(5, 2, dtype=torch.bool))
    assert mask.data.values.dtype == torch.float32 and float(mask.data.values.sum()) == 10.0


def test_the_derived_schedule_of_the_speech_architecture_trains(tmp_path):
    from serket.audio import speech_sequences
    from serket.datasets import load_fsdd
    from serket.graphs.lda_asr import SCHEDULE, build_lda_asr

    digits = load_fsdd(source="bundled", speakers=["jackson"], verbose=False).subset(list(range(0, 500, 10)))
    graph = build_lda_asr(speech_sequences(digits.waveforms, digits.rate, digits.speakers), n_units=8,
                          asr={"n_best": 3}, lda={"sweeps": 3, "chains": 1})
    assert graph.schedule() == SCHEDULE == ["speech", "asr", "words", "lda", "words"]
    history = AlternateTrainer(graph, rounds=2, labels=digits.labels, progress=False).run()
    assert 0.0 <= history[-1]["metrics"]["lda"]["accuracy"] <= 1.0


def test_a_checkpoint_dir_that_cannot_be_used_is_refused_before_any_training(tmp_path):
    g = _vae_gmm(torch.rand(20, 6))
    a_file = tmp_path / "taken"
    a_file.write_text("a file")
    with pytest.raises(CheckpointError, match="checkpoint_dir: .*taken.* exists and is not a folder"):
        AlternateTrainer(g, rounds=1, checkpoint_dir=a_file, progress=False)
    with pytest.raises(CheckpointError, match="checkpoint_dir: cannot write"):
        AlternateTrainer(g, rounds=1, checkpoint_dir=a_file / "below", progress=False)
    assert g.node("vae").n_updates == 0


class _Diverging(VAE):
    """A VAE whose latent becomes non-finite in its second update (a diverging run)."""

    def publish(self):
        if self.n_updates >= 2:
            return {"z": Samples(torch.full_like(self.latent_, float("nan")))}
        return super().publish()


def test_an_error_during_training_names_the_round_the_node_and_the_port():
    g = Graph(seed=0)
    g.add(Observation("images", torch.rand(20, 6)))
    g.add(_Diverging("vae", x_dim=6, z_dim=2, hidden=(4,), epochs=1, first_epochs=1))
    g.add(GMM("gmm", n_clusters=2, dim=2, sweeps=2))
    g.observe("images", "vae.x")
    g.head_to_tail(upper="gmm.x", lower="vae.z")
    with pytest.raises(MessageError, match=r"^round 2: node 'vae' published a bad message on port 'z': "
                                           r"samples message: values has a non-finite value"):
        AlternateTrainer(g, rounds=3, progress=False).run()


def test_a_failed_connection_leaves_nothing_behind():
    g = Graph(seed=0)
    g.add(Observation("points", torch.randn(30, 2)))
    for name in ("a", "b"):
        g.add(GMM(name, n_clusters=2, dim=2, sweeps=1))
    with pytest.raises(GraphError):
        g.tail_to_tail("shared", ["a.c", "a.c"])  # the same port twice: refused halfway
    assert "shared" not in g.nodes
    g.tail_to_tail("shared", ["a.c", "b.c"])  # the corrected call, same name
    assert "shared" in g.nodes


def _resume_error(tmp_path, build_first, build_second):
    AlternateTrainer(build_first(), rounds=1, checkpoint_dir=tmp_path, progress=False).run()
    with pytest.raises(CheckpointError) as caught:
        AlternateTrainer(build_second(), rounds=2, checkpoint_dir=tmp_path, progress=False).run()
    return str(caught.value)


@pytest.mark.parametrize("change, expected", [
    ("graph seed", "graph seed: checkpoint 0, here 1"),
    ("module seed", "node 'gmm' setting seed: checkpoint 0, here 5"),
    ("module setting", "node 'gmm' setting sweeps: checkpoint 2, here 3"),
    ("data", "observation 'images': other data"),
])
def test_a_checkpoint_resumes_only_the_graph_that_wrote_it(tmp_path, change, expected):
    data = torch.rand(20, 6, generator=torch.Generator().manual_seed(1))
    other = data.clone()
    other[3, 2] = 0.5 if float(other[3, 2]) != 0.5 else 0.25  # same shape, one value different

    def second():
        if change == "graph seed":
            return _vae_gmm(data, seed=1)
        if change == "data":
            return _vae_gmm(other)
        g = _vae_gmm(data, sweeps=3 if change == "module setting" else 2)
        if change == "module seed":
            g.node("gmm").seed = 5
        return g

    message = _resume_error(tmp_path, lambda: _vae_gmm(data), second)
    assert expected in message and "start fresh" in message, message


@pytest.mark.parametrize("options, expected", [
    ({"temperature": 0.5}, "node 'shared' setting temperature: checkpoint 1.0, here 0.5"),
    ({"smoothing": 0.1}, "node 'shared' setting smoothing: checkpoint 0.01, here 0.1"),
    ({"restarts": 2}, "node 'shared' setting restarts: checkpoint 10, here 2"),
    ({"restarts": None}, "node 'shared' setting restarts: checkpoint 10, here None"),
    ({"em_iterations": 5}, "node 'shared' setting em_iterations: checkpoint 50, here 5"),
    ({"evidence_weight": {"b": 0.5}}, "node 'shared' setting evidence_weight: checkpoint {}, here {'b': 0.5}"),
    ({"prior_exponent": {"a": 2.0}}, "node 'shared' setting prior_exponent: checkpoint {}, here {'a': 2.0}"),
])
def test_every_combiner_setting_is_part_of_the_fingerprint(tmp_path, options, expected):
    def build(**options):
        g = Graph(seed=0)
        g.add(Observation("points", torch.randn(30, 2, generator=torch.Generator().manual_seed(0))))
        for name in ("a", "b"):
            g.add(GMM(name, n_clusters=2, dim=2, sweeps=1))
            g.observe("points", f"{name}.x")
        g.tail_to_tail("shared", ["a.c", "b.c"], **options)
        return g

    message = _resume_error(tmp_path, build, lambda: build(**options))
    assert expected in message, message
    assert load_checkpoint(tmp_path / "checkpoint.pt")["completed"] == 1


def _speech_graph(*, variance_floor=1e-3, bag_weights="scores", feedback=True):
    from serket.messages import Counts, Sequences
    from serket.modules.lda import LDA
    from serket.modules.asr import Recognizer

    gen = torch.Generator().manual_seed(0)
    frames = Sequences(torch.randn(12, 6, 2, generator=gen), torch.randint(3, 7, (12,), generator=gen))
    g = Graph(seed=0)
    g.add(Observation("speech", frames))
    g.add(Recognizer("asr", n_units=3, dim=2, n_best=2, restarts=1, iterations=2, variance_floor=variance_floor))
    g.add(LDA("lda", n_topics=2, vocab_sizes={"w": 3}, sweeps=1, tokens=5))
    g.observe("speech", "asr.audio")
    g.head_to_head("words", proposer="asr.w", weighter="lda.w", bag_weights=bag_weights, feedback=feedback)
    return g


@pytest.mark.parametrize("change, expected", [
    ({"variance_floor": 1e-2}, "node 'asr' setting variance_floor: checkpoint 0.001, here 0.01"),
    ({"bag_weights": "uniform"}, "node 'words' setting bag_weights: checkpoint 'scores', here 'uniform'"),
    ({"feedback": False}, "connections: checkpoint"),
])
def test_recogniser_and_head_to_head_settings_are_part_of_the_fingerprint(tmp_path, change, expected):
    message = _resume_error(tmp_path, _speech_graph, lambda: _speech_graph(**change))
    assert expected in message and "start fresh" in message, message


def test_a_checkpoint_of_the_previous_format_is_refused_as_older(tmp_path):
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"format": "neuro-serket-checkpoint/2", "completed": 1}, buffer)
    body = buffer.getvalue()
    older = tmp_path / "checkpoint.pt"
    older.write_bytes(f"neuro-serket-checkpoint/2 sha256={hashlib.sha256(body).hexdigest()}\n".encode() + body)
    with pytest.raises(CheckpointError, match=r"has format 'neuro-serket-checkpoint/2', this version reads "
                                              r"'neuro-serket-checkpoint/3'.*start fresh"):
        load_checkpoint(older)


_TRAIN_AND_MAYBE_HANG = r'''
import os, sys, time
from pathlib import Path
import torch
from serket.connections import Observation
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.training import AlternateTrainer

out, hang_at_save = Path(sys.argv[1]), int(sys.argv[2])
real_fsync, saves = os.fsync, [0]

def fsync(fd):  # the checkpoint's bytes are written, not yet renamed into place
    saves[0] += 1
    if saves[0] == hang_at_save:
        (out / "writing").write_text("now")
        time.sleep(120)
    real_fsync(fd)

os.fsync = fsync
g = Graph(seed=3)
g.add(Observation("images", torch.rand(60, 12, generator=torch.Generator().manual_seed(0))))
g.add(VAE("vae", x_dim=12, z_dim=2, hidden=(8,), epochs=2, first_epochs=2, batch_size=20))
g.add(GMM("gmm", n_clusters=3, dim=2, sweeps=3))
g.observe("images", "vae.x")
g.head_to_tail(upper="gmm.x", lower="vae.z")
AlternateTrainer(g, rounds=3, checkpoint_dir=out / "checkpoints", progress=True, stream=sys.stdout).run()
torch.save({"latent": g.node("vae").latent_, "clusters": g.node("gmm").predict()}, out / "result.pt")
'''


def test_a_run_killed_while_it_writes_a_checkpoint_resumes_to_the_same_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "train.py"
    script.write_text(_TRAIN_AND_MAYBE_HANG)

    def start(folder, hang_at_save):
        folder.mkdir()
        return subprocess.Popen([sys.executable, str(script), str(folder), str(hang_at_save)],
                                stdout=subprocess.DEVNULL)

    whole = start(tmp_path / "whole", 0)
    killed = start(tmp_path / "killed", 2)  # killed while writing the checkpoint of round 2
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed" / "writing").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the run never reached its checkpoint"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert list(checkpoints.glob(".checkpoint.pt.*.tmp")), "the kill should leave the half-done write"
    assert whole.wait(timeout=300) == 0
    rerun = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "0"], timeout=300,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from" in rerun.stdout and "after round 1" in rerun.stdout, rerun.stdout
    assert not list(checkpoints.glob("*.tmp")) and not list(checkpoints.glob(".*.tmp"))
    a = torch.load(tmp_path / "whole" / "result.pt")
    b = torch.load(tmp_path / "killed" / "result.pt")
    assert torch.equal(a["latent"], b["latent"]) and torch.equal(a["clusters"], b["clusters"])
    assert os.path.getsize(checkpoints / "checkpoint.pt") > 0


def test_graph_and_trainer_settings_are_checked_by_name():
    from serket.errors import ConfigError

    with pytest.raises(ConfigError, match="Graph: seed must be an integer, got 'abc'"):
        Graph(seed="abc")
    with pytest.raises(ConfigError, match="Graph: device must be .* got 'tpu'"):
        Graph(device="tpu")
    g = _vae_gmm(torch.rand(20, 6))
    with pytest.raises(ConfigError, match="AlternateTrainer: rounds must be an integer, got '2'"):
        AlternateTrainer(g, rounds="2", progress=False)
    with pytest.raises(ConfigError, match="epochs only apply to mode='joint'"):
        train(g, 1, mode="alternate", epochs=3, progress=False)
    with pytest.raises(ConfigError, match="JointTrainer: batch_size must be an integer >= 1, got 0"):
        train(g, 1, mode="joint", batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="mode must be 'alternate' or 'joint', got 'both'"):
        train(g, 1, mode="both")


@pytest.mark.parametrize("options, message", [
    ({"temperature": float("nan")}, "combiner 'shared': temperature must be a finite number > 0, got nan"),
    ({"temperature": 0}, "combiner 'shared': temperature must be a finite number > 0, got 0.0"),
    ({"smoothing": 1.0}, "combiner 'shared': smoothing must be a finite number in \\[0, 1\\), got 1.0"),
    ({"restarts": -2}, "combiner 'shared': restarts must be an integer >= 0, got -2"),
    ({"em_iterations": 0}, "combiner 'shared': em_iterations must be an integer >= 1, got 0"),
    ({"prior_exponent": {"a": float("inf")}}, "prior_exponent\\['a'\\] must be a finite number > 0"),
    ({"evidence_weight": {"a": 0.0}}, "evidence_weight\\['a'\\] must be a finite number > 0"),
    ({"evidence_weight": [0.5]}, "evidence_weight must be a dict of module name -> number"),
])
def test_combiner_settings_are_checked_by_name_and_leave_no_node(options, message):
    from serket.errors import ConfigError

    g = Graph(seed=0)
    for name in ("a", "b"):
        g.add(GMM(name, n_clusters=2, dim=2, sweeps=1))
    with pytest.raises(ConfigError, match=message):
        g.tail_to_tail("shared", ["a.c", "b.c"], **options)
    assert "shared" not in g.nodes


def test_head_to_head_settings_are_checked_by_name():
    from serket.connections import HeadToHead
    from serket.errors import ConfigError

    with pytest.raises(ConfigError, match="head-to-head 'w': bag_weights must be one of \\['scores', 'uniform'\\]"):
        HeadToHead("w", bag_weights="mean")
    with pytest.raises(ConfigError, match="head-to-head 'w': seed must be an integer, got 'x'"):
        HeadToHead("w", seed="x")


def test_a_head_to_head_whose_parents_cannot_be_joined_is_refused_before_training():
    from serket.messages import Counts
    from serket.modules.lda import LDA

    g = Graph(seed=0)
    g.add(Observation("d", torch.randn(20, 2)))
    g.add(Observation("w", Counts(torch.randint(0, 4, (20, 5)).float())))
    g.add(GMM("gmm", n_clusters=2, dim=2, sweeps=1))
    g.add(LDA("lda", n_topics=2, vocab_sizes={"w": 2, "o": 5}, sweeps=1, tokens=10))
    g.observe("d", "gmm.x")
    g.observe("w", "lda.o")
    g.head_to_head("h", proposer="gmm.x", weighter="lda.w", feedback=False)
    with pytest.raises(GraphError, match=r"head-to-head 'h' cannot join gmm.x \(sends \['gaussian'\]\) "
                                         r"with lda.w \(sends \['categorical'\]\)"):
        g.validate()
