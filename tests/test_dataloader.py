"""Tests of mininn.dataloader.DataLoader: coverage, order, determinism, errors."""

import numpy as np
import pytest

import mininn._rng
from mininn.dataloader import DataLoader

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
    ],
)
def test_errors(arrays, kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(*arrays, **kwargs)
