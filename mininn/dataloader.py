"""DataLoader: iterate over aligned arrays in (optionally shuffled) mini-batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mininn._rng import default_rng
from mininn.transforms import _generator_state, _set_generator_state

__all__ = ["DataLoader"]


class DataLoader:
    """Yield tuples of mini-batches ``(x[idx], y[idx], ...)`` of arrays that share
    their first dimension, as ``torch.utils.data.DataLoader`` over a TensorDataset.

    Each epoch (each ``iter()``) visits every sample once. With ``shuffle=True`` a
    new permutation is drawn per epoch from a generator created once, at
    construction: the same ``seed`` gives the same sequence of epochs.

    With a ``transform`` (e.g. :class:`mininn.transforms.RandomCrop`), each batch's
    first array (the inputs) is passed through it as the loader yields the batch;
    the other arrays (labels, ...) are yielded as they are. A transform with its own
    seeded generator gives the same augmented batches for the same seeds.
    :meth:`state_dict` holds the shuffling generator's state and the transform's,
    so that a loader rebuilt and loaded from it continues with the same batches.

    Args:
        *arrays: one or more arrays (e.g. features and labels), indexed along axis 0.
            They are not copied and never modified.
        batch_size: samples per batch, a positive int; the last batch may be
            smaller. Default: 1.
        shuffle: draw a new order of the samples at every epoch. Default: False.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
            Default: False.
        seed: an int seed, or a ``numpy.random.Generator``, for the shuffling. When
            None, a child generator is spawned from the package generator (seeded by
            :func:`mininn.manual_seed`) at construction. Default: None.
        transform: a callable applied to the first array of each batch, ``(B, ...) ->
            (B, ...)``, or None. Default: None.
    Shape:
        - Each array: (N, ...), any dtype. Each batch: (B, ...), the same dtype, with
          B = batch_size except possibly the last. Batches are new arrays.
    Raises:
        ValueError: no arrays; a 0-d array; arrays with different first dimensions;
            batch_size < 1.
        TypeError: batch_size is not an int; seed is neither None, an int nor a Generator;
            transform is not callable.
    Example:
        >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
        >>> loader = DataLoader(x, y, batch_size=2)
        >>> len(loader), [yb.tolist() for _, yb in loader]
        (3, [[0, 1], [2, 3], [4]])
    """

    def __init__(
        self,
        *arrays: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not arrays:
            raise ValueError("DataLoader: expected at least one array, got none")
        arrays = tuple(np.asarray(a) for a in arrays)
        shapes = [a.shape for a in arrays]
        if any(len(shape) == 0 for shape in shapes):
            raise ValueError(f"DataLoader: expected arrays of shape (N, ...), got shapes {shapes}")
        if len({shape[0] for shape in shapes}) != 1:
            raise ValueError(
                f"DataLoader: all arrays must have the same first dimension (the number of "
                f"samples), got shapes {shapes}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"DataLoader: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(
                f"DataLoader: batch_size should be a positive integer value, got {batch_size}"
            )
        self.arrays = arrays
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if transform is not None and not callable(transform):
            raise TypeError(
                f"DataLoader: transform must be a callable (batch -> batch) or None, got "
                f"{type(transform).__name__}"
            )
        self._generator = _make_generator(seed)
        self.transform = transform

    @property
    def num_samples(self) -> int:
        """N, the number of samples."""
        return self.arrays[0].shape[0]

    def __len__(self) -> int:
        """The number of batches per epoch: ceil(N / batch_size), or floor with drop_last."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def iter_indices(self) -> Iterator[np.ndarray]:
        """Yield the sample indices of each batch of one new epoch (int64 arrays).

        ``__iter__`` gathers the batches from these, so feeding another framework the
        same indices reproduces the batches exactly. Each call starts a new epoch:
        with ``shuffle=True`` it draws a new permutation.
        """
        n = self.num_samples
        order = self._generator.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        for indices in self.iter_indices():
            # np.take on a whole index array is one gather per array, into a new array.
            batch = tuple(np.take(a, indices, axis=0) for a in self.arrays)
            if self.transform is not None:
                inputs = self.transform(batch[0])
                if np.shape(inputs)[:1] != (len(indices),):
                    raise ValueError(
                        f"DataLoader: the transform returned shape {np.shape(inputs)} for a "
                        f"batch of {len(indices)} samples; it must keep the first dimension"
                    )
                batch = (inputs, *batch[1:])
            yield batch

    def state_dict(self) -> dict:
        """The random state: ``{"generator": <shuffling generator's state>, "transform":
        <the transform's state_dict(), or None>}``, plain str/int values."""
        transform = self.transform
        return {
            "generator": _generator_state(self._generator),
            "transform": transform.state_dict() if hasattr(transform, "state_dict") else None,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the random state saved by :meth:`state_dict`; the next epochs (and
        their augmentations) repeat those that followed the save.

        Raises:
            ValueError: ``state_dict`` is not of this form, or holds a transform state
                when this loader's transform has none (or the reverse).
        """
        if not isinstance(state_dict, dict) or set(state_dict) != {"generator", "transform"}:
            raise ValueError(
                "DataLoader.load_state_dict: expected {'generator': ..., 'transform': ...}, got "
                f"{sorted(state_dict) if isinstance(state_dict, dict) else state_dict!r}"
            )
        has_state = hasattr(self.transform, "state_dict")
        if (state_dict["transform"] is None) == has_state:
            raise ValueError(
                f"DataLoader.load_state_dict: the saved state has "
                f"{'no' if state_dict['transform'] is None else 'a'} transform state, this "
                f"loader's transform ({self.transform!r}) "
                f"{'has one' if has_state else 'has none'}"
            )
        _set_generator_state(self._generator, state_dict["generator"], "DataLoader.load_state_dict")
        if has_state:
            self.transform.load_state_dict(state_dict["transform"])

    def __repr__(self) -> str:
        transform = "" if self.transform is None else f", transform={self.transform!r}"
        return (
            f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}{transform})"
        )


def _make_generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    if seed is None:
        # A child stream: deterministic under manual_seed, and it leaves the package
        # generator's own stream (used by initialisers and Dropout) untouched.
        return default_rng().spawn(1)[0]
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(
        f"DataLoader: seed must be None, an int or a numpy.random.Generator, got {seed!r}"
    )
