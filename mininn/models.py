"""Ready-made networks: the MLP that the pipeline, the examples and the benchmark train."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mininn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from mininn.container import Sequential
from mininn.layers import BatchNorm1d, Dropout, Linear
from mininn.module import Module

__all__ = ["ACTIVATIONS", "make_mlp"]

#: Activation names accepted by :func:`make_mlp`, and the class each builds.
ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
}


def make_mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    out_features: int,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    dtype: Any = None,
) -> Sequential:
    """Build an MLP: ``[Linear → (BatchNorm1d) → activation → (Dropout)] × H → Linear``.

    The output layer has no activation: pair it with ``CrossEntropyLoss`` (logits),
    ``BCEWithLogitsLoss`` or ``MSELoss``. Hidden Linear layers get the
    activation-aware default initialisation (see :class:`mininn.Sequential`); the
    output layer keeps PyTorch's default. Weights are drawn from the package
    generator: call :func:`mininn.manual_seed` first for a reproducible network.

    Args:
        in_features: size of each input sample, e.g. 784 for 28×28 images.
        hidden_sizes: width of each hidden layer, e.g. ``[256, 128]``; may be empty
            (a linear model).
        out_features: number of outputs, e.g. 10 classes.
        activation: one of ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``. Default: ``relu``.
        dropout: probability of zeroing a hidden unit, in [0, 1); 0 adds no Dropout
            layer. Default: 0.
        batch_norm: add ``BatchNorm1d`` after each hidden Linear. Default: False.
        dtype: float32 or float64. Default: None (float32).
    Returns:
        A :class:`~mininn.Sequential`.
    Raises:
        ValueError: a size is not a positive integer, ``hidden_sizes`` is not a list,
            an unknown activation, or
            ``dropout`` outside [0, 1).
    Example:
        >>> model = make_mlp(784, [256, 128], 10, batch_norm=True)
        >>> [name for name, _ in model.named_parameters()][:4]
        ['0.weight', '0.bias', '1.weight', '1.bias']
    """
    if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence):
        raise ValueError(
            "make_mlp: hidden_sizes must be a list of positive integers, e.g. [256, 128] "
            f"(or [] for none), got {hidden_sizes!r}"
        )
    sizes = {"in_features": in_features, "out_features": out_features}
    sizes.update({f"hidden_sizes[{i}]": size for i, size in enumerate(hidden_sizes)})
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"make_mlp: {name} must be a positive integer, got {size!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"make_mlp: unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"make_mlp: dropout must be a probability in [0, 1), got {dropout!r}")
    layers: list[Module] = []
    width = in_features
    for size in hidden_sizes:
        layers.append(Linear(width, size, dtype=dtype))
        if batch_norm:
            layers.append(BatchNorm1d(size, dtype=dtype))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(Dropout(dropout))
        width = size
    layers.append(Linear(width, out_features, dtype=dtype))
    return Sequential(*layers)
