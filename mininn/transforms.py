"""Random augmentation of image batches, with torchvision's names and semantics.

torchvision transforms one image at a time; mininn's batches are rows of
flattened images, so each transform here takes an ``(N, C*H*W)`` (or
``(N, H*W)``) batch, draws one random choice per sample, and applies all of them
in a few vectorised NumPy operations. Each transform is told the shape of one
image (``image_shape=(28, 28)`` or ``(1, 28, 28)``) and draws from its own
seeded ``numpy.random.Generator``, whose state ``state_dict()`` /
``load_state_dict()`` save and restore, so that an interrupted training resumes
with the same augmented batches.

Hand a transform to :class:`~mininn.DataLoader` (``DataLoader(x, y,
transform=...)``) to augment the inputs of each training batch.

Example:
    >>> import numpy as np
    >>> from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip
    >>> augment = Compose([
    ...     RandomCrop(28, padding=2, image_shape=(28, 28), seed=0),
    ...     RandomHorizontalFlip(image_shape=(28, 28), seed=1),
    ... ])
    >>> augment(np.ones((5, 784), dtype=np.float32)).shape
    (5, 784)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mininn._rng import default_rng

__all__ = ["Compose", "RandomCrop", "RandomHorizontalFlip"]

_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _make_generator(seed: Any, where: str) -> np.random.Generator:
    if seed is None:
        # A child stream, as DataLoader's: deterministic under manual_seed, and it
        # leaves the package generator's own stream (initialisers, Dropout) untouched.
        return default_rng().spawn(1)[0]
    if isinstance(seed, np.random.Generator):
        return seed
    if _is_int(seed):
        if seed < 0:
            raise ValueError(f"{where}: seed must be a non-negative int, got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"{where}: seed must be None, an int or a numpy.random.Generator, got {seed!r}")


def _generator_state(generator: np.random.Generator) -> dict:
    """A copy of ``generator``'s state (a dict of str and int, as ``bit_generator.state``)."""
    state = generator.bit_generator.state
    return {**state, "state": dict(state["state"])}


def _set_generator_state(generator: np.random.Generator, state: Any, where: str) -> None:
    """Put back a state from :func:`_generator_state`; a wrong one raises ValueError."""
    expected = generator.bit_generator.state
    if not isinstance(state, dict) or set(state) != set(expected):
        raise ValueError(
            f"{where}: expected a generator state with keys {sorted(expected)}, got "
            f"{sorted(state) if isinstance(state, dict) else type(state).__name__}"
        )
    if state["bit_generator"] != expected["bit_generator"]:
        raise ValueError(
            f"{where}: the saved state is of a {state['bit_generator']} generator, this one "
            f"is {expected['bit_generator']}"
        )
    generator.bit_generator.state = {**state, "state": dict(state["state"])}


def _check_image_shape(image_shape: Any, where: str) -> tuple[int, int, int]:
    """(C, H, W) of ``image_shape``, given as (H, W) or (C, H, W)."""
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
    if shape is None or len(shape) not in (2, 3) or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(
            f"{where}: image_shape must be (H, W) or (C, H, W) of positive ints, e.g. (28, 28), "
            f"got {image_shape!r}"
        )
    shape = tuple(int(s) for s in shape)
    return (1, *shape) if len(shape) == 2 else shape


class _RandomTransform:
    """What RandomCrop and RandomHorizontalFlip share: the image shape, the
    generator and its state, and the check of the input batch."""

    def __init__(self, image_shape: Any, seed: Any) -> None:
        self._chw = _check_image_shape(image_shape, type(self).__name__)
        self.image_shape = self._chw if len(image_shape) == 3 else self._chw[1:]
        self._generator = _make_generator(seed, type(self).__name__)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output image, in the same form as ``image_shape``."""
        return self.image_shape

    def _images(self, x: Any) -> np.ndarray:
        """``x`` as an (N, C, H, W) view, after checking it is an (N, C*H*W) batch."""
        x = np.asarray(x)
        features = math.prod(self._chw)
        if x.ndim != 2 or x.shape[1] != features:
            raise ValueError(
                f"{type(self).__name__}: expected a batch of shape (N, {features}) (images of "
                f"shape {self.image_shape}, flattened), got {x.shape}; check image_shape"
            )
        return x.reshape(len(x), *self._chw)

    def state_dict(self) -> dict:
        """The generator's state, ``{"generator": {...}}``: plain str and int values."""
        return {"generator": _generator_state(self._generator)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the generator from :meth:`state_dict`; the next draws repeat."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"generator"}:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected {{'generator': ...}}, got "
                f"{sorted(state_dict) if isinstance(state_dict, dict) else state_dict!r}"
            )
        _set_generator_state(
            self._generator, state_dict["generator"], f"{type(self).__name__}.load_state_dict"
        )


def _pair(value: Any, name: str, where: str) -> tuple[int, int]:
    """(height, width) of an int or a sequence of one or two ints."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(_is_int(v) and v > 0 for v in values):
        raise ValueError(
            f"{where}: {name} must be a positive int or a (height, width) pair, got {value!r}"
        )
    return int(values[0]), int(values[1])


def _padding(padding: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of torchvision's padding: one int for every border,
    two for (left/right, top/bottom), four for (left, top, right, bottom)."""
    if padding is None:
        return (0, 0, 0, 0)
    values = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
    if len(values) not in (1, 2, 4) or not all(_is_int(v) and v >= 0 for v in values):
        raise ValueError(
            f"RandomCrop: padding must be a non-negative int or a sequence of 1, 2 or 4 of "
            f"them, got {padding!r}"
        )
    values = tuple(int(v) for v in values)
    if len(values) == 1:
        return values * 4
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    return values


class RandomCrop(_RandomTransform):
    """Pad each image, then cut a ``size`` window at a random place: a random shift.

    As ``torchvision.transforms.RandomCrop``: the image is padded by ``padding``
    (then, with ``pad_if_needed``, by ``size - width`` on the left and right and
    ``size - height`` on the top and bottom if it is still smaller than ``size``),
    and the window's top-left corner (i, j) is drawn uniformly from
    {0, ..., H_pad - h} x {0, ..., W_pad - w} for each sample:

        y[c, r, s] = x_pad[c, i + r, j + s],  0 <= r < h, 0 <= s < w.

    With ``size`` equal to the image size and ``padding=p``, the offsets are
    uniform in [0, 2p] and the image moves by (i - p, j - p) pixels, the
    uncovered border filled with ``fill``. When the padded image is already the
    size of the crop nothing is drawn and the images come back unchanged
    (torchvision draws nothing either).

    Draw order, for a batch of N: ``rng.integers(0, H_pad - h + 1, size=N)`` for the
    rows, then ``rng.integers(0, W_pad - w + 1, size=N)`` for the columns.

    Args:
        size: (h, w) of the crop, or one int for a square crop.
        padding: None, one int for every border, (left/right, top/bottom), or (left,
            top, right, bottom), in pixels, >= 0. Default: None (no padding).
        pad_if_needed: pad an image smaller than ``size`` up to it (see above).
            Default: False.
        fill: the value of ``"constant"`` padding, a number. Default: 0.
        padding_mode: ``"constant"``, ``"edge"``, ``"reflect"`` or ``"symmetric"``,
            as torchvision (NumPy's ``np.pad`` modes of the same names). Default:
            ``"constant"``.
        image_shape: the shape of one input image, (H, W) or (C, H, W); keyword-only
            and required.
        seed: an int seed or a ``numpy.random.Generator`` for the offsets. When None,
            a child generator is spawned from the package generator (seeded by
            :func:`mininn.manual_seed`) at construction. Default: None.
    Shape:
        - Input: (N, C*H*W), any dtype.
        - Output: (N, C*h*w), the input's dtype; a new array.
    Attributes:
        output_shape: the shape of one output image, (h, w) or (C, h, w).
    Raises:
        ValueError: ``size``, ``padding``, ``padding_mode`` or ``image_shape`` is
            invalid; the crop is larger than the padded image; the input is not an
            (N, C*H*W) batch.
        TypeError: ``fill`` is not a number; ``seed`` is not None, an int or a Generator.
    References: torchvision.transforms.RandomCrop (the augmentation of Krizhevsky et
        al. 2012, "ImageNet Classification with Deep Convolutional Neural Networks").
    Example:
        >>> crop = RandomCrop(3, padding=1, image_shape=(3, 3), seed=0)
        >>> shifted = crop(np.arange(1, 10).reshape(1, 9)).reshape(3, 3)
        >>> shifted.shape, set(shifted.ravel()) <= set(range(10))
        ((3, 3), True)
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float = 0,
        padding_mode: str = "constant",
        *,
        image_shape: Sequence[int],
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.size = _pair(size, "size", "RandomCrop")
        self.padding = _padding(padding)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"RandomCrop: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}"
            )
        if isinstance(fill, bool) or not isinstance(fill, (int, float, np.integer, np.floating)):
            raise TypeError(f"RandomCrop: fill must be a number, got {fill!r}")
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = fill
        self.padding_mode = padding_mode
        super().__init__(image_shape, seed)
        height, width = self._padded_size()
        if height < self.size[0] or width < self.size[1]:
            raise ValueError(
                f"RandomCrop: crop size {self.size} is larger than the padded image "
                f"({height}, {width}) (image_shape {self.image_shape}, padding {padding!r}); "
                "pad more, crop less or pass pad_if_needed=True"
            )

    def _padded_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.padding
        height, width = self._chw[1] + top + bottom, self._chw[2] + left + right
        if self.pad_if_needed and width < self.size[1]:
            width += 2 * (self.size[1] - width)
        if self.pad_if_needed and height < self.size[0]:
            height += 2 * (self.size[0] - height)
        return height, width

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (*self.image_shape[:-2], *self.size)

    def _pad(self, images: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        widths = ((0, 0), (0, 0), (top, bottom), (left, right))
        if self.padding_mode == "constant":
            return np.pad(images, widths, mode="constant", constant_values=self.fill)
        return np.pad(images, widths, mode=self.padding_mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        images = self._images(x)
        n = len(images)
        left, top, right, bottom = self.padding
        if any(self.padding):
            images = self._pad(images, top, bottom, left, right)
        # torchvision pads the width, then the height, in two calls (they differ for reflect)
        width_short = self.size[1] - images.shape[3]
        if self.pad_if_needed and width_short > 0:
            images = self._pad(images, 0, 0, width_short, width_short)
        height_short = self.size[0] - images.shape[2]
        if self.pad_if_needed and height_short > 0:
            images = self._pad(images, height_short, height_short, 0, 0)
        h, w = self.size
        if images.shape[2:] == (h, w):
            return images.reshape(n, -1).copy()
        rows = self._generator.integers(0, images.shape[2] - h + 1, size=n)
        cols = self._generator.integers(0, images.shape[3] - w + 1, size=n)
        # windows[k, c, i, j] is the (h, w) window at (i, j) of image k (a view, no copy);
        # indexing it with one (i, j) per sample gathers the N crops at once.
        windows = np.lib.stride_tricks.sliding_window_view(images, (h, w), axis=(2, 3))
        return windows[np.arange(n), :, rows, cols].reshape(n, -1)

    def __repr__(self) -> str:
        return (
            f"RandomCrop(size={self.size}, padding={self.padding}, "
            f"pad_if_needed={self.pad_if_needed}, fill={self.fill}, "
            f"padding_mode={self.padding_mode!r}, image_shape={self.image_shape})"
        )


class RandomHorizontalFlip(_RandomTransform):
    """Mirror each image left to right with probability p: y[c, r, s] = x[c, r, W - 1 - s].

    As ``torchvision.transforms.RandomHorizontalFlip``: each sample draws
    u ~ U[0, 1) and is flipped when u < p, so ``p=0`` never flips and ``p=1``
    always does. One uniform per sample is drawn, ``rng.random(N)``, whatever p.

    Args:
        p: probability of flipping an image, in [0, 1]. Default: 0.5.
        image_shape: the shape of one input image, (H, W) or (C, H, W); keyword-only
            and required.
        seed: an int seed or a ``numpy.random.Generator``; None spawns a child of the
            package generator at construction. Default: None.
    Shape:
        - Input: (N, C*H*W), any dtype.  - Output: the same shape and dtype; a new array.
    Raises:
        ValueError: ``p`` outside [0, 1]; ``image_shape`` is invalid; the input is
            not an (N, C*H*W) batch.
        TypeError: ``p`` is not a number; ``seed`` is not None, an int or a Generator.
    Example:
        >>> flip = RandomHorizontalFlip(p=1.0, image_shape=(2, 3))
        >>> flip(np.arange(6).reshape(1, 6)).tolist()
        [[2, 1, 0, 5, 4, 3]]
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        image_shape: Sequence[int],
        seed: int | np.random.Generator | None = None,
    ) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise TypeError(f"RandomHorizontalFlip: p must be a number in [0, 1], got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)
        super().__init__(image_shape, seed)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        images = self._images(x)
        flip = self._generator.random(len(images)) < self.p
        out = images.copy()
        out[flip] = images[flip, :, :, ::-1]
        return out.reshape(len(images), -1)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p}, image_shape={self.image_shape})"


class Compose:
    """Apply transforms one after the other: y = t_k(... t_2(t_1(x))), as torchvision's.

    Args:
        transforms: a non-empty list of callables taking and returning a batch,
            e.g. :class:`RandomCrop` and :class:`RandomHorizontalFlip`.
    Raises:
        TypeError: ``transforms`` is not a list or tuple, or holds a non-callable.
        ValueError: it is empty, or a transform's ``image_shape`` is not the
            ``output_shape`` of the one before it.
    Example:
        >>> t = Compose([RandomHorizontalFlip(1.0, image_shape=(1, 2)),
        ...              RandomHorizontalFlip(1.0, image_shape=(1, 2))])
        >>> t(np.array([[1, 2]])).tolist()
        [[1, 2]]
    """

    def __init__(self, transforms: Sequence[Callable[[np.ndarray], np.ndarray]]) -> None:
        if not isinstance(transforms, (list, tuple)):
            raise TypeError(
                f"Compose: expected a list of transforms, got {type(transforms).__name__}"
            )
        if not transforms:
            raise ValueError("Compose: expected at least one transform, got an empty list")
        for index, transform in enumerate(transforms):
            if not callable(transform):
                raise TypeError(
                    f"Compose: transforms[{index}] is a {type(transform).__name__}, not callable"
                )
        for index, (before, after) in enumerate(itertools.pairwise(transforms)):
            out, into = getattr(before, "output_shape", None), getattr(after, "image_shape", None)
            if out is not None and into is not None and tuple(out) != tuple(into):
                raise ValueError(
                    f"Compose: transforms[{index + 1}] expects image_shape {tuple(into)} but "
                    f"transforms[{index}] outputs images of shape {tuple(out)}"
                )
        self.transforms = list(transforms)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for transform in self.transforms:
            x = transform(x)
        return x

    def state_dict(self) -> dict:
        """``{"transforms": [each one's state_dict(), or None when it has none]}``."""
        return {
            "transforms": [
                t.state_dict() if hasattr(t, "state_dict") else None for t in self.transforms
            ]
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore each transform's generator from :meth:`state_dict`."""
        states = state_dict.get("transforms") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or len(states) != len(self.transforms):
            raise ValueError(
                f"Compose.load_state_dict: expected {{'transforms': [...]}} with "
                f"{len(self.transforms)} entries, got {state_dict!r:.200}"
            )
        for transform, state in zip(self.transforms, states, strict=True):
            if hasattr(transform, "load_state_dict"):
                transform.load_state_dict(state)

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
