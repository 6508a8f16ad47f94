"""Tests of mininn.serialization: round trips, exact paths, atomic writes, no pickle."""

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from mininn import serialization
from mininn.serialization import load, save


def _state():
    rng = np.random.default_rng(0)
    return OrderedDict(
        [
            ("z.weight", rng.standard_normal((3, 2)).astype(np.float32)),
            ("a.bias", rng.standard_normal(3)),
            ("file", np.arange(4)),  # np.savez(file, **kw) would reject this key
            ("allow_pickle", np.array([True, False])),
            ("num_batches_tracked", 7),
            ("momentum", 0.1),
        ]
    )


def test_round_trip_keeps_values_dtypes_and_key_order(tmp_path):
    path = tmp_path / "model.npz"
    state = _state()
    save(state, path)
    loaded = load(path)
    assert isinstance(loaded, OrderedDict)
    assert list(loaded) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == np.asarray(value).dtype
    assert loaded["num_batches_tracked"].shape == ()


def test_numpy_reads_the_file_as_an_npz(tmp_path):
    path = tmp_path / "model.npz"
    save(_state(), path)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == list(_state())
        np.testing.assert_array_equal(archive["file"], np.arange(4))


def test_writes_to_the_exact_path_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "weights"  # no .npz suffix: np.savez would write weights.npz
    save({"w": np.ones(2)}, str(path))
    assert os.listdir(tmp_path) == ["weights"]
    np.testing.assert_array_equal(load(path)["w"], np.ones(2))


def test_overwrites_an_existing_file(tmp_path):
    path = tmp_path / "m.npz"
    save({"w": np.ones(2)}, path)
    save({"v": np.zeros(3)}, path)
    assert list(load(path)) == ["v"]


def test_failure_while_writing_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save({"w": np.ones(2)}, path)
    calls = []

    def failing_write_array(member, array, allow_pickle):
        calls.append(array)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(member, array, allow_pickle=allow_pickle)

    original = np.lib.format.write_array
    monkeypatch.setattr(serialization.np.lib.format, "write_array", failing_write_array)
    with pytest.raises(OSError, match="disk full"):
        save({"a": np.zeros(2), "b": np.zeros(2)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"]
    np.testing.assert_array_equal(load(path)["w"], np.ones(2))


def test_module_state_dict_round_trip(tmp_path):
    from mininn.activations import ReLU
    from mininn.layers import BatchNorm1d, Linear
    from mininn.module import Sequential

    model = Sequential(Linear(4, 3), BatchNorm1d(3), ReLU(), Linear(3, 2))
    model(np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32))  # BN stats
    save(model.state_dict(), tmp_path / "model.npz")
    other = Sequential(Linear(4, 3), BatchNorm1d(3), ReLU(), Linear(3, 2))
    missing, unexpected = other.load_state_dict(load(tmp_path / "model.npz"))
    assert missing == [] and unexpected == []
    expected = model.state_dict()
    loaded = other.state_dict()
    assert list(loaded) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(loaded[key], expected[key])
        assert loaded[key].dtype == expected[key].dtype


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        ({"w": [1.0, 2.0]}, TypeError, "key 'w' is a list.*np.asarray"),
        ({"w": np.array([{}, 1], dtype=object)}, TypeError, "key 'w' is an object array"),
        ({"w": "text"}, TypeError, "key 'w' is a str"),
        ({3: np.ones(2)}, TypeError, "keys must be str, got 3"),
        ([("w", np.ones(2))], TypeError, "expected a mapping.*got list"),
    ],
    ids=["list-value", "object-array", "str-value", "int-key", "not-a-mapping"],
)
def test_save_rejects_what_needs_pickle(tmp_path, state, error, match):
    with pytest.raises(error, match=match):
        save(state, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_save_of_a_module_hints_state_dict(tmp_path):
    from mininn.module import Module

    with pytest.raises(TypeError, match=r"got Module \(pass model.state_dict\(\)\)"):
        save(Module(), tmp_path / "m.npz")


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*missing.* does not exist"):
        save({"w": np.ones(2)}, tmp_path / "missing" / "m.npz")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file at .*nothing\.npz"):
        load(tmp_path / "nothing.npz")


def test_load_a_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": np.ones(2)}))
    with pytest.raises(ValueError, match=r"model\.pkl.* is not an \.npz archive"):
        load(path)


def test_load_an_npy_file_is_refused(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.ones(2))
    with pytest.raises(ValueError, match=r"w\.npy.* is not an \.npz archive"):
        load(path)


def test_load_a_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}, None], dtype=object))  # numpy pickles these
    with pytest.raises(ValueError, match=r"array 'w' in .*objects\.npz.* pickled Python objects"):
        load(path)


def test_load_a_truncated_archive_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    save({"w": np.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"m\.npz.* corrupt"):
        load(path)
