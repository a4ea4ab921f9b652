"""MVAE and JMVAE infer on new items: the latent they would publish, from any subset of the
modalities, without learning."""

import pytest
import torch

from serket.errors import DataError, MessageError, PortError
from serket.messages import Gaussian, Samples
from serket.modules.multimodal import JMVAE, MVAE


def _pairs(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = (torch.rand(n, 16, generator=gen) > 0.5).float()
    speech = torch.randn(n, 6, generator=gen)
    return image, speech


def _trained(kind, **kw):
    image, speech = _pairs()
    model = kind(kind.__name__.lower(), {"image": 16, "speech": 6}, likelihoods={"image": "bernoulli"}, z_dim=3,
                 hidden=(12,), epochs=3, batch_size=16, seed=2, **kw)
    model.fit(image=image, speech=speech)
    return model, image, speech


def _snapshot(model):
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()
             if isinstance(v, torch.Tensor)}
    return state, model.generator.get_state().clone(), model.n_updates, dict(model.inbox)


def _same_state(model, snapshot):
    state, generator, n_updates, inbox = snapshot
    now = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), key
    assert torch.equal(model.generator.get_state(), generator)
    assert model.n_updates == n_updates
    assert model.inbox.keys() == inbox.keys() and all(model.inbox[k] is inbox[k] for k in inbox)
    assert torch.equal(model.latent_, model.publish()["z"].values)


@pytest.mark.parametrize("kind", [MVAE, JMVAE])
def test_infer_on_the_training_items_is_the_published_latent(kind):
    model, image, speech = _trained(kind)
    snapshot = _snapshot(model)
    out = model.infer(image=image, speech=speech)
    assert set(out) == {"z"} and isinstance(out["z"], Samples)
    assert torch.equal(out["z"].values, model.publish()["z"].values)
    _same_state(model, snapshot)


@pytest.mark.parametrize("kind", [MVAE, JMVAE])
def test_infer_from_one_modality_is_the_posterior_of_that_modality(kind):
    model, image, speech = _trained(kind)
    snapshot = _snapshot(model)
    new_image, new_speech = _pairs(7, seed=9)
    for batch in ({"image": new_image}, {"speech": new_speech}):
        z = model.infer(**batch)["z"].values
        assert torch.equal(z, model.encode(batch).mean)
        assert torch.equal(z, model.infer(**batch)["z"].values), "infer must be repeatable"
    # a unimodal posterior is not the joint one: the subset really decides the answer
    both = model.infer(image=new_image, speech=new_speech)["z"].values
    assert not torch.allclose(both, model.infer(image=new_image)["z"].values)
    _same_state(model, snapshot)


@pytest.mark.parametrize("kind", [MVAE, JMVAE])
def test_a_mask_drops_a_modality_per_item(kind):
    model, _, _ = _trained(kind)
    image, speech = _pairs(6, seed=4)
    mask = torch.tensor([[1.0, 0.0]] * 3 + [[1.0, 1.0]] * 3)
    z = model.infer(image=image, speech=speech, mask=mask)["z"].values
    garbage = model.infer(image=image, speech=speech * 50 - 3, mask=mask)["z"].values
    assert torch.equal(z[:3], garbage[:3]), "a masked modality's values must not matter"
    assert torch.allclose(z[:3], model.infer(image=image[:3])["z"].values, atol=1e-6)
    assert torch.allclose(z[3:], model.infer(image=image[3:], speech=speech[3:])["z"].values, atol=1e-6)


def test_a_sampled_latent_is_repeatable_and_leaves_the_training_stream_alone():
    model, image, speech = _trained(MVAE, send="sample")
    snapshot = _snapshot(model)
    first = model.infer(image=image)["z"].values
    again = model.infer(image=image)["z"].values
    assert torch.equal(first, again)
    mean = model.encode({"image": image}).mean
    assert not torch.equal(first, mean)
    # a draw around the posterior mean, at the posterior's own scale
    spread = (first - mean) / model.encode({"image": image}).var.sqrt()
    assert float(spread.abs().max()) < 6.0
    _same_state(model, snapshot)


@pytest.mark.parametrize("kind", [MVAE, JMVAE])
def test_bad_infer_input_is_named(kind):
    model, image, speech = _trained(kind)
    snapshot = _snapshot(model)
    with pytest.raises(DataError, match="computes 'z'"):
        model.infer(image=image, z=Gaussian(torch.zeros(40, 3), torch.ones(40, 3)))
    with pytest.raises(DataError, match="only a mask"):
        model.infer(mask=torch.ones(40, 2))
    with pytest.raises(DataError, match="none of the given modalities \\['image'\\] present for item 1"):
        model.infer(image=image[:3], mask=torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(DataError, match="differ in number"):
        model.infer(image=image, speech=speech[:5])
    with pytest.raises(PortError, match="no port 'sound'"):
        model.infer(sound=speech)
    with pytest.raises(MessageError, match="port 'speech'.*width 5"):
        model.infer(speech=torch.zeros(4, 5))
    with pytest.raises(DataError, match="Bernoulli"):
        model.infer(image=image * 3)
    fresh = kind("fresh", {"image": 16, "speech": 6}, likelihoods={"image": "bernoulli"}, z_dim=3, hidden=(12,))
    with pytest.raises(DataError, match="'fresh'.*first update"):
        fresh.infer(image=image)
    _same_state(model, snapshot)


def test_infer_generates_the_modalities_not_given_and_a_graph_generates_images_from_speech():
    """Cross-modal generation: infer returns each missing modality's mean from the posterior
    mean (what cross_generate gives), a Gaussian on z alone is decoded, and Graph.generate on a
    multimodal graph takes the module's own cross-modal decoding."""
    from serket.graphs.multimodal import build_mvae_gmm
    from serket.training import train_alternate

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    image = (torch.rand(60, 16, generator=gen) < 0.2 + 0.25 * labels[:, None]).float()
    speech = labels[:, None].float() + 0.3 * torch.randn(60, 5, generator=gen)
    graph = build_mvae_gmm(image, speech, prior="mixture", z_dim=2,
                           encoder={"hidden": (16,), "epochs": 3, "batch_size": 20})
    train_alternate(graph, 1, progress=False)
    model = graph.node("mvae")
    out = model.infer(speech=speech[:7])
    assert set(out) == {"z", "image"}
    torch.testing.assert_close(out["image"].values, model.cross_generate({"speech": speech[:7]}, "image"))
    z = Gaussian(out["z"].values, torch.ones_like(out["z"].values))
    decoded = model.infer(z=z)
    assert set(decoded) == {"image", "speech"}
    torch.testing.assert_close(decoded["image"].values, out["image"].values)
    generated = graph.generate({"speech": speech[:7]}, "images")
    torch.testing.assert_close(generated.values, out["image"].values)
