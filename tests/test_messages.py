import pytest
import torch

from serket.errors import MessageError
from serket.messages import Categorical, Counts, Gaussian, Message, NBest, Samples


def test_categorical_rows_must_sum_to_one():
    Categorical(torch.tensor([[0.2, 0.8], [1.0, 0.0]]))
    with pytest.raises(MessageError, match="row 1 sums to 0.9"):
        Categorical(torch.tensor([[0.2, 0.8], [0.5, 0.4]]))
    with pytest.raises(MessageError, match="negative"):
        Categorical(torch.tensor([[1.2, -0.2]]))


def test_non_finite_values_are_named():
    with pytest.raises(MessageError, match=r"non-finite value at index \[1, 0\]"):
        Samples(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    with pytest.raises(MessageError, match="non-finite"):
        Gaussian(torch.zeros(2, 2), torch.tensor([[1.0, float("inf")], [1.0, 1.0]]))


def test_shapes_are_checked():
    with pytest.raises(MessageError, match="2 dimensions"):
        Samples(torch.zeros(3))
    with pytest.raises(MessageError, match="differ"):
        Gaussian(torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(MessageError, match="var must be positive"):
        Gaussian(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(MessageError, match="negative"):
        Counts(torch.tensor([[1.0, -1.0]]))
    with pytest.raises(MessageError, match="integer word ids"):
        NBest(torch.zeros(2, 3, 4), torch.zeros(2, 3))
    with pytest.raises(MessageError, match="does not match"):
        NBest(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(2, 2))


def test_state_round_trip_and_indexing():
    m = Gaussian(torch.randn(5, 3), torch.rand(5, 3) + 0.1)
    back = Message.from_state(m.state())
    assert isinstance(back, Gaussian) and torch.equal(back.mean, m.mean) and torch.equal(back.var, m.var)
    sub = m.index(torch.tensor([0, 2]))
    assert sub.n_items == 2 and sub.size == 3
    assert "Gaussian(mean=(5, 3), var=(5, 3)" in repr(m)


def test_from_logits_normalises():
    c = Categorical.from_logits(torch.tensor([[0.0, 0.0], [10.0, -10.0]]))
    assert torch.allclose(c.probs.sum(1), torch.ones(2))
    assert c.argmax().tolist() == [0, 0]
