"""Every constructor and entry point checks its settings and names the bad one.

A setting of the wrong type, out of its range, infinite or NaN is a ConfigError whose message
names the owner (``"VAE 'vae'"``), the setting and the value; bad data is a DataError naming
the problem. None of them surfaces as a torch, numpy or Python error from deep inside.
"""

import math
import re

import numpy as np
import pytest
import torch

from serket.audio.frontend import FrontEnd, add_deltas, pooled_features
from serket.audio.wav import read_wav
from serket.clustering import kmeans
from serket.errors import ConfigError, DataError
from serket.messages import Sequences
from serket.metrics import clustering_accuracy, clustering_report
from serket.module import resolve_device
from serket.modules.asr import Recognizer
from serket.modules.gmm import GMM
from serket.modules.lda import LDA
from serket.modules.mixture import MixturePrior
from serket.modules.multimodal import JMVAE, MVAE
from serket.modules.vae import VAE

INF, NAN = float("inf"), float("nan")


def _raises(error, owner: str, setting: str, value: str, build):
    """``build()`` raises ``error`` with a one-sentence message that starts with the owner and
    names the setting and the bad value."""
    with pytest.raises(error) as caught:
        build()
    message = str(caught.value)
    assert message.startswith(f"{owner}: "), message
    assert setting in message and value in message, message
    assert "\n" not in message
    return message


# --- the module base: device, seed, name ----------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "gpu:0", "cuda:x", "meta", 3])
def test_an_unknown_device_is_a_config_error_naming_the_module_and_the_device(device):
    _raises(ConfigError, "VAE 'vae'", "device", repr(device), lambda: VAE("vae", device=device))
    _raises(ConfigError, "GMM 'g'", "device", repr(device), lambda: GMM("g", device=device))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    _raises(ConfigError, "LDA 'lda'", "device 'cuda'", "not available",
            lambda: LDA("lda", vocab_sizes=(3,), device="cuda"))
    with pytest.raises(ConfigError, match="device 'cuda:1' was asked for, but CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_device_beyond_the_machine_is_a_config_error():
    index = torch.cuda.device_count()
    _raises(ConfigError, "VAE 'vae'", f"device 'cuda:{index}'", "CUDA device",
            lambda: VAE("vae", device=f"cuda:{index}"))


def test_the_known_devices_still_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")


@pytest.mark.parametrize("seed", ["abc", 1.5, None, True])
def test_a_seed_that_is_not_an_integer_is_refused_by_name(seed):
    _raises(ConfigError, "VAE 'vae'", "seed", repr(seed), lambda: VAE("vae", seed=seed))


def test_seeds_of_numpy_integer_type_still_work():
    assert VAE("vae", x_dim=4, z_dim=2, hidden=(3,), seed=np.int64(3)).seed == 3


def test_an_empty_name_is_a_config_error():
    with pytest.raises(ConfigError, match="^GMM: name must be a non-empty string, got ''$"):
        GMM("")


# --- VAE --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(x_dim=0), "x_dim", "0"),
    (dict(z_dim="3"), "z_dim", "'3'"),
    (dict(z_dim=2.5), "z_dim", "2.5"),
    (dict(hidden=(0,)), "hidden", "0"),
    (dict(hidden="128"), "hidden", "'128'"),
    (dict(epochs=-1), "epochs", "-1"),
    (dict(first_epochs=-1), "first_epochs", "-1"),
    (dict(first_epochs=1.5), "first_epochs", "1.5"),
    (dict(batch_size=0), "batch_size", "0"),
    (dict(lr=0), "lr", "0"),
    (dict(lr=NAN), "lr", "nan"),
    (dict(lr=INF), "lr", "inf"),
    (dict(kl_weight=INF), "kl_weight", "inf"),
    (dict(kl_weight=-1.0), "kl_weight", "-1.0"),
    (dict(architecture="rnn"), "architecture", "'rnn'"),
    (dict(likelihood="poisson"), "likelihood", "'poisson'"),
    (dict(restart="cold"), "restart", "'cold'"),
    (dict(send="mode"), "send", "'mode'"),
    (dict(x_dim=64, architecture="conv", hidden=()), "hidden", "()"),
    (dict(x_dim=64, architecture="conv", hidden=(32, 16)), "hidden", "(32, 16)"),
    (dict(x_dim=50, architecture="conv"), "x_dim", "50"),
])
def test_vae_settings(kwargs, setting, value):
    _raises(ConfigError, "VAE 'vae'", setting, value, lambda: VAE("vae", **kwargs))


def test_vae_first_epochs_minus_one_no_longer_fails_in_update():
    # it raised UnboundLocalError in the first update; now the constructor refuses it
    message = _raises(ConfigError, "VAE 'vae'", "first_epochs", "-1",
                      lambda: VAE("vae", x_dim=4, z_dim=2, first_epochs=-1))
    assert message == "VAE 'vae': first_epochs must be an integer >= 0, got -1"


def test_vae_valid_settings_keep_their_meaning():
    vae = VAE("vae", x_dim=4, z_dim=2, hidden=8, epochs=0)
    assert vae.hidden == (8,) and vae.epochs == 0 and vae.first_epochs == 0
    assert VAE("vae", x_dim=4, z_dim=2, hidden=()).hidden == ()       # a linear encoder
    assert VAE("vae", x_dim=64, architecture="conv", hidden=[16]).hidden == (16,)


# --- GMM --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(n_clusters="3"), "n_clusters", "'3'"),
    (dict(n_clusters=0), "n_clusters", "0"),
    (dict(dim=0), "dim", "0"),
    (dict(alpha=INF), "alpha", "inf"),
    (dict(alpha=NAN), "alpha", "nan"),
    (dict(alpha=0), "alpha", "0"),
    (dict(kappa0=INF), "kappa0", "inf"),
    (dict(nu0=NAN), "nu0", "nan"),
    (dict(nu0=1.0), "nu0", "1.0"),
    (dict(sweeps=0.5), "sweeps", "0.5"),
    (dict(sweeps=0), "sweeps", "0"),
    (dict(block_size=0), "block_size", "0"),
    (dict(prior_variance="diag"), "prior_variance", "'diag'"),
    (dict(init="kmeans"), "init", "'kmeans'"),
    (dict(dim=3, mean0=[0.0, 0.0]), "mean0", "(2,)"),
    (dict(dim=2, mean0=[0.0, NAN]), "mean0", "nan"),
    (dict(dim=2, mean0="origin"), "mean0", "'origin'"),
    (dict(dim=2, scale0=INF), "scale0", "inf"),
    (dict(dim=2, scale0=[[1.0, 0.0], [0.0, -1.0]]), "scale0", "positive definite"),
    (dict(dim=2, scale0=torch.eye(3)), "scale0", "(3, 3)"),
])
def test_gmm_settings(kwargs, setting, value):
    kwargs = {"dim": 2, **kwargs}
    _raises(ConfigError, "GMM 'gmm'", setting, value, lambda: GMM("gmm", **kwargs))


def test_gmm_mean0_of_the_wrong_size_is_named():
    with pytest.raises(ConfigError, match=re.escape("GMM 'gmm': mean0 must be a (3,) vector for dim=3, "
                                                    "got shape (2,)")):
        GMM("gmm", n_clusters=2, dim=3, mean0=[0.0, 1.0])


def test_gmm_sample_assignments_checks_its_count():
    gmm = GMM("gmm", n_clusters=2, dim=2, sweeps=1).fit(torch.randn(20, 2))
    _raises(ConfigError, "GMM 'gmm'", "n_sweeps", "0", lambda: gmm.sample_assignments(0))


# --- LDA --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(n_topics="a"), "n_topics", "'a'"),
    (dict(n_topics=0), "n_topics", "0"),
    (dict(n_topics=2.0), "n_topics", "2.0"),
    (dict(vocab_sizes=("x",)), "vocab_sizes['w0']", "'x'"),
    (dict(vocab_sizes=(3, 0)), "vocab_sizes['w1']", "0"),
    (dict(vocab_sizes=()), "vocab_sizes", "()"),
    (dict(vocab_sizes=7), "vocab_sizes", "int"),
    (dict(alpha=INF), "alpha", "inf"),
    (dict(beta=NAN), "beta", "nan"),
    (dict(tokens=0), "tokens", "0"),
    (dict(tokens=INF), "tokens", "inf"),
    (dict(tokens=1e7), "tokens", "10000000.0"),
    (dict(tokens=0.3), "tokens", "0.3"),
    (dict(tokens="100"), "tokens", "'100'"),
    (dict(vocab_sizes=(3, 3), tokens=6000), "tokens", "12000"),
    (dict(weights=(INF,)), "weights['w0']", "inf"),
    (dict(weights=(-1.0,)), "weights['w0']", "-1.0"),
    (dict(weights=(0.0,)), "weights", "0.0"),
    (dict(weights=1.0), "weights", "1.0"),
    (dict(weights={"x": 1.0}), "weights", "unknown modalities"),
    (dict(sweeps=INF), "sweeps", "inf"),
    (dict(sweeps=0), "sweeps", "0"),
    (dict(block_size=0), "block_size", "0"),
    (dict(chains=None), "chains", "None"),
    (dict(chains=0), "chains", "0"),
])
def test_lda_settings(kwargs, setting, value):
    kwargs = {"vocab_sizes": (3,), **kwargs}
    _raises(ConfigError, "LDA 'lda'", setting, value, lambda: LDA("lda", **kwargs))


def test_lda_tokens_are_bounded_by_a_stated_maximum():
    # tokens=1e7 on two documents ran for 8 minutes at 2.4 GB; now the bound is stated and named
    assert LDA.MAX_TOKENS_PER_DOCUMENT == 10_000
    with pytest.raises(ConfigError, match=r"^LDA 'lda': tokens must be a finite number > 0 and <= 10000, "
                                          r"got 10000000\.0$"):
        LDA("lda", vocab_sizes=(3,), tokens=1e7)
    assert LDA("lda", vocab_sizes=(3,), tokens=LDA.MAX_TOKENS_PER_DOCUMENT).tokens == 10_000
    # counts used as given (tokens=None) are held to the same bound, by document
    lda = LDA("lda", n_topics=2, vocab_sizes=(3,), tokens=None, sweeps=1)
    counts = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1e7, 0.0]])
    with pytest.raises(DataError, match=r"^LDA 'lda': document 1 has 10000000 tokens .*MAX_TOKENS_PER_DOCUMENT"):
        lda.fit(w0=counts)


def test_lda_sample_topics_checks_its_count():
    lda = LDA("lda", n_topics=2, vocab_sizes=(4,), sweeps=1).fit(w0=torch.ones(5, 4))
    _raises(ConfigError, "LDA 'lda'", "n_sweeps", "-2", lambda: lda.sample_topics(-2))


# --- the recogniser -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(n_units=1), "n_units", "1"),
    (dict(dim="39"), "dim", "'39'"),
    (dict(n_best=0.5), "n_best", "0.5"),
    (dict(n_best=0), "n_best", "0"),
    (dict(position_weight=-1.0), "position_weight", "-1.0"),
    (dict(relearn_rate=NAN), "relearn_rate", "nan"),
    (dict(relearn_rate=1.5), "relearn_rate", "1.5"),
    (dict(shrinkage=1.0), "shrinkage", "1.0"),
    (dict(shrinkage=INF), "shrinkage", "inf"),
    (dict(variance_floor=0), "variance_floor", "0"),
    (dict(variance_floor=NAN), "variance_floor", "nan"),
    (dict(restarts=0), "restarts", "0"),
    (dict(iterations=-1), "iterations", "-1"),
    (dict(iterations=2.5), "iterations", "2.5"),
    (dict(discriminant=0), "discriminant", "0"),
    (dict(dim=3, discriminant=5), "discriminant", "5"),
])
def test_recognizer_settings(kwargs, setting, value):
    _raises(ConfigError, "Recognizer 'asr'", setting, value, lambda: Recognizer("asr", **kwargs))


def test_recognizer_restarts_zero_no_longer_fails_in_kmeans():
    # it raised TypeError ('NoneType' object is not subscriptable) in the first update
    audio = Sequences(torch.randn(3, 5, 2), torch.tensor([5, 5, 5]))
    with pytest.raises(ConfigError, match=r"^Recognizer 'asr': restarts must be an integer >= 1, got 0$"):
        Recognizer("asr", n_units=2, dim=2, restarts=0).fit(audio=audio)
    with pytest.raises(ConfigError, match=r"^k-means: restarts must be an integer >= 1, got 0$"):
        kmeans(torch.randn(10, 2), 2, restarts=0)


# --- the multimodal VAEs --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [MVAE, JMVAE])
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(z_dim=0), "z_dim", "0"),
    (dict(hidden=(8, -1)), "hidden", "-1"),
    (dict(epochs=-1), "epochs", "-1"),
    (dict(first_epochs=-2), "first_epochs", "-2"),
    (dict(batch_size=0), "batch_size", "0"),
    (dict(lr=-1), "lr", "-1"),
    (dict(kl_weight=NAN), "kl_weight", "nan"),
    (dict(kl_anneal=-1), "kl_anneal", "-1"),
    (dict(send="mode"), "send", "'mode'"),
    (dict(weights={"a": INF}), "weights['a']", "inf"),
    (dict(weights=[1.0, 1.0]), "weights", "[1.0, 1.0]"),
    (dict(likelihoods={"a": "poisson"}), "likelihoods['a']", "'poisson'"),
    (dict(modalities={"a": 0, "b": 2}), "modalities['a']", "0"),
    (dict(modalities={"a": 3, "b": "2"}), "modalities['b']", "'2'"),
])
def test_multimodal_settings(kind, kwargs, setting, value):
    kwargs = {"modalities": {"a": 3, "b": 2}, "hidden": (8,), **kwargs}
    name = kind.__name__
    _raises(ConfigError, f"{name} 'mm'", setting, value, lambda: kind("mm", **kwargs))


@pytest.mark.parametrize("alpha, value", [(NAN, "nan"), (INF, "inf"), (-1.0, "-1.0"), ("x", "'x'")])
def test_jmvae_alpha(alpha, value):
    _raises(ConfigError, "JMVAE 'j'", "alpha", value, lambda: JMVAE("j", {"a": 3, "b": 2}, alpha=alpha))


# --- the mixture prior ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(n_clusters=0), "n_clusters", "0"),
    (dict(dim=1.5), "dim", "1.5"),
    (dict(em_iterations=-1), "em_iterations", "-1"),
    (dict(restarts=0), "restarts", "0"),
    (dict(min_var=INF), "min_var", "inf"),
    (dict(min_var=0), "min_var", "0"),
    (dict(lr=0), "lr", "0"),
    (dict(lr=NAN), "lr", "nan"),
    (dict(prior_variance="diag"), "prior_variance", "'diag'"),
])
def test_mixture_prior_settings(kwargs, setting, value):
    _raises(ConfigError, "MixturePrior 'mix'", setting, value, lambda: MixturePrior("mix", **kwargs))


def _finite_fit(prior, x):
    prior.fit(x=x)
    for tensor in (prior.means, prior.log_var, prior.logits, prior.responsibilities_):
        assert bool(torch.isfinite(tensor).all())
    assert math.isfinite(prior.log_likelihood_[-1])
    assert prior.predict().shape == (x.shape[0],)
    return prior


def test_mixture_prior_fits_a_collapsed_latent():
    # every row equal: k-means++ used to divide by a zero sum of distances and fail in multinomial
    _finite_fit(MixturePrior("mix", n_clusters=10, dim=3, em_iterations=5, restarts=2), torch.ones(50, 3))
    # three distinct rows for ten components
    rows = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]])
    _finite_fit(MixturePrior("mix", n_clusters=10, dim=2, em_iterations=5, restarts=2), rows.repeat(20, 1))


def _old_kmeans_pp(prior, x):
    """The seeding as it was before the fix for collapsed latents, to pin its random draws."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=prior.generator, device=x.device)
    centres = x[first]
    for _ in range(1, prior.n_clusters):
        d2 = torch.cdist(x, centres).pow(2).min(1).values
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=prior.generator)
        centres = torch.cat([centres, x[pick]])
    for _ in range(10):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=prior.n_clusters).to(x.dtype)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


def test_mixture_prior_seeding_draws_the_same_numbers_as_before_on_ordinary_data():
    x = torch.randn(300, 10, generator=torch.Generator().manual_seed(5))
    new, old = MixturePrior("mix", n_clusters=10, dim=10, seed=3), MixturePrior("mix", n_clusters=10, dim=10, seed=3)
    for _ in range(3):
        assert torch.equal(new._kmeans_pp(x), _old_kmeans_pp(old, x))
    assert torch.equal(new.generator.get_state(), old.generator.get_state())


# --- the front end and read_wav -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, setting, value", [
    (dict(win_ms=0), "win_ms", "0"),
    (dict(win_ms=NAN), "win_ms", "nan"),
    (dict(hop_ms=0), "hop_ms", "0"),
    (dict(hop_ms=-10), "hop_ms", "-10"),
    (dict(n_mels=0), "n_mels", "0"),
    (dict(n_mfcc=0), "n_mfcc", "0"),
    (dict(n_mfcc=50), "n_mfcc", "50"),
    (dict(f_min=3000, f_max=1000), "f_max", "1000"),
    (dict(f_max=6000), "f_max", "6000"),
    (dict(f_min=-5), "f_min", "-5"),
    (dict(f_min=4000), "f_min", "4000"),
    (dict(n_fft=64), "n_fft", "64"),
    (dict(n_fft=0), "n_fft", "0"),
    (dict(features="plp"), "features", "'plp'"),
    (dict(normalise="global"), "normalise", "'global'"),
    (dict(deltas="no"), "deltas", "'no'"),
    (dict(sample_rate=0), "sample_rate", "0"),
    (dict(sample_rate=8000.0), "sample_rate", "8000.0"),
])
def test_front_end_settings(kwargs, setting, value):
    kwargs = {"sample_rate": 8000, **kwargs}
    _raises(ConfigError, "FrontEnd", setting, value, lambda: FrontEnd(**kwargs))


def test_front_end_entry_points_check_their_settings():
    front = FrontEnd(8000)
    wave = 0.1 * torch.randn(800, generator=torch.Generator().manual_seed(0))
    _raises(ConfigError, "FrontEnd.extract", "batch_size", "0", lambda: front.extract([wave], batch_size=0))
    features, frames = front.raw_features([wave])
    _raises(ConfigError, "pooled_features", "segments", "-1", lambda: pooled_features(features, frames, segments=-1))
    _raises(ConfigError, "add_deltas", "win_length", "1", lambda: add_deltas(features, frames, win_length=1))


def test_a_waveform_too_loud_for_float32_is_a_data_error_naming_it_not_nan_features():
    gen = torch.Generator().manual_seed(0)
    quiet, loud = 0.1 * torch.randn(4000, generator=gen), 1e30 * torch.randn(4000, generator=gen)
    front = FrontEnd(8000)
    with pytest.raises(DataError, match=r"^waveform 1 gives non-finite features .*scale its samples to \[-1, 1\]$"):
        front([quiet, loud])
    # extract sorts by length into batches: the message still names the caller's index
    with pytest.raises(DataError, match=r"^waveform 2 gives non-finite features"):
        front.extract([quiet, quiet[:3000], loud[:2000]], batch_size=1)
    with pytest.raises(DataError, match=r"^waveform 0 gives non-finite features"):
        FrontEnd(8000, features="logmel", deltas=False, normalise=None)([loud])
    # loud but representable samples (unscaled 16-bit PCM) still give finite features
    features, _ = front([32767 * quiet.clamp(-1, 1)])
    assert bool(torch.isfinite(features).all())


def test_read_wav_of_none_is_a_data_error():
    with pytest.raises(DataError, match="^read_wav needs the path of a WAV file .*got None$"):
        read_wav(None)


# --- graph nodes: settings from the __init__ signature ----------------------------------------
def test_connection_nodes_print_and_fingerprint_the_settings_their_signatures_declare():
    from serket.connections import HeadToHead, Observation, TailToTail
    from serket.module import settings

    combiner = TailToTail("category", 3, smoothing=0.1, prior_exponent={"lda": 0.01}, evidence_weight={"lda": 0.08})
    assert settings(combiner) == {"n_categories": 3, "smoothing": 0.1, "temperature": 1.0,
                                  "prior_exponent": {"lda": 0.01}, "evidence_weight": {"lda": 0.08},
                                  "restarts": 10, "em_iterations": 50, "seed": 0}
    assert repr(combiner) == ("TailToTail(name='category', n_categories=3, smoothing=0.1, temperature=1.0, "
                              "prior_exponent={'lda': 0.01}, evidence_weight={'lda': 0.08}, restarts=10, "
                              "em_iterations=50, seed=0, device=cpu)")
    words = HeadToHead("words", vocab_size=5, bag_weights="uniform", seed=3)
    assert settings(words) == {"vocab_size": 5, "bag_weights": "uniform", "seed": 3}
    images = Observation("images", torch.zeros(4, 2))
    assert settings(images) == {} and repr(images) == "Observation(name='images', device=cpu)"  # data: a digest


def test_a_node_that_does_not_keep_an_argument_is_named_when_its_settings_are_read():
    from serket.graph import Graph
    from serket.module import Node, Port

    class Forgetful(Node):
        def __init__(self, name, width):
            super().__init__(name)
            self.size = width  # kept under another name: the fingerprint could not see it

        def ports(self):
            return {"x": Port("x", accepts=("samples",), size=self.size)}

    g = Graph()
    g.add(Forgetful("f", 3))
    with pytest.raises(ConfigError, match=r"^Forgetful 'f': __init__ takes 'width' but does not store it as "
                                          r"self.width"):
        g.fingerprint()


# --- metrics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, text", [
    ([0, 1, NAN], "non-finite value nan at index 2"),
    (np.array([0.0, INF, 1.0]), "non-finite value inf at index 1"),
    (torch.tensor([0.0, 1.0, NAN]), "non-finite value nan at index 2"),
    ([0, 1, 1e30], "within int64, got 1e+30 at index 2"),
    (np.array([0, 2**63 + 5, 1], dtype=np.uint64), "within int64, got 9223372036854775813 at index 1"),
    ([0.0, 0.5, 1.0], "non-integer value 0.5 at index 1"),
])
def test_labels_that_are_not_finite_integers_are_refused(labels, text):
    for argument in ("labels", "predictions"):
        pair = (labels, [0, 1, 1]) if argument == "labels" else ([0, 1, 1], labels)
        with pytest.raises(DataError, match=f"^{argument} must hold integer labels.*{re.escape(text)}$"):
            clustering_accuracy(*pair)


def test_whole_float_and_bfloat16_labels_are_accepted():
    assert clustering_accuracy([0.0, 1.0, 1.0], [1, 0, 0]) == 1.0
    labels = torch.tensor([0.0, 1.0, 1.0], dtype=torch.bfloat16)
    assert clustering_report(labels, [1, 0, 0])["accuracy"] == 1.0
