"""Tests of mininn.init: gains against torch, bounds and empirical moments of every
initialiser, determinism, errors, and Sequential's activation-aware default."""

import math

import numpy as np
import pytest

from mininn import config
from mininn._rng import manual_seed
from mininn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from mininn.container import Sequential, apply_default_init
from mininn.init import (
    calculate_gain,
    constant_,
    kaiming_normal_,
    kaiming_uniform_,
    normal_,
    ones_,
    uniform_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)
from mininn.layers import BatchNorm1d, Dropout, Linear
from mininn.module import Module, Parameter

GAIN_CASES = [
    ("linear", None),
    ("conv1d", None),
    ("conv2d", None),
    ("conv3d", None),
    ("conv_transpose1d", None),
    ("conv_transpose2d", None),
    ("conv_transpose3d", None),
    ("sigmoid", None),
    ("tanh", None),
    ("relu", None),
    ("leaky_relu", None),
    ("leaky_relu", 0.2),
    ("leaky_relu", 1),
    ("selu", None),
]


@pytest.mark.parametrize(("nonlinearity", "param"), GAIN_CASES, ids=lambda v: str(v))
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def test_calculate_gain_by_hand():
    assert calculate_gain("relu") == math.sqrt(2)
    assert calculate_gain("tanh") == 5 / 3
    assert calculate_gain("leaky_relu", 1.0) == 1.0  # sqrt(2 / (1 + 1))
    assert calculate_gain("selu") == 0.75


# (initialiser, kwargs, expected std for fan_in=300, fan_out=200 (shape (200, 300)),
#  bound of the support or None when unbounded)
FAN_IN, FAN_OUT = 300, 200
UNIFORM_STD = 1 / math.sqrt(3)  # std of U(-1, 1)
INITIALISERS = {
    "xavier_uniform": (
        xavier_uniform_,
        {"gain": 2.0},
        2.0 * math.sqrt(6 / 500) * UNIFORM_STD,
        2.0 * math.sqrt(6 / 500),
    ),
    "xavier_normal": (xavier_normal_, {"gain": 0.5}, 0.5 * math.sqrt(2 / 500), None),
    "kaiming_uniform-relu": (
        kaiming_uniform_,
        {"nonlinearity": "relu"},
        math.sqrt(2) / math.sqrt(FAN_IN),
        math.sqrt(3) * math.sqrt(2) / math.sqrt(FAN_IN),
    ),
    "kaiming_uniform-leaky-fan_out": (
        kaiming_uniform_,
        {"a": 0.3, "mode": "fan_out"},
        math.sqrt(2 / 1.09) / math.sqrt(FAN_OUT),
        math.sqrt(3) * math.sqrt(2 / 1.09) / math.sqrt(FAN_OUT),
    ),
    "kaiming_normal-relu": (
        kaiming_normal_,
        {"nonlinearity": "relu"},
        math.sqrt(2) / math.sqrt(FAN_IN),
        None,
    ),
    "kaiming_normal-fan_out": (
        kaiming_normal_,
        {"mode": "fan_out", "nonlinearity": "tanh"},
        (5 / 3) / math.sqrt(FAN_OUT),
        None,
    ),
    "uniform": (uniform_, {"a": -0.5, "b": 0.5}, UNIFORM_STD * 0.5, 0.5),
    "normal": (normal_, {"std": 0.25}, 0.25, None),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", INITIALISERS.values(), ids=INITIALISERS.keys())
def test_empirical_mean_std_and_bound(case, dtype):
    init, kwargs, std, bound = case
    weight = np.zeros((FAN_OUT, FAN_IN), dtype=dtype)
    assert init(weight, generator=0, **kwargs) is weight  # in place, returned
    assert weight.dtype == dtype
    n = weight.size
    # The sample mean has std σ/√n; the sample std has relative std ≈ 1/√(2n) (0.2 %).
    assert abs(weight.mean()) < 5 * std / math.sqrt(n)
    assert weight.std() == pytest.approx(std, rel=0.02)
    if bound is not None:
        assert np.abs(weight).max() <= bound
        assert np.abs(weight).max() > 0.99 * bound  # the whole support is used


def test_fans_of_a_weight_with_a_receptive_field():
    # (out=4, in=3, k=50): fan_in = 3·50 = 150, fan_out = 4·50 = 200, as torch
    weight = np.zeros((4, 3, 50))
    kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu", generator=1)
    assert np.abs(weight).max() <= math.sqrt(6 / 150)
    assert np.abs(weight).max() > 0.95 * math.sqrt(6 / 150)
    xavier_uniform_(weight, generator=1)
    assert np.abs(weight).max() <= math.sqrt(6 / 350)


def test_constant_fills():
    w = Parameter(np.ones((2, 3)))
    np.testing.assert_array_equal(zeros_(w).data, 0.0)
    np.testing.assert_array_equal(ones_(w).data, 1.0)
    np.testing.assert_array_equal(constant_(w, 2.5).data, 2.5)
    assert w._explicit_init


@pytest.mark.parametrize("case", INITIALISERS.values(), ids=INITIALISERS.keys())
def test_deterministic_under_manual_seed_and_generator(case):
    init, kwargs, _, _ = case
    draws = []
    for _ in range(2):
        manual_seed(123)
        draws.append(init(np.zeros((5, 4)), **kwargs))
    np.testing.assert_array_equal(draws[0], draws[1])
    by_int = init(np.zeros((5, 4)), generator=9, **kwargs)
    by_generator = init(np.zeros((5, 4)), generator=np.random.default_rng(9), **kwargs)
    np.testing.assert_array_equal(by_int, by_generator)
    assert not np.array_equal(by_int, draws[0])


def test_parameter_is_filled_in_place_and_marked_explicit():
    p = Parameter(np.zeros((3, 2)))
    data = p.data
    assert xavier_normal_(p, generator=0) is p
    assert p.data is data and p._explicit_init
    assert np.all(p.data != 0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: kaiming_uniform_(np.zeros((3, 2)), mode="fan_avg"), ValueError,
         "kaiming_uniform_: mode 'fan_avg' not supported.*fan_in, fan_out"),
        (lambda: kaiming_normal_(np.zeros((3, 2)), mode="in"), ValueError,
         "kaiming_normal_: mode 'in'"),
        (lambda: xavier_uniform_(np.zeros(5)), ValueError,
         r"xavier_uniform_: .*fewer than 2 dimensions, got shape \(5,\)"),
        (lambda: xavier_normal_(np.zeros(5)), ValueError, "xavier_normal_: .*fewer than 2"),
        (lambda: kaiming_uniform_(np.zeros(5)), ValueError, "kaiming_uniform_: .*fewer than 2"),
        (lambda: calculate_gain("gelu"), ValueError, "Unsupported nonlinearity 'gelu'"),
        (lambda: kaiming_normal_(np.zeros((2, 2)), nonlinearity="swish"), ValueError,
         "Unsupported nonlinearity 'swish'"),
        (lambda: calculate_gain("leaky_relu", "0.1"), ValueError, "negative_slope 0.1 not a valid"),
        (lambda: uniform_(np.zeros(2), a=1.0, b=0.0), ValueError, "a <= b, got a=1.0, b=0.0"),
        (lambda: normal_(np.zeros(2), std=-1.0), ValueError, "std >= 0, got std=-1.0"),
        (lambda: normal_(np.zeros(2, dtype=np.int64)), TypeError, "normal_: expected a Parameter"),
        (lambda: uniform_(np.zeros(2), generator="seed"), TypeError, "got str"),
    ],
    ids=[
        "mode-fan_avg",
        "mode-in",
        "xavier-1d",
        "xavier-normal-1d",
        "kaiming-1d",
        "unknown-nonlinearity",
        "kaiming-unknown-nonlinearity",
        "slope-not-number",
        "uniform-a-gt-b",
        "normal-negative-std",
        "integer-array",
        "bad-generator",
    ],
)  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- the activation-aware default of Sequential ---------------------------------------


def _build_and_reference(make_layers, reference_init, seed=0):
    """Build Sequential(*make_layers()) and, from the same seed, the same layers with
    ``reference_init(layers)`` applied by hand; return (sequential, reference layers)."""
    manual_seed(seed)
    model = Sequential(*make_layers())
    manual_seed(seed)
    layers = make_layers()
    reference_init(layers)
    return model, layers


def _assert_same_parameters(model, layers):
    for ours, theirs in zip(model, layers, strict=True):
        for (name, p), (_, q) in zip(
            ours.named_parameters(), theirs.named_parameters(), strict=True
        ):
            np.testing.assert_array_equal(p.data, q.data, err_msg=f"{type(ours).__name__}.{name}")


def _relu_kaiming(layers):
    kaiming_normal_(layers[0].weight, nonlinearity="relu")
    zeros_(layers[0].bias)


CASES = {
    "ReLU-kaiming": (lambda: [Linear(20, 30), ReLU()], _relu_kaiming),
    "LeakyReLU-kaiming": (
        lambda: [Linear(20, 30), LeakyReLU(0.2)],
        lambda ls: (
            kaiming_normal_(ls[0].weight, a=0.2, nonlinearity="leaky_relu"),
            zeros_(ls[0].bias),
        ),
    ),
    "Tanh-xavier": (
        lambda: [Linear(20, 30), Tanh()],
        lambda ls: (xavier_normal_(ls[0].weight), zeros_(ls[0].bias)),
    ),
    "Sigmoid-xavier": (
        lambda: [Linear(20, 30), Sigmoid()],
        lambda ls: (xavier_normal_(ls[0].weight), zeros_(ls[0].bias)),
    ),
    "Softmax-xavier": (
        lambda: [Linear(20, 30), Softmax()],
        lambda ls: (xavier_normal_(ls[0].weight), zeros_(ls[0].bias)),
    ),
    "through-BatchNorm1d-Dropout": (
        lambda: [Linear(20, 30), BatchNorm1d(30), Dropout(0.1), ReLU()],
        _relu_kaiming,
    ),
    "last-Linear-keeps-default": (
        lambda: [Linear(20, 30), ReLU(), Linear(30, 5)],
        _relu_kaiming,  # the last Linear is left as constructed
    ),
    "lone-Linear-keeps-default": (lambda: [Linear(20, 30)], lambda ls: None),
    "explicit-init-untouched": (
        lambda: [Linear(20, 30, init="xavier_uniform"), ReLU()],
        lambda ls: None,
    ),
}


class _SubclassOfReLU(ReLU):
    pass


class _SubclassOfLinear(Linear):
    pass


class _NamedReLU(Module):
    """Another class with the name "ReLU": classes are matched by identity, not name."""

    def forward(self, x):
        return x


_NamedReLU.__name__ = _NamedReLU.__qualname__ = "ReLU"

CASES.update(
    {
        "subclass-of-ReLU-kaiming": (lambda: [Linear(20, 30), _SubclassOfReLU()], _relu_kaiming),
        "subclass-of-Linear-kaiming": (
            lambda: [_SubclassOfLinear(20, 30), ReLU()],
            _relu_kaiming,
        ),
        "other-class-named-ReLU-keeps-default": (
            lambda: [Linear(20, 30), _NamedReLU()],
            lambda ls: None,
        ),
    }
)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_sequential_default_init(case, monkeypatch):
    monkeypatch.setattr(config, "INIT_MAP", "normal")
    make_layers, reference_init = case
    model, layers = _build_and_reference(make_layers, reference_init)
    _assert_same_parameters(model, layers)


def test_uniform_map_uses_the_uniform_variants(monkeypatch):
    monkeypatch.setattr(config, "INIT_MAP", "uniform")

    def reference(layers):
        kaiming_uniform_(layers[0].weight, nonlinearity="relu")
        zeros_(layers[0].bias)
        xavier_uniform_(layers[2].weight)
        zeros_(layers[2].bias)

    model, layers = _build_and_reference(
        lambda: [Linear(20, 30), ReLU(), Linear(30, 4), Sigmoid()], reference
    )
    _assert_same_parameters(model, layers)


def test_default_pytorch_init_has_its_bound():
    manual_seed(0)
    model = Sequential(Linear(400, 300), ReLU(), Linear(300, 200))
    last = model[2].weight.data
    assert np.abs(last).max() <= 1 / math.sqrt(300)
    assert np.abs(last).max() > 0.99 / math.sqrt(300)
    assert np.all(model[0].bias.data == 0) and not np.all(model[2].bias.data == 0)
    # kaiming_normal with gain sqrt(2): std sqrt(2 / 400)
    assert model[0].weight.data.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)


def test_initialised_weights_are_not_initialised_again():
    model = Sequential(Linear(6, 5), ReLU())
    before = model[0].weight.data.copy()
    Sequential(model[0], Tanh())  # nesting or re-wrapping keeps trained weights
    _ = model[0:2]
    np.testing.assert_array_equal(model[0].weight.data, before)


def test_unknown_init_map():
    with pytest.raises(ValueError, match=r"init_map 'he' is not one of.*MININN_INIT_MAP"):
        apply_default_init(Sequential(), init_map="he")


def _top_level_imports(module) -> set[str]:
    """The modules that ``module``'s source imports at import time (not in functions)."""
    import ast
    import inspect

    names = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    return names


def test_init_needs_only_numpy():
    import mininn.init

    assert _top_level_imports(mininn.init) == {
        "__future__",
        "math",
        "typing",
        "numpy",
        "mininn._rng",
    }


def test_module_imports_nothing_of_mininn():
    # The default initialisation lives above the layers (mininn.container), so
    # module.py does not import init.py, and init.py does not import module.py.
    import mininn.module

    assert not {name for name in _top_level_imports(mininn.module) if name.startswith("mininn")}
