"""Tests of the scripts in examples/: each main() on its real (bundled) data or tiny IDX files.

The breast cancer and diabetes examples train in about a second, so they are
also run with their default arguments to check the bars the README states.
MNIST is replaced by tiny IDX files (tests/_idx.py) and a patched registry,
so no test reads the real dataset.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from _idx import tiny_dataset_info, write_tiny_dataset

import mininn.data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py (examples/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def number_after(label: str, text: str) -> float:
    """The number printed after ``label`` in ``text``."""
    match = re.search(re.escape(label) + r"\s*(-?\d+(?:\.\d+)?)", text)
    assert match, f"{label!r} not found in the output:\n{text}"
    return float(match.group(1))


def assert_png(path: Path) -> None:
    assert path.is_file(), f"figure {path} was not written"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5000  # a drawn figure, not an empty canvas


@pytest.fixture
def sklearn_and_matplotlib():
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")


# ----------------------------------------------------------------------- binary


def test_binary_load_data_standardises_with_training_statistics_only(sklearn_and_matplotlib):
    from sklearn.datasets import load_breast_cancer

    x_train, y_train, x_test, y_test = load_example("binary_classification").load_data(seed=0)
    assert x_train.dtype == x_test.dtype == y_train.dtype == np.float32
    assert x_train.shape[1] == x_test.shape[1] == 30
    assert y_train.shape == (len(x_train), 1) and y_test.shape == (len(x_test), 1)
    assert len(x_train) + len(x_test) == len(load_breast_cancer().target)
    assert set(np.unique(y_train)) == set(np.unique(y_test)) == {0.0, 1.0}
    # Training split: zero mean and unit variance up to the one rounding to float32
    # (<= eps32 / 2 * |x| per value, so <= that for a mean or, shifting each value at
    # most that much, a std); taken in float64. Held-out split: only roughly.
    bound = np.finfo(np.float32).eps * np.abs(x_train).max()
    np.testing.assert_allclose(x_train.mean(axis=0, dtype=np.float64), 0, atol=bound)
    np.testing.assert_allclose(x_train.std(axis=0, dtype=np.float64), 1, rtol=0, atol=bound)
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3


def test_binary_few_epochs_prints_accuracy_and_saves_figure(
    sklearn_and_matplotlib, tmp_path, capsys
):
    example = load_example("binary_classification")
    assert example.main(["--epochs", "3", "--seed", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "epoch   3  train loss" in out
    assert 0.8 < number_after("held-out accuracy:", out) <= 1.0
    assert_png(tmp_path / "binary_classification.png")


def test_binary_default_arguments_reach_the_bar(sklearn_and_matplotlib, tmp_path, capsys):
    assert load_example("binary_classification").main(["--out", str(tmp_path)]) == 0
    assert number_after("held-out accuracy:", capsys.readouterr().out) >= 0.95


# ------------------------------------------------------------------- regression


def test_regression_few_epochs_prints_metrics_and_saves_figure(
    sklearn_and_matplotlib, tmp_path, capsys
):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    example = load_example("regression")
    assert example.main(["--epochs", "5", "--seed", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # The linear baseline is scored on the same split as scikit-learn makes it here.
    x_train, x_test, y_train, y_test = train_test_split(
        *load_diabetes(return_X_y=True), test_size=0.25, random_state=2
    )
    expected = LinearRegression().fit(x_train, y_train).score(x_test, y_test)
    assert number_after("LinearRegression R2:", out) == pytest.approx(expected, abs=5e-5)
    mse, mae = number_after("held-out MSE:", out), number_after("L1 (MAE):", out)
    assert 0 < mae <= mse**0.5  # mean |e| <= sqrt(mean e²)
    assert number_after("held-out R2:", out) < 1.0
    assert_png(tmp_path / "regression.png")


def test_regression_default_arguments_reach_the_linear_model(
    sklearn_and_matplotlib, tmp_path, capsys
):
    assert load_example("regression").main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert number_after("held-out R2:", out) >= number_after("LinearRegression R2:", out) - 0.05


# ------------------------------------------------------------------------ MNIST


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Tiny MNIST IDX files in a MININN_DATA_DIR folder, pinned in a patched registry."""
    source = tmp_path / "source"
    digests = write_tiny_dataset(source, "mnist", n_train=120, n_test=40)
    monkeypatch.setattr(mininn.data, "DATASETS", {"mnist": tiny_dataset_info("mnist", digests)})
    monkeypatch.setenv(mininn.data.DATA_DIR_ENV, str(source))
    return source


def test_multiclass_fetches_trains_and_saves_figure(tiny_mnist, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    example = load_example("multiclass_classification")
    out_dir = tmp_path / "out"
    argv = ["--epochs", "2", "--val-size", "20", "--batch-size", "32", "--out", str(out_dir)]
    assert example.main(argv) == 0
    out = capsys.readouterr().out
    assert "MNIST: 100 training, 20 validation, 40 test images" in out
    assert re.search(r"epoch  2  train loss \d\.\d{4}  val loss", out)
    assert 0.0 <= number_after("test accuracy:", out) <= 1.0
    assert_png(out_dir / "multiclass_classification.png")
    cache = out_dir / "data" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(mininn.data.DATASETS["mnist"].files)

    # A second run reads the cache: it works with the source gone.
    monkeypatch.setenv(mininn.data.DATA_DIR_ENV, str(tmp_path / "gone"))
    assert example.main(argv) == 0
    assert "MNIST: 100 training" in capsys.readouterr().out


def test_multiclass_without_a_source_names_the_variable_and_exits_1(
    tiny_mnist, tmp_path, capsys, monkeypatch
):
    example = load_example("multiclass_classification")
    monkeypatch.setenv(mininn.data.DATA_DIR_ENV, str(tmp_path / "empty"))
    out_dir = tmp_path / "out"
    assert example.main(["--epochs", "1", "--out", str(out_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "MNIST is not available" in captured.err
    assert f"Set {mininn.data.DATA_DIR_ENV} to a folder" in captured.err
    assert str(tmp_path / "empty") in captured.err  # fetch's list of places tried
    assert not out_dir.exists()  # no figure, no half-written cache


def test_multiclass_rejects_a_validation_split_as_large_as_the_data(tiny_mnist, tmp_path, capsys):
    example = load_example("multiclass_classification")
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--val-size", "120", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--val-size must be below the 120 training images" in capsys.readouterr().err


# ------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "name", ["binary_classification", "multiclass_classification", "regression"]
)
@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
def test_non_positive_counts_are_rejected_before_any_work(name, option, tmp_path, capsys):
    example = load_example(name)
    with pytest.raises(SystemExit) as exit_info:
        example.main([option, "0", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert re.search(
        rf"argument {option}: expected a positive integer, got 0", capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name", ["binary_classification", "multiclass_classification", "regression"]
)
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "-1", r"argument --lr: expected a finite number > 0, got -1"),
        ("--lr", "0", r"argument --lr: expected a finite number > 0, got 0"),
        ("--lr", "nan", r"argument --lr: expected a finite number > 0, got nan"),
        ("--seed", "-1", r"argument --seed: expected an integer in \[0, 2\*\*32 - 1\], got -1"),
        ("--seed", str(2**32), r"argument --seed: expected an integer in \[0, 2\*\*32 - 1\]"),
    ],
    ids=["lr-negative", "lr-zero", "lr-nan", "seed-negative", "seed-too-large"],
)
def test_bad_values_are_one_argparse_line_before_any_work(
    name, option, value, message, tmp_path, capsys
):
    example = load_example(name)
    with pytest.raises(SystemExit) as exit_info:
        example.main([option, value, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_regression_rejects_a_negative_weight_decay(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_example("regression").main(["--weight-decay", "-0.1", "--out", str(tmp_path)])
    assert "argument --weight-decay: expected a finite number >= 0, got -0.1" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("name", "defaults"),
    [
        ("binary_classification", {"--epochs": "30", "--seed": "0", "--lr": "0.01",
                                   "--batch-size": "32"}),
        ("multiclass_classification", {"--epochs": "5", "--seed": "0", "--lr": "0.003",
                                       "--batch-size": "512", "--val-size": "5000"}),
        ("regression", {"--epochs": "60", "--seed": "0", "--lr": "0.001", "--batch-size": "16",
                        "--weight-decay": "0.1"}),
    ],
)  # fmt: skip
def test_help_shows_every_default(name, defaults, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in defaults.items():
        assert re.search(rf"{option} \S+ [^()]*\(default: {re.escape(default)}\)", text), option
    assert "--out OUT folder for the figure (default:" in text
