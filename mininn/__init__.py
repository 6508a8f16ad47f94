"""mininn: a small, fast, honest MLP framework on NumPy, with PyTorch's API.

Each layer's forward and backward pass are written out side by side; there is
no autograd. Import only NumPy at import time.
"""

from mininn._rng import default_rng, manual_seed
from mininn.module import Module, Parameter, Sequential

__version__ = "0.1.0"

__all__ = [
    "Module",
    "Parameter",
    "Sequential",
    "__version__",
    "default_rng",
    "manual_seed",
]
