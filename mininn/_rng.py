"""The package's random number generator, seeded by :func:`manual_seed`.

Initialisers, Dropout and the DataLoader draw from :func:`default_rng` unless
they are given an explicit ``numpy.random.Generator`` or seed, as PyTorch's
functions draw from the default generator that ``torch.manual_seed`` seeds.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the package's generator, as ``torch.manual_seed`` does.

    Args:
        seed: a non-negative integer.
    Returns:
        The new package generator (a ``numpy.random.Generator``, PCG64).
    Raises:
        TypeError: ``seed`` is not an integer.
        ValueError: ``seed`` is negative.
    Example:
        >>> import mininn
        >>> _ = mininn.manual_seed(0)
        >>> a = mininn.default_rng().random()
        >>> _ = mininn.manual_seed(0)
        >>> a == mininn.default_rng().random()
        True
    """
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: expected an int seed, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative seed, got {seed}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_rng() -> np.random.Generator:
    """Return the package's generator (the one :func:`manual_seed` last seeded)."""
    return _generator


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Resolve an ``rng=``/``seed=`` argument: a Generator as is, an int seeds a new
    one, ``None`` gives the package generator."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"expected a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )
