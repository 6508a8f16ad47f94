"""train_epoch's backward pass (mininn.training): the input gradient is skipped where the
model allows it, and the parameter gradients and updates are unchanged by that."""

from __future__ import annotations

import numpy as np

from mininn.activations import ReLU
from mininn.dataloader import DataLoader
from mininn.layers import Linear
from mininn.losses import CrossEntropyLoss
from mininn.module import Module, Sequential
from mininn.optim import SGD
from mininn.training import train_epoch


def _mlp() -> Sequential:
    return Sequential(Linear(4, 8, dtype=np.float64), ReLU(), Linear(8, 3, dtype=np.float64))


class _Wrapper(Module):
    """A custom model whose backward has no ``input_grad`` keyword (the Module contract)."""

    def __init__(self, inner: Sequential) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.inner(x)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return self.inner.backward(grad_output)


def _data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(size=(20, 4)), rng.integers(0, 3, size=20)


def test_train_epoch_matches_a_hand_written_loop_with_input_grad(rng):
    x, y = _data(rng)
    model, reference = _mlp(), _mlp()
    reference.load_state_dict(model.state_dict())
    optimizer, reference_optimizer = (
        SGD(model.parameters(), lr=0.1),
        SGD(reference.parameters(), lr=0.1),
    )
    loss_fn = CrossEntropyLoss()
    train_epoch(model, loss_fn, optimizer, DataLoader(x, y, batch_size=8))
    for start in range(0, 20, 8):  # the same batches, with dL/dx computed
        reference_optimizer.zero_grad()
        loss_fn(reference(x[start : start + 8]), y[start : start + 8])
        assert reference.backward(loss_fn.backward()) is not None
        reference_optimizer.step()
    for actual, expected in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(actual.data, expected.data)


def test_train_epoch_accepts_a_model_without_input_grad_keyword(rng):
    x, y = _data(rng)
    inner = _mlp()
    model, reference = _Wrapper(inner), _mlp()
    reference.load_state_dict(inner.state_dict())
    loss_fn = CrossEntropyLoss()
    train_epoch(model, loss_fn, SGD(model.parameters(), lr=0.1), DataLoader(x, y, batch_size=8))
    train_epoch(
        reference, loss_fn, SGD(reference.parameters(), lr=0.1), DataLoader(x, y, batch_size=8)
    )
    for actual, expected in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(actual.data, expected.data)


def test_train_epoch_skips_the_input_gradient_of_a_sequential(rng, monkeypatch):
    x, y = _data(rng)
    model = _mlp()
    returned = []
    original = Sequential.backward

    def spy(self, grad_output, *, input_grad=True):
        returned.append(original(self, grad_output, input_grad=input_grad))
        return returned[-1]

    monkeypatch.setattr(Sequential, "backward", spy)
    train_epoch(model, CrossEntropyLoss(), SGD(model.parameters()), DataLoader(x, y, batch_size=8))
    assert returned == [None, None, None]  # 3 batches, no dL/dx computed


def test_train_epoch_clips_before_the_step_and_steps_the_scheduler_after_it(rng):
    from mininn.optim.lr_scheduler import StepLR
    from mininn.utils import clip_grad_norm_

    x, y = _data(rng)
    model, reference = _mlp(), _mlp()
    reference.load_state_dict(model.state_dict())
    optimizer = SGD(model.parameters(), lr=0.5)
    reference_optimizer = SGD(reference.parameters(), lr=0.5)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    loss_fn = CrossEntropyLoss()
    train_epoch(model, loss_fn, optimizer, DataLoader(x, y, batch_size=8), clip_grad_norm=0.1,
                scheduler=scheduler)  # fmt: skip
    for step, start in enumerate(range(0, 20, 8)):  # lr 0.5, 0.25, 0.125: halved after a step
        reference_optimizer.param_groups[0]["lr"] = 0.5 * 0.5**step
        reference_optimizer.zero_grad()
        loss_fn(reference(x[start : start + 8]), y[start : start + 8])
        reference.backward(loss_fn.backward())
        assert clip_grad_norm_(reference.parameters(), 0.1) > 0.1  # clipping does act
        reference_optimizer.step()
    assert scheduler.last_epoch == 3 and optimizer.param_groups[0]["lr"] == 0.5 * 0.5**3
    for actual, expected in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(actual.data, expected.data)
