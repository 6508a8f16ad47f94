"""The train and evaluate stages on tiny prepared data in tmp_path.

Each test writes its own params file and a tiny prepared dataset (the layout
``prepare`` writes); nothing here reads the real params.yaml or data. Metrics are
checked against scikit-learn on the same predictions, the first step's loss
against a network built independently from the same seed.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from _idx import write_prepared

import mininn
from mininn.data import DATASETS
from mininn.models import make_mlp
from mininn.training import predict
from pipeline import common, evaluate, recipe, reports, train
from pipeline.common import StageError

DATASET = "fashion-mnist"
N_TRAIN, N_VAL, N_TEST = 120, 40, 50
PARAMS = {
    "model": {"hidden_sizes": [16, 8], "activation": "relu", "batch_norm": True, "dropout": 0.1},
    "train": {
        "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9,
        "betas": [0.9, 0.999], "scheduler": None, "label_smoothing": 0.0,
        "clip_grad_norm": None, "augment": {"crop_padding": 0, "hflip": 0.0},
        "batch_size": 32, "epochs": 3, "patience": None, "seed": 3, "dtype": "float64",
    },
}  # fmt: skip


def write_params(path, model=None, train_=None):
    """A params.yaml with PARAMS' sections, some keys overridden (None removes a key)."""
    import yaml

    sections = {"model": {**PARAMS["model"], **(model or {})}}
    sections["train"] = {**PARAMS["train"], **(train_ or {})}
    for name in sections:
        sections[name] = {k: v for k, v in sections[name].items() if v != "<missing>"}
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared folder: train/val/test Parquet splits and stats.json."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), N_TRAIN, N_VAL, N_TEST)


def run_train(prepared, params, out):
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--out", str(out)]
    return train.main([*argv, "--params", str(params)])


def run_evaluate(prepared, params, model, out):
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--model", str(model)]
    return evaluate.main([*argv, "--out", str(out), "--params", str(params)])


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """(params file, train's output folder, evaluate's output folder) of one tiny run."""
    root = tmp_path_factory.mktemp("run")
    params = write_params(root / "params.yaml")
    assert run_train(prepared, params, root / "models") == 0
    assert run_evaluate(prepared, params, root / "models", root / "reports") == 0
    return params, root / "models", root / "reports"


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ train


def history_rows(models):
    """train's DVCLive history as a list of dicts of strings (as read_csv gives)."""
    return reports.read_history(models / "live").astype(str).to_dict("records")


def test_train_writes_history_and_every_step(trained):
    _, models, _ = trained
    history = history_rows(models)
    assert list(history[0]) == list(reports.HISTORY_COLUMNS)
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    steps = read_csv(models / "steps.csv")
    per_epoch = math.ceil(N_TRAIN / PARAMS["train"]["batch_size"])
    assert [int(r["step"]) for r in steps] == list(range(1, 3 * per_epoch + 1))
    # The epoch's train_loss is the sample-weighted mean of its steps' losses.
    sizes = [32, 32, 32, N_TRAIN - 96]
    first = [float(r["loss"]) for r in steps[:per_epoch]]
    expected = float(np.dot(first, sizes)) / N_TRAIN
    assert float(history[0]["train_loss"]) == pytest.approx(expected, rel=1e-12)


def test_train_first_step_loss_matches_an_independently_seeded_network(trained, prepared):
    """The contract: manual_seed(seed) then make_mlp; DataLoader(seed=seed) orders batches."""
    _, models, _ = trained
    p = PARAMS["train"]
    x, y = common.read_prepared(prepared, "train", np.float64)
    mininn.manual_seed(p["seed"])
    model = make_mlp(784, [16, 8], 10, dropout=0.1, batch_norm=True, dtype="float64")
    loader = mininn.DataLoader(x, y, batch_size=p["batch_size"], shuffle=True, seed=p["seed"])
    xb, yb = next(iter(loader))
    model.train()
    expected = float(mininn.CrossEntropyLoss()(model(xb), yb))
    assert float(read_csv(models / "steps.csv")[0]["loss"]) == pytest.approx(expected, rel=1e-10)


def test_train_saves_the_final_model(trained, prepared):
    """The saved weights reproduce the last epoch's validation loss."""
    params, models, _ = trained
    model = recipe.build(DATASET, recipe.model_params(params), "float64")
    model.load_state_dict(mininn.load(models / "model.npz"))
    x, y = common.read_prepared(prepared, "val", np.float64)
    val_loss = float(mininn.CrossEntropyLoss()(predict(model, x), y))
    last = history_rows(models)[-1]
    assert float(last["val_loss"]) == pytest.approx(val_loss, rel=1e-10)


def test_train_same_params_give_byte_identical_outputs(trained, prepared, tmp_path):
    params, models, _ = trained
    assert run_train(prepared, params, tmp_path / "again") == 0
    for name in ("model.npz", "steps.csv", *LIVE_FILES):
        assert (tmp_path / "again" / name).read_bytes() == (models / name).read_bytes(), name


LIVE_FILES = [f"live/plots/metrics/{m}.tsv" for m in reports.LIVE_METRICS if m != "seconds"]
"""DVCLive's files that are the same bytes in two runs (seconds is wall-clock time)."""


@pytest.mark.parametrize(
    ("optimizer", "momentum"),
    [("sgd", 0.9), ("rmsprop", 0.5), ("adamw", 0.9)],
    ids=["sgd-momentum", "rmsprop-momentum", "adamw-ignores-momentum"],
)
def test_train_builds_each_optimizer(prepared, tmp_path, optimizer, momentum):
    params = write_params(
        tmp_path / "p.yaml", train_={"optimizer": optimizer, "momentum": momentum, "epochs": 1}
    )
    assert run_train(prepared, params, tmp_path / "out") == 0
    assert len(history_rows(tmp_path / "out")) == 1


def test_train_patience_stops_early(prepared, tmp_path):
    """A huge lr makes the val loss rise: patience 1 stops after the second epoch."""
    params = write_params(
        tmp_path / "p.yaml",
        model={"batch_norm": False, "dropout": 0.0},
        train_={"optimizer": "sgd", "lr": 0.3, "momentum": 0.0, "epochs": 20, "patience": 1},
    )
    assert run_train(prepared, params, tmp_path / "out") == 0
    history = history_rows(tmp_path / "out")
    losses = [float(r["val_loss"]) for r in history]
    assert len(history) < 20
    assert losses[-1] >= min(losses[:-1])  # stopped because the last epoch did not improve


BAD_PARAMS = [
    ({"hidden_sizes": 512}, {}, "model.hidden_sizes: expected a list"),
    ({"hidden_sizes": [64, 0]}, {}, r"model.hidden_sizes\[1\]"),
    ({"activation": "gelu"}, {}, "model.activation"),
    ({"batch_norm": "yes"}, {}, "model.batch_norm"),
    ({"dropout": 1.0}, {}, "model.dropout"),
    ({}, {"optimizer": "lbfgs"}, "train.optimizer"),
    ({}, {"lr": "0.001"}, "train.lr: expected a number, got the string"),
    ({}, {"lr": 0.0}, "train.lr"),
    ({}, {"weight_decay": -0.1}, "train.weight_decay"),
    ({}, {"momentum": 1.5}, "train.momentum"),
    ({}, {"batch_size": 0}, "train.batch_size"),
    ({}, {"epochs": 2.5}, "train.epochs: expected an integer"),
    ({}, {"patience": 0}, "train.patience"),
    ({}, {"seed": -1}, "train.seed"),
    ({}, {"dtype": "float16"}, "train.dtype"),
    ({}, {"epochs": "<missing>"}, r"missing key\(s\) train.epochs"),
]


@pytest.mark.parametrize(
    ("model", "train_", "match"), BAD_PARAMS, ids=[m.split(":")[0] for *_, m in BAD_PARAMS]
)
def test_train_rejects_bad_params_naming_the_key(prepared, tmp_path, model, train_, match):
    params = write_params(tmp_path / "p.yaml", model, train_)
    with pytest.raises(StageError, match=match):
        run_train(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_train_non_finite_loss_is_a_stage_error_and_writes_nothing(prepared, tmp_path):
    params = write_params(
        tmp_path / "p.yaml",
        model={"batch_norm": False, "dropout": 0.0},
        train_={"optimizer": "sgd", "lr": 1.0e300, "momentum": 0.0},
    )
    with pytest.raises(StageError, match=r"train@fashion-mnist: loss became .* at epoch 1, batch"):
        run_train(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_stage_prints_error_line_and_returns_1(prepared, tmp_path, capsys):
    params = write_params(tmp_path / "p.yaml", train_={"lr": -1.0})
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--out", str(tmp_path / "o")]
    assert common.run_stage(train.main, [*argv, "--params", str(params)]) == 1
    assert "error: train.lr: expected a value in (0, inf], got -1.0" in capsys.readouterr().err


# ------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def predictions(trained, prepared):
    """(y_test, logits) of the saved model, computed here, independently of evaluate."""
    params, models, _ = trained
    model = recipe.build(DATASET, recipe.model_params(params), "float64")
    model.load_state_dict(mininn.load(models / "model.npz"))
    x, y = common.read_prepared(prepared, "test", np.float64)
    return y, predict(model, x)


def test_evaluate_metrics_match_sklearn(trained, predictions):
    skm = pytest.importorskip("sklearn.metrics")
    _, models, reports = trained
    metrics = json.loads((reports / "metrics.json").read_text())
    y, logits = predictions
    y_pred = logits.argmax(axis=1)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert metrics["test_accuracy"] == pytest.approx(skm.accuracy_score(y, y_pred), rel=1e-12)
    # the DVC metric: the same accuracy, under a key of the dataset's own
    accuracy = json.loads((reports / "accuracy.json").read_text())
    assert accuracy == {DATASET: {"test_accuracy": metrics["test_accuracy"]}}
    assert metrics["macro_f1"] == pytest.approx(skm.f1_score(y, y_pred, average="macro"))
    assert metrics["test_loss"] == pytest.approx(
        skm.log_loss(y, probabilities, labels=range(10)), rel=1e-10
    )
    history = history_rows(models)
    assert metrics["epochs"] == len(history) == 3
    assert metrics["val_accuracy"] == pytest.approx(float(history[-1]["val_accuracy"]))


def test_evaluate_metrics_json_has_the_contract_keys(trained, predictions):
    """A few scalars; per class: the report."""
    skm = pytest.importorskip("sklearn.metrics")
    metrics = json.loads((trained[2] / "metrics.json").read_text())
    assert sorted(metrics) == sorted(
        ["test_accuracy", "test_loss", "val_accuracy", "macro_f1", "epochs"]
    )  # fmt: skip
    report = (trained[2] / "classification_report.txt").read_text()
    y, logits = predictions
    recall = skm.recall_score(y, logits.argmax(axis=1), average=None, labels=range(10),
                              zero_division=0)  # fmt: skip
    for name, value in zip(DATASETS[DATASET].classes, recall, strict=True):
        line = next(row for row in report.splitlines() if row.strip().startswith(name))
        assert float(line.split()[-3]) == pytest.approx(value, abs=5e-5), name


def test_evaluate_confusion_csv_has_one_named_row_per_test_image(trained, predictions):
    skm = pytest.importorskip("sklearn.metrics")
    rows = read_csv(trained[2] / "confusion.csv")
    y, logits = predictions
    classes = list(DATASETS[DATASET].classes)
    assert len(rows) == N_TEST
    actual = [classes.index(r["actual"]) for r in rows]
    predicted = [classes.index(r["predicted"]) for r in rows]
    np.testing.assert_array_equal(
        skm.confusion_matrix(actual, predicted, labels=range(10)),
        skm.confusion_matrix(y, logits.argmax(axis=1), labels=range(10)),
    )


def test_evaluate_writes_report_copy_and_figures(trained):
    _, models, out = trained
    import pandas as pd

    written = pd.read_csv(out / "history.csv")
    assert list(written.columns) == list(reports.HISTORY_COLUMNS)
    pd.testing.assert_frame_equal(written, reports.read_history(models / "live"), check_exact=True)
    assert "macro avg" in (out / "classification_report.txt").read_text()
    for name in ("learning_curves.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_evaluate_model_that_does_not_fit_params_is_a_stage_error(trained, prepared, tmp_path):
    _, models, _ = trained
    params = write_params(tmp_path / "p.yaml", model={"hidden_sizes": [32]})
    with pytest.raises(
        StageError, match=r"(?s)cannot load .*model.npz.*dvc repro train@fashion-mnist"
    ):
        run_evaluate(prepared, params, models, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------ plots


def test_read_history_reads_ints_and_floats(tmp_path):
    path = tmp_path / "h.csv"
    columns = [c for c in reports.HISTORY_COLUMNS if c != "lr"]  # lr: optional in a CSV
    rows = ["1,0.5,0.8,0.6,0.7,1.5", "2,0.25,0.9,0.5,0.75,1.25"]
    path.write_text("\n".join([",".join(columns), *rows, ""]), encoding="utf-8")
    history = reports.read_history(path)
    assert history["epoch"].tolist() == [1, 2] and history["epoch"].dtype == np.int64
    assert history["train_loss"].tolist() == [0.5, 0.25] and list(history.columns) == columns


@pytest.mark.parametrize(
    ("text", "match"),
    [(None, "not found"), ("epoch,train_loss\n", r"the columns \[.*\] are missing"),
     ("epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n",  "it has no rows"),
     ("epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n1,abc,1,1,1,1\n",
      "expected numbers in every column, got 'abc' in train_loss of row 1"),
     ("epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n2,1,1,1,1,1\n",
      r"expected epochs 1, 2, \.\.\., 1 in order, got \[2\]")],
    ids=["missing", "columns", "empty", "not-a-number", "epochs"],
)  # fmt: skip
def test_read_history_errors(tmp_path, text, match):
    path = tmp_path / "h.csv"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(StageError, match=match) as info:
        reports.read_history(path)
    assert "\n" not in str(info.value)


def test_read_history_of_a_dvclive_folder_missing_a_metric(trained, tmp_path):
    _, models, _ = trained
    shutil.copytree(models / "live", tmp_path / "live")
    (tmp_path / "live" / "plots" / "metrics" / "lr.tsv").unlink()
    with pytest.raises(StageError, match=r"lr\.tsv not found"):
        reports.read_history(tmp_path / "live")


# ------------------------------------------------------------------ divergence, bad input


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_diverged_training_with_batchnorm_stops_and_writes_nothing(prepared, tmp_path):
    """SGD at lr 1e6 with BatchNorm: the loss stays finite (BatchNorm rescales the
    exploding activations) while running_var overflows to inf in float32."""
    params = write_params(
        tmp_path / "p.yaml", model={"batch_norm": True},
        train_={"optimizer": "sgd", "lr": 1.0e6, "momentum": 0.0, "dtype": "float32"},
    )  # fmt: skip
    with pytest.raises(StageError, match=(
        r"train@fashion-mnist: (\S+ became \S+ at epoch 1 although the loss stayed finite|"
        r"loss became \S+ at epoch 1, batch \d+).*lower the learning rate \(lr=1000000\.0\).*"
        r"nothing was written$"
    )):  # fmt: skip
        run_train(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_divergence_guard_names_the_first_non_finite_array():
    arrays = {"0.weight": np.ones((2, 2)), "1.running_var": np.array([1.0, np.inf]),
              "1.num_batches_tracked": np.array(3)}  # fmt: skip
    row = {"epoch": 2, "train_loss": 2.2e23, "val_loss": 1.0, "seconds": 0.1}
    guard = common.divergence_guard(lambda: arrays.items(), lr=0.5)
    with pytest.raises(FloatingPointError, match=(
        r"^1\.running_var became inf at epoch 2 although the loss stayed finite "
        r"\(train_loss 2\.2e\+23\); lower the learning rate \(lr=0\.5\)$"
    )):  # fmt: skip
        guard(row)
    arrays["1.running_var"][1] = 1.0
    guard(row)  # all finite: no error
    with pytest.raises(FloatingPointError, match=r"^val_loss became nan at epoch 2"):
        guard({**row, "val_loss": float("nan")})


def test_misspelt_train_key_is_an_error_naming_it(prepared, tmp_path):
    params = write_params(tmp_path / "p.yaml", train_={"learning_rate": 0.5})
    with pytest.raises(StageError, match=(
        r"unknown key\(s\) train\.learning_rate; the keys of train are augment, batch_size, "
        r"betas, clip_grad_norm, dtype, epochs, label_smoothing, lr, momentum, optimizer, "
        r"patience, scheduler, seed, weight_decay"
    )):  # fmt: skip
        run_train(prepared, params, tmp_path / "out")
    params = write_params(tmp_path / "p.yaml", model={"hidden": [3]})
    with pytest.raises(StageError, match=r"unknown key\(s\) model\.hidden"):
        run_train(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_checks_the_whole_train_section(trained, prepared, tmp_path):
    _, models, _ = trained
    params = write_params(tmp_path / "p.yaml", train_={"epohcs": 3})
    with pytest.raises(StageError, match=r"unknown key\(s\) train\.epohcs"):
        run_evaluate(prepared, params, models, tmp_path / "reports")


def test_label_out_of_range_in_prepared_data_names_the_file(tmp_path):
    folder = tmp_path / DATASET
    write_prepared(folder, N_TRAIN, N_VAL, N_TEST)
    pixels, labels = common.read_split(folder, "val")
    labels[5] = 10  # fashion-mnist has classes 0..9
    common.write_split(folder / "val.parquet", pixels, labels)
    params = write_params(tmp_path / "p.yaml")
    with pytest.raises(StageError, match=r"val\.parquet: row 5 has label 10, outside \[0, 9\]"):
        run_train(folder, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_model_with_non_finite_weights(trained, prepared, tmp_path):
    params, models, _ = trained
    state = mininn.load(models / "model.npz")
    name = next(k for k in state if k.endswith("running_var"))
    state[name][0] = np.inf
    broken = tmp_path / "models"
    broken.mkdir()
    mininn.save(state, broken / "model.npz")
    shutil.copytree(models / "live", broken / "live")
    with pytest.raises(StageError, match=r"model\.npz holds NaN or infinite weights"):
        run_evaluate(prepared, params, broken, tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("damage", [b"garbage", b"PK\x03\x04truncated"], ids=["garbage", "zip"])
def test_evaluate_corrupt_model_file_is_one_line(trained, prepared, tmp_path, damage):
    params, models, _ = trained
    broken = tmp_path / "models"
    broken.mkdir()
    (broken / "model.npz").write_bytes(damage)
    shutil.copytree(models / "live", broken / "live")
    with pytest.raises(StageError, match=r"cannot load .*model\.npz.*dvc repro train@") as info:
        run_evaluate(prepared, params, broken, tmp_path / "reports")
    assert "\n" not in str(info.value)
