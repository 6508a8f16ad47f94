"""mininn.transforms: RandomCrop, RandomHorizontalFlip and Compose on batches of flattened
images, against an independent per-sample reference (np.pad, then a slice, one image at a
time), with torchvision's semantics: crop offsets uniform in [0, H_pad - h], flip when u < p.

torchvision is not installed here, so there is no torchvision comparison; the reference
follows torchvision's documented algorithm image by image.
"""

from __future__ import annotations

import numpy as np
import pytest

import mininn
from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip


def _reference_crop(x, image_shape, size, padding, seed, mode="constant", fill=0):
    """torchvision's RandomCrop, one image at a time: pad (left, top, right, bottom), then
    slice the (h, w) window at the offsets drawn in the documented order."""
    chw = (1, *image_shape) if len(image_shape) == 2 else image_shape
    left, top, right, bottom = padding
    h, w = size
    hp, wp = chw[1] + top + bottom, chw[2] + left + right
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, hp - h + 1, size=len(x))
    cols = rng.integers(0, wp - w + 1, size=len(x))
    out = []
    for k, flat in enumerate(x):
        image = flat.reshape(chw)
        widths = ((0, 0), (top, bottom), (left, right))
        kwargs = {"constant_values": fill} if mode == "constant" else {}
        padded = np.pad(image, widths, mode=mode, **kwargs)
        out.append(padded[:, rows[k] : rows[k] + h, cols[k] : cols[k] + w].ravel())
    return np.stack(out)


CROPS = [
    pytest.param((28, 28), 28, 4, (4, 4, 4, 4), "constant", id="mnist-shift4"),
    pytest.param((1, 28, 28), 28, 2, (2, 2, 2, 2), "constant", id="chw-shift2"),
    pytest.param((3, 8, 10), (6, 7), None, (0, 0, 0, 0), "constant", id="rgb-crop-smaller"),
    pytest.param((3, 8, 10), 8, (1, 3), (1, 3, 1, 3), "constant", id="pad-lr-tb"),
    pytest.param((5, 6), (5, 6), (0, 1, 2, 3), (0, 1, 2, 3), "constant", id="pad-ltrb"),
    pytest.param((2, 7, 7), 7, 3, (3, 3, 3, 3), "reflect", id="reflect"),
    pytest.param((7, 7), 7, 2, (2, 2, 2, 2), "edge", id="edge"),
    pytest.param((7, 7), 7, 2, (2, 2, 2, 2), "symmetric", id="symmetric"),
]


@pytest.mark.parametrize(("image_shape", "size", "padding", "ltrb", "mode"), CROPS)
def test_random_crop_equals_the_per_sample_reference(image_shape, size, padding, ltrb, mode, rng):
    features = int(np.prod(image_shape))
    x = rng.normal(size=(64, features))
    crop = RandomCrop(size, padding=padding, padding_mode=mode, image_shape=image_shape, seed=5)
    hw = (size, size) if isinstance(size, int) else size
    expected = _reference_crop(x, image_shape, hw, ltrb, seed=5, mode=mode)
    np.testing.assert_array_equal(crop(x), expected)
    assert crop.output_shape == (*image_shape[:-2], *hw)


def test_random_crop_is_a_uniform_shift_in_0_to_2p(rng):
    # Recover each sample's offset by matching against every candidate window; the
    # offsets must take every value of {0..2p}^2, about equally often.
    p, n = 2, 2500
    x = rng.normal(size=(n, 25)) + 10.0  # no zeros: each window is unique
    out = RandomCrop(5, padding=p, image_shape=(5, 5), seed=0)(x).reshape(n, 5, 5)
    padded = np.pad(x.reshape(n, 5, 5), ((0, 0), (p, p), (p, p)))
    counts = np.zeros((2 * p + 1, 2 * p + 1), dtype=int)
    for k in range(n):
        matches = [
            (i, j)
            for i in range(2 * p + 1)
            for j in range(2 * p + 1)
            if np.array_equal(padded[k, i : i + 5, j : j + 5], out[k])
        ]
        assert len(matches) == 1
        counts[matches[0]] += 1
    expected = n / counts.size  # 100 per offset; a binomial sd of ~10
    assert counts.min() > expected - 50 and counts.max() < expected + 50
    assert (out == 0).any()  # the uncovered border is zero padding


@pytest.mark.parametrize("padding", [None, 0, (0, 0), (0, 0, 0, 0)], ids=repr)
def test_random_crop_without_padding_at_full_size_is_the_identity(padding, rng):
    x = rng.normal(size=(10, 12)).astype(np.float32)
    crop = RandomCrop((3, 4), padding=padding, image_shape=(3, 4), seed=0)
    before = crop.state_dict()
    out = crop(x)
    np.testing.assert_array_equal(out, x)
    assert out is not x
    assert crop.state_dict() == before  # nothing drawn, as torchvision


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int64])
def test_transforms_keep_shape_and_dtype(dtype, rng):
    x = rng.integers(0, 255, size=(9, 2 * 6 * 6)).astype(dtype)
    for transform in (
        RandomCrop(6, padding=2, image_shape=(2, 6, 6), seed=0),
        RandomHorizontalFlip(image_shape=(2, 6, 6), seed=0),
    ):
        out = transform(x)
        assert out.shape == x.shape and out.dtype == x.dtype


def test_random_crop_fill_value():
    x = np.ones((50, 9), dtype=np.float32)
    out = RandomCrop(3, padding=1, fill=-7, image_shape=(3, 3), seed=0)(x)
    assert set(np.unique(out).tolist()) == {-7.0, 1.0}


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_pad_if_needed_pads_width_then_height(mode, rng):
    # torchvision: width short by 2 -> pad 2 left and right; height short by 1 -> pad 1
    # top and bottom, in two calls (which differ from one call for reflect).
    x = rng.normal(size=(20, 12))
    crop = RandomCrop((4, 6), pad_if_needed=True, padding_mode=mode, image_shape=(3, 4), seed=2)
    out = crop(x)
    gen = np.random.default_rng(2)
    rows, cols = gen.integers(0, 5 - 4 + 1, size=20), gen.integers(0, 8 - 6 + 1, size=20)
    for k in range(20):
        image = np.pad(x[k].reshape(3, 4), ((0, 0), (2, 2)), mode=mode)
        image = np.pad(image, ((1, 1), (0, 0)), mode=mode)
        window = image[rows[k] : rows[k] + 4, cols[k] : cols[k] + 6]
        np.testing.assert_array_equal(out[k], window.ravel())


@pytest.mark.parametrize("image_shape", [(4, 5), (3, 4, 5)], ids=["hw", "chw"])
def test_horizontal_flip_equals_the_per_sample_reference(image_shape, rng):
    x = rng.normal(size=(200, int(np.prod(image_shape))))
    out = RandomHorizontalFlip(0.3, image_shape=image_shape, seed=9)(x)
    flips = np.random.default_rng(9).random(200) < 0.3
    for k in range(200):
        image = x[k].reshape(image_shape)
        expected = image[..., ::-1] if flips[k] else image
        np.testing.assert_array_equal(out[k], expected.ravel())
    assert 30 < flips.sum() < 90  # both branches were exercised


@pytest.mark.parametrize(("p", "flipped"), [(0.0, False), (1.0, True)], ids=["p0", "p1"])
def test_horizontal_flip_p0_never_p1_always(p, flipped, rng):
    x = rng.normal(size=(100, 6))
    out = RandomHorizontalFlip(p, image_shape=(2, 3), seed=0)(x)
    expected = x.reshape(100, 2, 3)[..., ::-1].reshape(100, 6) if flipped else x
    np.testing.assert_array_equal(out, expected)


def test_compose_applies_in_order_and_saves_every_state(rng):
    x = rng.normal(size=(16, 64))

    def make():
        return Compose([
            RandomCrop(6, padding=1, image_shape=(8, 8), seed=1),
            RandomHorizontalFlip(image_shape=(6, 6), seed=2),
            lambda batch: batch * 2.0,  # a plain callable, without state
        ])  # fmt: skip

    composed = make()
    crop = RandomCrop(6, padding=1, image_shape=(8, 8), seed=1)
    flip = RandomHorizontalFlip(image_shape=(6, 6), seed=2)
    np.testing.assert_array_equal(composed(x), flip(crop(x)) * 2.0)
    state = composed.state_dict()
    assert state["transforms"][2] is None
    expected = composed(x)
    other = make()
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(x), expected)


def test_state_dict_round_trip_repeats_the_draws(rng):
    x = rng.normal(size=(32, 49))
    crop = RandomCrop(7, padding=3, image_shape=(7, 7), seed=0)
    crop(x)
    state = crop.state_dict()
    expected = [crop(x), crop(x)]
    fresh = RandomCrop(7, padding=3, image_shape=(7, 7), seed=123)
    fresh.load_state_dict(state)
    for batch in expected:
        np.testing.assert_array_equal(fresh(x), batch)


def test_the_same_seed_gives_the_same_batches_and_none_follows_manual_seed(rng):
    x = rng.normal(size=(32, 49))
    a, b = (RandomCrop(7, padding=3, image_shape=(7, 7), seed=4) for _ in range(2))
    np.testing.assert_array_equal(a(x), b(x))
    mininn.manual_seed(3)
    first = RandomHorizontalFlip(image_shape=(7, 7))(x)
    mininn.manual_seed(3)
    np.testing.assert_array_equal(RandomHorizontalFlip(image_shape=(7, 7))(x), first)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: RandomCrop(0, image_shape=(4, 4)), ValueError, r"size must be a positive.*got 0"),
        (lambda: RandomCrop((2, 2, 2), image_shape=(4, 4)), ValueError, r"size .*got \(2, 2, 2\)"),
        (lambda: RandomCrop(2.5, image_shape=(4, 4)), ValueError, "size .*got 2.5"),
        (lambda: RandomCrop(4, padding=-1, image_shape=(4, 4)), ValueError, "padding .*got -1"),
        (lambda: RandomCrop(4, padding=(1, 2, 3), image_shape=(4, 4)), ValueError,
         r"padding .*1, 2 or 4.*got \(1, 2, 3\)"),
        (lambda: RandomCrop(4, padding=1.5, image_shape=(4, 4)), ValueError, "padding .*got 1.5"),
        (lambda: RandomCrop(4, padding_mode="wrap", image_shape=(4, 4)), ValueError,
         "padding_mode must be one of.*got 'wrap'"),
        (lambda: RandomCrop(4, fill="black", image_shape=(4, 4)), TypeError,
         "fill must be a number, got 'black'"),
        (lambda: RandomCrop(5, padding=0, image_shape=(4, 4)), ValueError,
         r"crop size \(5, 5\) is larger than the padded image \(4, 4\).*pad_if_needed"),
        (lambda: RandomCrop(4, image_shape=(16,)), ValueError, r"image_shape .*got \(16,\)"),
        (lambda: RandomCrop(4, image_shape=(0, 4)), ValueError, r"image_shape .*got \(0, 4\)"),
        (lambda: RandomCrop(4, image_shape="28x28"), ValueError, "image_shape .*got '28x28'"),
        (lambda: RandomCrop(4, image_shape=(4, 4), seed="a"), TypeError, "seed must be.*got 'a'"),
        (lambda: RandomCrop(4, image_shape=(4, 4), seed=-1), ValueError,
         "seed must be a non-negative int, got -1"),
        (lambda: RandomHorizontalFlip(1.5, image_shape=(4, 4)), ValueError,
         r"p must be in \[0, 1\], got 1.5"),
        (lambda: RandomHorizontalFlip(-0.1, image_shape=(4, 4)), ValueError, "got -0.1"),
        (lambda: RandomHorizontalFlip("half", image_shape=(4, 4)), TypeError,
         "p must be a number.*got 'half'"),
        (lambda: Compose([]), ValueError, "at least one transform"),
        (lambda: Compose(RandomHorizontalFlip(image_shape=(2, 2))), TypeError,
         "expected a list of transforms, got RandomHorizontalFlip"),
        (lambda: Compose([np.ones(3)]), TypeError, r"transforms\[0\] is a ndarray, not callable"),
        (lambda: Compose([RandomCrop(3, image_shape=(4, 4)),
                          RandomHorizontalFlip(image_shape=(4, 4))]), ValueError,
         r"transforms\[1\] expects image_shape \(4, 4\) but transforms\[0\] outputs .*\(3, 3\)"),
    ],
    ids=[
        "size-0", "size-3", "size-float", "padding-negative", "padding-3", "padding-float",
        "padding-mode", "fill", "crop-too-large", "image-shape-1d", "image-shape-zero",
        "image-shape-str", "seed-type", "seed-negative", "p-above-1", "p-negative", "p-str",
        "compose-empty", "compose-not-list", "compose-not-callable", "compose-chain",
    ],
)  # fmt: skip
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    "transform",
    [RandomCrop(28, padding=2, image_shape=(28, 28)), RandomHorizontalFlip(image_shape=(28, 28))],
    ids=["crop", "flip"],
)
@pytest.mark.parametrize(
    "shape", [(8, 783), (784,), (8, 28, 28)], ids=["wrong-features", "1d", "3d"]
)
def test_a_batch_that_does_not_fit_image_shape_is_refused(transform, shape):
    name = type(transform).__name__
    with pytest.raises(ValueError, match=rf"{name}: expected a batch of shape \(N, 784\).*got"):
        transform(np.zeros(shape))


def test_load_state_dict_errors():
    crop = RandomCrop(4, image_shape=(4, 4), seed=0)
    with pytest.raises(ValueError, match=r"expected \{'generator': \.\.\.\}, got \['rng'\]"):
        crop.load_state_dict({"rng": {}})
    with pytest.raises(ValueError, match="expected a generator state with keys"):
        crop.load_state_dict({"generator": {"state": 1}})
    state = crop.state_dict()
    state["generator"]["bit_generator"] = "MT19937"
    with pytest.raises(ValueError, match="state is of a MT19937 generator, this one is PCG64"):
        crop.load_state_dict(state)
    compose = Compose([crop])
    with pytest.raises(ValueError, match=r"expected \{'transforms': \[\.\.\.\]\} with 1 entries"):
        compose.load_state_dict({"transforms": []})
