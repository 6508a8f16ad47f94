"""The fetch and prepare stages and pipeline/common.py, on tiny IDX data in tmp_path.

Nothing here reads the real params.yaml or the datasets mirror: each test writes
its own params file and tiny dataset, and points MININN_DATA_DIR at it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _idx import write_tiny_dataset

from mininn import data
from pipeline import common, fetch, prepare
from pipeline.common import StageError

N_TRAIN, N_TEST = 200, 50


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """A tiny fashion-mnist fetched into tmp_path/raw, with its digests pinned."""
    digests = write_tiny_dataset(tmp_path / "mirror", "fashion-mnist", N_TRAIN, N_TEST)
    info = data.DATASETS["fashion-mnist"]
    tiny = data.DatasetInfo(info.name, digests, info.classes)
    _registry(monkeypatch)[info.name] = tiny
    monkeypatch.setenv("MININN_DATA_DIR", str(tmp_path / "mirror"))
    return tmp_path / "raw"


def _registry(monkeypatch):
    """Swap the read-only registry for a mutable copy (restored after the test)."""
    registry = dict(data.DATASETS)
    monkeypatch.setattr(data, "DATASETS", registry)
    monkeypatch.setattr(fetch, "DATASETS", registry)
    monkeypatch.setattr(prepare, "DATASETS", registry)
    return registry


def write_params(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def params(tmp_path):
    return write_params(tmp_path / "params.yaml", "prepare:\n  val_size: 50\n  seed: 7\n")


def run_prepare(tmp_path, params_file, name="out"):
    return prepare.main(
        [
            "--dataset",
            "fashion-mnist",
            "--raw",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / name / "prepared"),
            "--report",
            str(tmp_path / name / "report"),
            "--params",
            str(params_file),
        ]
    )


# ------------------------------------------------------------------ fetch stage


def test_fetch_stage(raw):
    assert fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"]) == 0
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.DATASETS["fashion-mnist"].files)


def test_fetch_stage_failure_is_a_clean_message(raw, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "default_sources", lambda info: [tmp_path / "empty"])
    argv = ["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"]
    with pytest.raises(StageError, match=r"(?s)could not obtain 4 of 4 files.*empty: missing"):
        fetch.main(argv)
    assert common.run_stage(fetch.main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: fetch: could not obtain") and "Traceback" not in err
    assert not raw.exists()


# ------------------------------------------------------------------ prepare stage


def test_prepare_stage_outputs(raw, tmp_path, params):
    fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"])
    assert run_prepare(tmp_path, params) == 0
    prepared, report = tmp_path / "out" / "prepared", tmp_path / "out" / "report"
    assert sorted(p.name for p in prepared.iterdir()) == [
        "stats.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ]
    assert sorted(p.name for p in report.iterdir()) == ["data.json", "samples.png"]
    assert (report / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    x_train, y_train = common.read_prepared(prepared, "train")
    x_val, y_val = common.read_prepared(prepared, "val", dtype=np.float64)
    x_test, y_test = common.read_prepared(prepared, "test")
    assert x_train.shape == (N_TRAIN - 50, 784) and x_train.dtype == np.float32
    assert x_val.shape == (50, 784) and x_val.dtype == np.float64
    assert x_test.shape == (N_TEST, 784) and y_test.dtype == np.int64

    # the test split is the test file, untouched and in order
    images, labels = data.load_split(raw, "test", "fashion-mnist")
    np.testing.assert_array_equal(common.read_split(prepared, "test")[0], images.reshape(-1, 784))
    np.testing.assert_array_equal(y_test, labels)

    # normalisation statistics come from the training split only
    train_pixels, _ = common.read_split(prepared, "train")
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["mean"] == pytest.approx(train_pixels.mean() / 255, rel=1e-12)
    assert stats["std"] == pytest.approx(train_pixels.std() / 255, rel=1e-12)
    all_pixels = images.mean() / 255  # would differ had test or val been used
    assert stats["mean"] != pytest.approx(all_pixels, rel=1e-6)
    np.testing.assert_allclose(x_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(), 1.0, atol=1e-5)

    summary = json.loads((report / "data.json").read_text())
    assert summary["n_samples"] == {"train": N_TRAIN - 50, "val": 50, "test": N_TEST}
    classes = data.DATASETS["fashion-mnist"].classes
    for split, y in (("train", y_train), ("val", y_val), ("test", y_test)):
        counts = summary["class_counts"][split]
        assert list(counts) == sorted(classes)  # sort_keys
        assert [counts[c] for c in classes] == np.bincount(y, minlength=10).tolist()
    assert summary["normalization"] == pytest.approx(stats)


def test_prepare_split_is_stratified_and_reproducible(raw, tmp_path, params):
    fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"])
    run_prepare(tmp_path, params, "a")
    run_prepare(tmp_path, params, "b")
    other = write_params(tmp_path / "other.yaml", "prepare:\n  val_size: 0.25\n  seed: 8\n")
    run_prepare(tmp_path, other, "c")
    _, y_all = data.load_split(raw, "train", "fashion-mnist")
    y_a = common.read_split(tmp_path / "a" / "prepared", "val")[1]
    y_b = common.read_split(tmp_path / "b" / "prepared", "val")[1]
    np.testing.assert_array_equal(y_a, y_b)
    for name in ("train.parquet", "val.parquet"):  # same seed: identical files
        assert (tmp_path / "a" / "prepared" / name).read_bytes() == (
            tmp_path / "b" / "prepared" / name
        ).read_bytes()
    expected = np.bincount(y_all, minlength=10) * len(y_a) / len(y_all)
    assert np.all(np.abs(np.bincount(y_a, minlength=10) - expected) <= 1)
    x_c, y_c = common.read_split(tmp_path / "c" / "prepared", "val")
    assert len(y_c) == 50  # ceil(0.25 * 200)
    x_a = common.read_split(tmp_path / "a" / "prepared", "val")[0]
    assert not np.array_equal(x_a, x_c)  # another seed, another split
    # train and val partition the training file
    x_tr = common.read_split(tmp_path / "a" / "prepared", "train")[0]
    assert len(x_tr) + len(x_a) == N_TRAIN
    assert not {r.tobytes() for r in x_tr} & {r.tobytes() for r in x_a}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prepare:\n  val_size: 0\n  seed: 1\n", r"prepare\.val_size: expected a fraction"),
        ("prepare:\n  val_size: 1.5\n  seed: 1\n", r"expected a fraction in \(0, 1\).*got 1\.5"),
        ("prepare:\n  val_size: 5\n  seed: 1\n", "gives 5 validation images.*between 10 and 190"),
        ("prepare:\n  val_size: 195\n  seed: 1\n", "gives 195 validation images"),
        ("prepare:\n  val_size: 2e-1\n  seed: 1\n", r"the string '2e-1'.*write 0\.001"),
        ("prepare:\n  val_size: true\n  seed: 1\n", "expected a fraction.*got True"),
        ("prepare:\n  val_size: 50\n  seed: -1\n", r"prepare\.seed: expected a value in \[0, "),
        ("prepare:\n  val_size: 50\n  seed: 1.0\n", r"prepare\.seed: expected an integer"),
        ("prepare:\n  val_size: 50\n", r"missing key\(s\) prepare\.seed"),
        ("train:\n  lr: 0.1\n", r"missing section 'prepare:'.*\['train'\]"),
        ("prepare: [1, 2\n", "is not valid YAML"),
    ],
    ids=[
        "zero",
        "fraction>1",
        "too-few",
        "too-many",
        "yaml-string",
        "bool",
        "neg-seed",
        "float-seed",
        "missing-key",
        "missing-section",
        "bad-yaml",
    ],
)
def test_prepare_bad_params_stop_with_no_outputs(raw, tmp_path, text, message):
    fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"])
    bad = write_params(tmp_path / "bad.yaml", text)
    with pytest.raises(StageError, match=message):
        run_prepare(tmp_path, bad)
    assert not (tmp_path / "out").exists()


def test_prepare_missing_raw_data(tmp_path, params):
    with pytest.raises(StageError, match=r"train-images-idx3-ubyte.*run `dvc repro fetch@"):
        run_prepare(tmp_path, params)
    assert not (tmp_path / "out").exists()


def test_prepare_missing_params_file(tmp_path):
    with pytest.raises(StageError, match=r"params file .*nope\.yaml not found"):
        run_prepare(tmp_path, tmp_path / "nope.yaml")


# ------------------------------------------------------------------ common helpers


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({}, "0.1", "expected a number, got the string '0.1'"),
        ({}, None, r"expected a number, got None \(NoneType\)"),
        ({}, float("nan"), "expected a finite number"),
        ({"minimum": 0.0, "min_inclusive": False}, 0.0, r"expected a value in \(0\.0, inf\]"),
        ({"maximum": 1.0}, 2, r"expected a value in \[-inf, 1\.0\], got 2"),
    ],
)
def test_check_number(kwargs, value, message):
    with pytest.raises(StageError, match=f"train.lr: {message}"):
        common.check_number(value, "train.lr", **kwargs)


def test_check_helpers_accept_good_values():
    assert common.check_number(1, "k", minimum=0) == 1.0
    assert common.check_int(np.int64(3), "k", maximum=3) == 3
    assert common.check_choice("adam", "train.optimizer", ["sgd", "adam"]) == "adam"
    with pytest.raises(StageError, match=r"train\.optimizer: expected one of \['sgd'\]"):
        common.check_choice("adam", "train.optimizer", ["sgd"])
    with pytest.raises(StageError, match=r"k: expected an integer, got True \(bool\)"):
        common.check_int(True, "k")


def test_load_params_sections(tmp_path):
    path = write_params(tmp_path / "p.yaml", "datasets:\n- mnist\nprepare:\n  seed: 1\n")
    assert common.load_params("datasets", path=path) == ["mnist"]
    assert common.load_params("prepare", ["seed"], path) == {"seed": 1}
    with pytest.raises(StageError, match="expected 'datasets:' to be a mapping"):
        common.load_params("datasets", ["x"], path)


def test_write_json_is_sorted_indented_and_casts_numpy(tmp_path):
    common.write_json(tmp_path / "a" / "m.json", {"b": np.float32(0.5), "a": np.int64(2)})
    assert (tmp_path / "a" / "m.json").read_text() == '{\n  "a": 2,\n  "b": 0.5\n}\n'
    with pytest.raises(TypeError, match="cannot encode"):
        common.write_json(tmp_path / "a" / "m.json", {"x": object()})
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"a": 2, "b": 0.5}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["m.json"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), common.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with common.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_read_prepared_errors(tmp_path):
    with pytest.raises(StageError, match="split: expected one of"):
        common.read_prepared(tmp_path, "validation")
    with pytest.raises(StageError, match=r"train\.parquet not found; run `dvc repro prepare`"):
        common.read_prepared(tmp_path, "train")
    common.write_split(tmp_path / "train.parquet", np.zeros((2, 784), np.uint8), [0, 1])
    with pytest.raises(StageError, match=r"stats\.json not found"):
        common.read_prepared(tmp_path, "train")
    with pytest.raises(ValueError, match=r"expected uint8 pixels \(N, 784\)"):
        common.write_split(tmp_path / "x.parquet", np.zeros((2, 10), np.uint8), [0, 1])


def test_pixel_stats_exact():
    pixels = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    stats = common.pixel_stats(pixels)
    assert stats["mean"] == pytest.approx((pixels / 255).mean(), rel=1e-14)
    assert stats["std"] == pytest.approx((pixels / 255).std(), rel=1e-14)
