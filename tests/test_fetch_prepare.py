"""The fetch and prepare stages and pipeline/common.py, on tiny IDX data in tmp_path.

Nothing here reads the real params.yaml or the datasets mirror: each test writes
its own params file and tiny dataset, and points MININN_DATA_DIR at it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from _idx import write_tiny_dataset

from mininn import data
from pipeline import common, environment, fetch, prepare
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
    # float32 features pixel * scale - shift: <= 4 roundings (eps32 / 2 each) of terms
    # <= (1 + mean) / std, so their mean and std, taken in float64, are that close to 0, 1.
    bound = 2 * np.finfo(np.float32).eps * (1 + stats["mean"]) / stats["std"]
    np.testing.assert_allclose(x_train.mean(dtype=np.float64), 0.0, atol=bound)
    np.testing.assert_allclose(x_train.std(dtype=np.float64), 1.0, rtol=0, atol=bound)

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
        ("prepare:\n  val_size: '0.2'\n  seed: 1\n", r"the string '0\.2'; write it without quotes"),
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


def test_pixel_stats_agree_with_numpy():
    pixels = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    stats = common.pixel_stats(pixels)
    assert stats["mean"] == pytest.approx((pixels / 255).mean(), rel=1e-14)
    assert stats["std"] == pytest.approx((pixels / 255).std(), rel=1e-14)


def _exact_stats(pixels):
    """Mean and std of pixels/255 from sums over Python ints, as exact fractions."""
    values = [int(v) for v in np.asarray(pixels).reshape(-1)]
    n, s1, s2 = len(values), sum(values), sum(v * v for v in values)
    return Fraction(s1, 255 * n), Fraction(n * s2 - s1 * s1, (255 * n) ** 2)


def _is_rounded_sqrt(std: float, variance: Fraction) -> bool:
    """True if ``std`` is the float nearest to sqrt(variance): the squares of the
    midpoints to its neighbours bracket the variance."""
    below, above = math.nextafter(std, 0.0), math.nextafter(std, math.inf)
    low, high = (Fraction(std) + Fraction(below)) / 2, (Fraction(std) + Fraction(above)) / 2
    return low * low <= variance <= high * high


@pytest.mark.parametrize(
    "shape", [(1,), (7, 3), (50, 784), (3, 28, 28)], ids=["one", "small", "50-images", "3d"]
)
def test_pixel_stats_are_the_correctly_rounded_exact_values(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    mean, variance = _exact_stats(pixels)
    stats = common.pixel_stats(pixels)
    assert stats["mean"] == float(mean)  # Fraction -> float rounds once, correctly
    assert _is_rounded_sqrt(stats["std"], variance)


def test_pixel_stats_do_not_depend_on_order_or_chunking():
    """No float sum is involved: a permutation, or pixels straddling the bincount
    chunks, give the same bits."""
    pixels = np.random.default_rng(3).integers(0, 256, size=(1 << 16) + 123, dtype=np.uint8)
    stats = common.pixel_stats(pixels)
    assert common.pixel_stats(pixels[::-1]) == stats
    assert common.pixel_stats(np.random.default_rng(4).permutation(pixels)) == stats
    mean, variance = _exact_stats(pixels)
    assert stats["mean"] == float(mean) and _is_rounded_sqrt(stats["std"], variance)


def test_pixel_stats_extremes():
    assert common.pixel_stats(np.full(10, 255, np.uint8)) == {"mean": 1.0, "std": 0.0}
    stats = common.pixel_stats(np.array([0, 255], np.uint8))
    assert stats == {"mean": 0.5, "std": 0.5}
    with pytest.raises(ValueError, match="at least one pixel"):
        common.pixel_stats(np.zeros(0, np.uint8))


# ------------------------------------------------------------------ bad input, one line each


def test_unknown_dataset_names_params_yaml(tmp_path):
    with pytest.raises(StageError, match=r"params\.yaml: datasets: unknown dataset 'cifar10'; "
                       r"the known ones are fashion-mnist, mnist"):  # fmt: skip
        fetch.main(["--dataset", "cifar10", "--out", str(tmp_path / "raw")])
    with pytest.raises(StageError, match="unknown dataset 'cifar10'"):
        prepare.main(["--dataset", "cifar10", "--raw", "r", "--out", "o", "--report", "p"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is empty; it needs the sections datasets, prepare"),
        ("prepare:\n  val_size: 50\n  seed: 1\n  sead: 2\n",
         r"unknown key\(s\) prepare\.sead; the keys of 'prepare:' are seed, val_size"),
        ("prepare:\n", r"expected 'prepare:' to be a mapping, got None"),
    ],
    ids=["empty-file", "misspelt-key", "empty-section"],
)  # fmt: skip
def test_prepare_params_file_errors_name_the_file_and_key(raw, tmp_path, text, message):
    fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"])
    bad = write_params(tmp_path / "bad.yaml", text)
    with pytest.raises(StageError, match=message):
        run_prepare(tmp_path, bad)
    assert not (tmp_path / "out").exists()


def test_load_params_reports_every_unknown_key(tmp_path):
    text = "train:\n  lr: 0.1\n  learning_rate: 0.5\n  epoch: 3\n"
    path = write_params(tmp_path / "p.yaml", text)
    with pytest.raises(StageError, match=r"unknown key\(s\) train\.learning_rate, train\.epoch; "
                       r"the keys of 'train:' are lr \(a misspelling\?\)"):  # fmt: skip
        common.load_params("train", ["lr"], path)
    assert common.load_params("train", path=path)["epoch"] == 3  # no keys given: no check


def _write_real_split(folder, labels=(0, 1, 2)):
    pixels = np.arange(len(labels) * 784, dtype=np.int64).reshape(-1, 784) % 256
    common.write_split(folder / "train.parquet", pixels.astype(np.uint8), np.array(labels))
    common.write_json(folder / common.STATS_FILE, {"mean": 0.5, "std": 0.25})


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b"garbage" * 10, lambda b: b""],
    ids=["truncated", "garbage", "empty"],
)
def test_corrupt_parquet_is_one_line_naming_the_file_and_the_fix(tmp_path, damage):
    folder = tmp_path / "mnist"
    _write_real_split(folder)
    path = folder / "train.parquet"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StageError) as info:
        common.read_prepared(folder, "train")
    message = str(info.value)
    assert message.startswith(f"{path}: not a Parquet file of prepare's layout (")
    assert message.endswith("run `dvc repro --force prepare@mnist` to rewrite it")
    assert "\n" not in message


def test_parquet_of_another_layout_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "mnist"
    folder.mkdir()
    pq.write_table(pa.table({"label": [1, 2]}), folder / "val.parquet")
    with pytest.raises(StageError, match=r"val\.parquet: not a Parquet file of prepare's layout"):
        common.read_split(folder, "val")


def test_label_out_of_range_names_the_file_and_row(tmp_path):
    folder = tmp_path / "fashion-mnist"
    _write_real_split(folder, labels=(3, 12, 1))
    x, y = common.read_prepared(folder, "train")  # no class count given: no check
    assert y.tolist() == [3, 12, 1] and x.shape == (3, 784)
    with pytest.raises(StageError, match=(
        rf"{re.escape(str(folder / 'train.parquet'))}: row 1 has label 12, outside \[0, 9\] "
        r"for this dataset's 10 classes; run `dvc repro --force prepare@fashion-mnist`"
    )):  # fmt: skip
        common.read_prepared(folder, "train", num_classes=10)


@pytest.mark.parametrize(
    "text", ["{not json", '{"mean": 0.5}', '{"mean": 0.5, "std": 0}', "[1, 2]"],
    ids=["not-json", "no-std", "zero-std", "a-list"],
)  # fmt: skip
def test_bad_stats_file_is_a_stage_error(tmp_path, text):
    folder = tmp_path / "mnist"
    _write_real_split(folder)
    (folder / common.STATS_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(StageError, match=r"stats\.json: (not valid JSON|expected).*(prepare|run)"):
        common.read_prepared(folder, "train")


def test_write_json_refuses_nan_and_infinity_naming_the_key(tmp_path):
    for value in (float("nan"), float("inf"), np.float32("-inf")):
        with pytest.raises(ValueError, match=r"key 'a\.b\[1\]' is .*, which JSON cannot hold"):
            common.write_json(tmp_path / "m.json", {"a": {"b": [1.0, value]}})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ interrupted or killed stages


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pipeline/train.py"])

    def main(argv):
        raise KeyboardInterrupt

    assert common.run_stage(main) == 130
    assert capsys.readouterr().err == (
        "error: train: interrupted (Ctrl-C); no output was left half-written; run `dvc repro` "
        "to finish\n"
    )


def test_sigint_in_a_real_process_is_one_line_and_exit_130(tmp_path):
    """A real SIGINT in the middle of an atomic write: one line, status 130, no leftovers."""
    code = (
        "import os, signal, sys\n"
        "from pipeline import common\n"
        "def main(argv):\n"
        "    with common.atomic_file(sys.argv[1]) as tmp:\n"
        "        tmp.write_text('half')\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.exit(common.run_stage(main))\n"
    )
    target = tmp_path / "out" / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=common.PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
        # Ctrl-C's default, also when the tests run in the background (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert result.stderr.count("\n") == 1 and "interrupted (Ctrl-C)" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def _dead_pid() -> int:
    """A process id that no process has (past the kernel's pid_max)."""
    return 2**22 + 12345


def test_atomic_writers_remove_copies_left_by_a_killed_writer(tmp_path):
    dead = _dead_pid()
    (tmp_path / f".m.json.tmp-{dead}").write_text("half")
    (tmp_path / f".d.tmp-{dead}").mkdir()
    (tmp_path / f".d.tmp-{dead}" / "f").write_text("half")
    (tmp_path / f".d.old-{dead}").mkdir()
    alive = tmp_path / f".m.json.tmp-{os.getppid()}"  # another writer, still running
    alive.write_text("in flight")
    keep = [tmp_path / ".m.json.tmp-notapid", tmp_path / f".other.tmp-{dead}"]
    for path in keep:
        path.write_text("not ours")
    common.write_json(tmp_path / "m.json", {"a": 1})
    with common.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("done")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["m.json", "d", alive.name, *(p.name for p in keep)])
    assert (tmp_path / "d" / "f").read_text() == "done"


def test_fetch_stage_removes_a_killed_fetchs_folder(raw):
    stale = raw.parent / f".{raw.name}.tmp-{_dead_pid()}"
    stale.mkdir(parents=True)
    assert fetch.main(["--dataset", "fashion-mnist", "--out", str(raw), "--no-progress"]) == 0
    assert not stale.exists() and raw.is_dir()


# ------------------------------------------------------------------ the Python that runs a stage


def _project_copy(tmp_path, venv_python=None):
    """pipeline/ and mininn/ copied to tmp_path/project, with a stand-in .venv/bin/python."""
    project = tmp_path / "project"
    for name in ("pipeline", "mininn"):
        shutil.copytree(common.PROJECT_ROOT / name, project / name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    if venv_python is not None:
        python = project / ".venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(f'#!/bin/sh\nexec "{venv_python}" "$@"\n', encoding="utf-8")
        python.chmod(0o755)
    return project


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell script stands in for .venv's Python")
def test_stage_under_a_python_without_the_packages_switches_to_the_venv(tmp_path):
    # `python -S` imports no site-packages: it stands for a system Python without numpy.
    project = _project_copy(tmp_path, venv_python=sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "MININN_STAGE_PYTHON"}
    result = subprocess.run(
        [sys.executable, "-S", "pipeline/prepare.py", "--help"], cwd=project, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage: prepare.py" in result.stdout


def test_a_dvc_temp_or_queued_experiment_uses_the_projects_venv(tmp_path):
    """`dvc exp run --temp` / `--queue` copy what git tracks to .dvc/tmp/exps/<run>/:
    no .venv there, the project's is used; elsewhere a folder's own .venv only."""
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("", encoding="utf-8")
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    copy.mkdir(parents=True)
    assert environment.venv_python(copy) == python
    assert environment.venv_python(tmp_path) == python
    elsewhere = tmp_path / "other" / "tmp" / "exps" / "run"  # not inside a .dvc folder
    assert environment.venv_python(elsewhere) == elsewhere / ".venv" / "bin" / "python"


SCRIPTS = ["fetch", "prepare", "train", "evaluate", "baseline", "compare", "check_params"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_stage_under_a_python_without_the_packages_and_no_venv_is_one_line(tmp_path, script):
    """Every script checks its Python before its first third-party import."""
    project = _project_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MININN_STAGE_PYTHON"}
    result = subprocess.run(
        [sys.executable, "-S", f"pipeline/{script}.py", "--help"], cwd=project, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {script}.py: the Python running it "
                                    f"({sys.executable}) lacks numpy, yaml, pyarrow")  # fmt: skip
    assert "run `make setup` to create .venv" in result.stderr
