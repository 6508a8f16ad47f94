"""Tests of mininn.serialization: round trips, exact paths, atomic writes, no pickle."""

import json
import math
import os
import pickle
import zipfile
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
            ("num_batches_tracked", np.array(7)),
        ]
    )


def test_flat_round_trip_keeps_values_dtypes_and_key_order(tmp_path):
    path = tmp_path / "model.npz"
    state = _state()
    save(state, path)
    loaded = load(path)
    assert isinstance(loaded, OrderedDict)
    assert list(loaded) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype
    assert loaded["num_batches_tracked"].shape == ()


def test_a_flat_state_dict_is_stored_as_before_one_member_per_key(tmp_path):
    path = tmp_path / "model.npz"
    save(_state(), path)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == list(_state())  # no structure entry
        np.testing.assert_array_equal(archive["file"], np.arange(4))


def test_old_files_with_numbers_load_as_before(tmp_path):
    # np.savez is how the earliest files (and other tools' files) were written.
    path = tmp_path / "old.npz"
    np.savez(path, weight=np.ones((2, 2), dtype=np.float32), step=np.asarray(3))
    loaded = load(path)
    assert isinstance(loaded, OrderedDict) and list(loaded) == ["weight", "step"]
    assert loaded["step"].shape == () and loaded["step"] == 3


def _checkpoint():
    rng = np.random.default_rng(1)
    model = OrderedDict(
        [("0.weight", rng.standard_normal((3, 2)).astype(np.float32)), ("0.bias", np.zeros(3))]
    )
    return {
        "model": model,
        "optimizer": {
            "state": {0: {"step": np.float32(4.0), "exp_avg": rng.standard_normal((3, 2))},
                      1: {"step": np.float32(4.0), "exp_avg": np.zeros(3)}},
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8,
                              "amsgrad": False, "foreach": None, "params": [0, 1]}],
        },
        "scheduler": {"last_epoch": 3, "_last_lr": [0.1], "anneal": "cos", "factor": 0.1},
        "epoch": 3,
        "flags": [True, False, 1, 0, 1.0, 0.0],  # bool, int and float stay distinct
        "floats": [0.1, -0.0, 1e-300, 2.5e300, math.inf, -math.inf],
        "big": 2**100,
        "text": "naïve ✓",
        "none": None,
        "empty": {"dict": {}, "list": [], "tuple": (), "array": np.zeros((0, 3))},
        "numpy scalars": [np.float64(0.1), np.float32(0.1), np.int64(-5), np.uint8(7),
                          np.bool_(True)],
        "arrays": [np.arange(5, dtype=np.int32), np.array(2.5), np.array([True]),
                   np.array(["a", "bc"]), np.ones((2, 3, 4), dtype=np.float64)],
        7: "an int key at the top",
        "nested": [[{"a": [(1, 2.0), None]}]],
    }  # fmt: skip


def _assert_identical(actual, expected, where="root"):
    """Equal values of exactly the same types (bool is not int, tuple is not list), dict
    keys of the same types in the same order, arrays of the same dtype and shape."""
    assert type(actual) is type(expected) or (
        isinstance(expected, dict) and isinstance(actual, dict)
    ), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert [(type(k), k) for k in actual] == [(type(k), k) for k in expected], where
        for key in expected:
            _assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_identical(a, e, f"{where}[{i}]")
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype and np.shape(actual) == np.shape(expected), where
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, float):
        assert repr(actual) == repr(expected), where  # -0.0 and every bit of the float
    else:
        assert actual == expected, where


def test_nested_checkpoint_round_trips_every_type(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoint = _checkpoint()
    save(checkpoint, path)
    _assert_identical(load(path), checkpoint)


@pytest.mark.parametrize(
    "obj",
    [[np.ones(2), {"a": 1}], ("x", 1), {}, [], 3, 2.5, None, "text", True, {"w": 3, "v": 0.1},
     {"w": np.ones(2), "step": 3}, {0: np.ones(2)}],
    ids=["list", "tuple", "empty-dict", "empty-list", "int", "float", "none", "str", "bool",
         "flat-numbers", "arrays-and-a-number", "int-key-flat"],
)  # fmt: skip
def test_any_supported_tree_round_trips(tmp_path, obj):
    save(obj, tmp_path / "c.npz")
    _assert_identical(load(tmp_path / "c.npz"), obj)


def test_nan_round_trips(tmp_path):
    save({"loss": math.nan, "losses": [1.0, math.nan]}, tmp_path / "c.npz")
    loaded = load(tmp_path / "c.npz")
    assert math.isnan(loaded["loss"]) and math.isnan(loaded["losses"][1])


def test_nested_archive_is_an_npz_with_readable_member_names(tmp_path):
    path = tmp_path / "checkpoint.npz"
    save(_checkpoint(), path)
    with np.load(path, allow_pickle=False) as archive:
        assert "model/0.weight" in archive.files
        assert "optimizer/state/0/exp_avg" in archive.files
        assert archive.files[-1] == "__mininn_structure__"
        np.testing.assert_array_equal(archive["model/0.bias"], np.zeros(3))


def test_member_names_that_would_collide_are_kept_apart(tmp_path):
    obj = {"a/b": np.zeros(1), "a": {"b": np.ones(1)}, "__mininn_structure__": np.full(1, 2.0)}
    save(obj, tmp_path / "c.npz")
    _assert_identical(load(tmp_path / "c.npz"), obj)


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
        ({"w": np.array([{}, 1], dtype=object)}, TypeError,
         r"value at \['w'\] is an object array.*np.asarray"),
        ({"opt": {"state": {0: {"buf": np.array([None], dtype=object)}}}}, TypeError,
         r"value at \['opt'\]\['state'\]\[0\]\['buf'\] is an object array"),
        ({"w": {1, 2}}, TypeError, r"value at \['w'\] is a set; only arrays"),
        ({"w": [b"bytes"]}, TypeError, r"value at \['w'\]\[0\] is a bytes"),
        ({"sub": {True: 1}}, TypeError, r"dict keys must be str or int, got True \(bool\) at "
         r"\['sub'\]"),
        ({1.5: 1}, TypeError, r"keys must be str or int, got 1.5 \(float\) at the top level"),
        ({(1, 2): 1}, TypeError, r"got \(1, 2\) \(tuple\)"),
    ],
    ids=["object-array", "nested-object-array", "set", "bytes", "bool-key", "float-key",
         "tuple-key"],
)  # fmt: skip
def test_save_rejects_what_needs_pickle(tmp_path, state, error, match):
    with pytest.raises(error, match=match):
        save(state, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_save_refuses_a_container_that_contains_itself(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match=r"value at \['a'\]\[0\] contains itself"):
        save(loop, tmp_path / "m.npz")


def test_save_of_a_module_hints_state_dict(tmp_path):
    from mininn.module import Module

    with pytest.raises(TypeError, match=r"got Module \(pass model.state_dict\(\)\)"):
        save(Module(), tmp_path / "m.npz")
    with pytest.raises(TypeError, match=r"\['model'\] is a Module \(pass model.state_dict"):
        save({"model": Module()}, tmp_path / "m.npz")


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


def _write_structure(path, tree_bytes, **arrays):
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in {**arrays, "__mininn_structure__": tree_bytes}.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def _tree(root, version=1):
    text = json.dumps({"format": "mininn.checkpoint", "version": version, "root": root})
    return np.frombuffer(text.encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    ("tree", "arrays", "match"),
    [
        (np.frombuffer(b"{not json", dtype=np.uint8), {}, r"malformed __mininn_structure__.*"
         "not JSON"),
        (np.array("text"), {}, "expected UTF-8 bytes"),
        (_tree({"array": "w"}), {}, "no member 'w'"),
        (_tree({"pickle": "x"}), {}, "unknown node kind 'pickle'"),
        (_tree({"dict": [["a"]]}), {}, r"not a \[key, value\] pair"),
        (np.frombuffer(b'{"root": 1}', dtype=np.uint8), {}, "no mininn.checkpoint header"),
        (_tree(1, version=99), {}, "version 99; this mininn reads version 1: upgrade"),
    ],
    ids=["not-json", "not-bytes", "missing-member", "unknown-kind", "bad-pair", "no-header",
         "future-version"],
)  # fmt: skip
def test_load_refuses_a_malformed_structure(tmp_path, tree, arrays, match):
    path = tmp_path / "c.npz"
    _write_structure(path, tree, **arrays)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_load_refuses_a_pickled_array_inside_a_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    save({"model": {"w": np.ones(2)}, "epoch": 1}, path)
    with zipfile.ZipFile(path, "a") as archive:  # a pickled member beside the good ones
        with archive.open("evil.npy", "w") as member:
            np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"array 'evil' in .*c\.npz.* pickled Python objects"):
        load(path)
