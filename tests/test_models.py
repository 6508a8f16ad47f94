"""make_mlp builds the documented stack; user errors the newcomer review found stay clear."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import mininn
from mininn.models import make_mlp


def test_make_mlp_layer_order_and_shapes():
    model = make_mlp(784, [256, 128], 10, batch_norm=True, dropout=0.2)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout",
                     "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]  # fmt: skip
    assert model[0].weight.shape == (256, 784) and model[-1].weight.shape == (10, 128)
    assert model(np.zeros((3, 784), dtype=np.float32)).shape == (3, 10)


def test_make_mlp_without_hidden_layers_is_linear():
    model = make_mlp(4, [], 3)
    assert [type(layer).__name__ for layer in model] == ["Linear"]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((20, 16, 2), {}, r"hidden_sizes must be a list of positive integers.*got 16"),
        ((20, "256", 2), {}, r"hidden_sizes must be a list.*got '256'"),
        ((20, [16, 0], 2), {}, r"hidden_sizes\[1\] must be a positive integer, got 0"),
        ((20, [16], 2), {"activation": "gelu"}, "unknown activation 'gelu'"),
        ((20, [16], 2), {"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
    ],
    ids=["int-hidden", "str-hidden", "zero-width", "activation", "dropout"],
)
def test_make_mlp_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_mlp(*args, **kwargs)


def test_load_state_dict_of_a_file_name_points_at_mininn_load():
    model = make_mlp(4, [3], 2)
    with pytest.raises(TypeError, match=r"expected a mapping.*got str; .*mininn.load\(path\)"):
        model.load_state_dict("model.npz")


@pytest.mark.parametrize("optimizer", [mininn.optim.SGD, mininn.optim.Adam, mininn.optim.RMSprop])
def test_optimizer_rejects_a_string_learning_rate(optimizer):
    model = make_mlp(4, [3], 2)
    with pytest.raises(TypeError, match=r"Invalid learning rate: '1e-3' \(str\).*write 0.001"):
        optimizer(model.parameters(), lr="1e-3")


def test_cross_entropy_one_hot_targets_get_the_argmax_hint():
    with pytest.raises(TypeError, match=r"one-hot rows, pass target.argmax\(axis=1\)"):
        mininn.CrossEntropyLoss()(np.zeros((2, 3)), np.eye(3)[[0, 2]])


def test_save_creates_a_file_with_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        mininn.save({"w": np.ones(2)}, tmp_path / "model.npz")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "model.npz").stat().st_mode) == 0o644
