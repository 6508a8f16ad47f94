"""Tests of mininn.dataloader.DataLoader: coverage, order, determinism, errors."""

import numpy as np
import pytest

import mininn._rng
from mininn.dataloader import DataLoader
from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip

N = 23


def _data():
    x = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
    y = np.arange(N) * 10
    return x, y


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("batch_size", [1, 5, 23, 50], ids=lambda b: f"batch{b}")
def test_every_index_exactly_once_per_epoch(batch_size, shuffle):
    x, y = _data()
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=0)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-N // batch_size)
        assert all(len(xb) == batch_size for xb, _ in batches[:-1])
        xs = np.concatenate([xb for xb, _ in batches])
        ys = np.concatenate([yb for _, yb in batches])
        np.testing.assert_array_equal(np.sort(ys), y)
        np.testing.assert_array_equal(xs, x[ys // 10])  # rows stay aligned


def test_without_shuffle_the_order_is_the_arrays_order():
    x, y = _data()
    batches = list(DataLoader(x, y, batch_size=10))
    assert [yb.tolist() for _, yb in batches] == [
        list(range(0, 100, 10)),
        list(range(100, 200, 10)),
        [200, 210, 220],
    ]


@pytest.mark.parametrize(("batch_size", "expected"), [(5, 4), (23, 1), (24, 0), (1, 23)])
def test_drop_last_drops_the_short_batch(batch_size, expected):
    x, y = _data()
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=True, drop_last=True, seed=1)
    batches = list(loader)
    assert len(loader) == len(batches) == expected
    assert all(len(xb) == batch_size for xb, _ in batches)


def test_single_array_still_yields_tuples():
    (batch,) = next(iter(DataLoader(np.arange(4), batch_size=4)))
    np.testing.assert_array_equal(batch, np.arange(4))


def test_same_seed_gives_the_same_epochs_and_epochs_differ():
    x, y = _data()
    first = [[yb.tolist() for _, yb in DataLoader(x, y, batch_size=4, shuffle=True, seed=7)]]
    loader_a = DataLoader(x, y, batch_size=4, shuffle=True, seed=7)
    loader_b = DataLoader(x, y, batch_size=4, shuffle=True, seed=7)
    epochs_a = [[yb.tolist() for _, yb in loader_a] for _ in range(3)]
    epochs_b = [[yb.tolist() for _, yb in loader_b] for _ in range(3)]
    assert epochs_a == epochs_b
    assert epochs_a[0] == first[0]
    assert epochs_a[0] != epochs_a[1]  # a new permutation each epoch
    assert epochs_a[0] != [yb.tolist() for _, yb in DataLoader(x, y, batch_size=4)]


def test_manual_seed_makes_the_default_generator_deterministic():
    x, y = _data()

    def epoch():
        return [yb.tolist() for _, yb in DataLoader(x, y, batch_size=4, shuffle=True)]

    mininn._rng.manual_seed(3)
    first = epoch()
    mininn._rng.manual_seed(3)
    assert epoch() == first


def test_default_generator_does_not_consume_the_package_stream():
    mininn._rng.manual_seed(5)
    expected = mininn._rng.default_rng().random()
    mininn._rng.manual_seed(5)
    DataLoader(np.arange(4), shuffle=True)
    assert mininn._rng.default_rng().random() == expected


def test_an_explicit_generator_is_used():
    x, y = _data()
    loader = DataLoader(x, y, batch_size=N, shuffle=True, seed=np.random.default_rng(11))
    expected = np.random.default_rng(11).permutation(N)
    np.testing.assert_array_equal(next(iter(loader))[1], y[expected])


def test_iter_indices_give_the_batches():
    x, y = _data()
    a = DataLoader(x, y, batch_size=6, shuffle=True, seed=2)
    b = DataLoader(x, y, batch_size=6, shuffle=True, seed=2)
    for indices, (xb, yb) in zip(a.iter_indices(), b, strict=True):
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(xb, x[indices])
        np.testing.assert_array_equal(yb, y[indices])


def test_batches_are_fresh_arrays_and_inputs_untouched():
    x, y = _data()
    x_before = x.copy()
    batches = list(DataLoader(x, y, batch_size=5))
    first = batches[0][0].copy()
    batches[1][0][...] = -1  # writing into one batch changes neither the data nor others
    np.testing.assert_array_equal(batches[0][0], first)
    np.testing.assert_array_equal(x, x_before)
    assert not np.shares_memory(batches[0][0], x)
    assert batches[0][0].dtype == np.float32


def test_empty_dataset_has_no_batches():
    loader = DataLoader(np.zeros((0, 3)), batch_size=4)
    assert len(loader) == 0 and list(loader) == []


@pytest.mark.parametrize(
    ("arrays", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, "at least one array"),
        (
            (np.zeros((4, 2)), np.zeros(5)),
            {},
            ValueError,
            r"first dimension.*\(4, 2\), \(5,\)",
        ),
        ((np.float64(3.0),), {}, ValueError, r"shape \(N, \.\.\.\), got shapes \[\(\)\]"),
        ((np.zeros(4),), {"batch_size": 0}, ValueError, "batch_size should be a positive .* 0"),
        ((np.zeros(4),), {"batch_size": -2}, ValueError, "got -2"),
        ((np.zeros(4),), {"batch_size": 2.0}, TypeError, "batch_size must be an int, got 2.0"),
        ((np.zeros(4),), {"batch_size": True}, TypeError, "batch_size must be an int"),
        ((np.zeros(4),), {"seed": "x"}, TypeError, "seed must be None, an int"),
        ((np.zeros(4),), {"transform": 3}, TypeError, "transform must be a callable.*got int"),
    ],
    ids=[
        "no-arrays",
        "lengths",
        "scalar",
        "zero-batch",
        "negative-batch",
        "float-batch",
        "bool-batch",
        "bad-seed",
        "bad-transform",
    ],
)
def test_errors(arrays, kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(*arrays, **kwargs)


# -- transform and state_dict -----------------------------------------------------------


def _images(n=40):
    x = np.random.default_rng(0).normal(size=(n, 36)).astype(np.float32)
    return x, np.arange(n)


def _augment(seed=1):
    return Compose([
        RandomCrop(6, padding=2, image_shape=(6, 6), seed=seed),
        RandomHorizontalFlip(image_shape=(6, 6), seed=seed + 1),
    ])  # fmt: skip


def test_transform_applies_to_the_inputs_of_each_batch_only():
    x, y = _images()
    loader = DataLoader(x, y, batch_size=8, shuffle=True, seed=3, transform=_augment())
    plain = DataLoader(x, y, batch_size=8, shuffle=True, seed=3)
    reference = _augment()  # the same seeds, applied by hand to the same batches
    for (xb, yb), (x_plain, y_plain) in zip(loader, plain, strict=True):
        np.testing.assert_array_equal(yb, y_plain)  # labels untouched, same order
        np.testing.assert_array_equal(xb, reference(x_plain))
        assert xb.dtype == np.float32 and xb.shape == x_plain.shape


def test_the_same_seeds_give_the_same_augmented_batches():
    x, y = _images()

    def epochs(loader):
        return [np.concatenate([xb for xb, _ in loader]) for _ in range(2)]

    a = epochs(DataLoader(x, y, batch_size=8, shuffle=True, seed=3, transform=_augment()))
    b = epochs(DataLoader(x, y, batch_size=8, shuffle=True, seed=3, transform=_augment()))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("with_transform", [False, True], ids=["plain", "augmented"])
def test_state_dict_resumes_the_same_epochs(with_transform):
    x, y = _images()

    def make(seed):
        transform = _augment(seed) if with_transform else None
        return DataLoader(x, y, batch_size=8, shuffle=True, seed=seed, transform=transform)

    loader = make(3)
    list(loader)  # epoch 1
    state = loader.state_dict()
    expected = [[b.copy() for b in batch] for _ in range(2) for batch in loader]
    resumed = make(99)  # other seeds: everything random comes from the state
    resumed.load_state_dict(state)
    actual = [batch for _ in range(2) for batch in resumed]
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert (state["transform"] is None) != with_transform


def test_load_state_dict_errors():
    x, y = _images()
    loader = DataLoader(x, y, batch_size=8, shuffle=True, seed=0)
    augmented = DataLoader(x, y, batch_size=8, shuffle=True, seed=0, transform=_augment())
    with pytest.raises(ValueError, match=r"expected \{'generator': \.\.\., 'transform'"):
        loader.load_state_dict({"generator": loader.state_dict()["generator"]})
    with pytest.raises(ValueError, match="saved state has no transform state, this loader's"):
        augmented.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match=r"saved state has a transform state.*has none"):
        loader.load_state_dict(augmented.state_dict())


def test_a_transform_that_changes_the_batch_size_is_refused():
    x, y = _images()
    loader = DataLoader(x, y, batch_size=8, transform=lambda batch: batch[:-1])
    with pytest.raises(ValueError, match=r"transform returned shape \(7, 36\) for a batch of 8"):
        next(iter(loader))
