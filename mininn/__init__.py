"""mininn: a small, fast, honest MLP framework on NumPy, with PyTorch's API.

Each layer's forward and backward pass are written out side by side; there is
no autograd. Importing mininn imports only NumPy.

Example:
    >>> import numpy as np, mininn
    >>> _ = mininn.manual_seed(0)
    >>> model = mininn.Sequential(mininn.Linear(4, 8), mininn.ReLU(), mininn.Linear(8, 3))
    >>> loss_fn = mininn.CrossEntropyLoss()
    >>> optimizer = mininn.optim.Adam(model.parameters(), lr=0.01)
    >>> x, y = np.ones((5, 4), dtype=np.float32), np.array([0, 1, 2, 1, 0])
    >>> optimizer.zero_grad()
    >>> loss = loss_fn(model(x), y)
    >>> grad_input = model.backward(loss_fn.backward())
    >>> optimizer.step()
    >>> grad_input.shape
    (5, 4)
"""

from mininn import (
    config,
    data,
    init,
    interop,
    metrics,
    models,
    optim,
    training,
    transforms,
    utils,
)
from mininn._rng import default_rng, manual_seed
from mininn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from mininn.container import Sequential
from mininn.dataloader import DataLoader
from mininn.gradcheck import gradcheck, gradcheck_loss, numerical_grad
from mininn.layers import BatchNorm1d, Dropout, Identity, Linear
from mininn.losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss
from mininn.module import Module, Parameter
from mininn.serialization import load, save

__version__ = "0.1.0"

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "DataLoader",
    "Dropout",
    "Identity",
    "L1Loss",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "__version__",
    "config",
    "data",
    "default_rng",
    "gradcheck",
    "gradcheck_loss",
    "init",
    "interop",
    "load",
    "manual_seed",
    "metrics",
    "models",
    "numerical_grad",
    "optim",
    "save",
    "training",
    "transforms",
    "utils",
]
