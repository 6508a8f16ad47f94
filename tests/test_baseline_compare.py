"""The baseline and compare stages on tiny prepared data in tmp_path.

The baseline's twin must reproduce train's run step for step (same initial
weights, same batches): its per-step losses are checked against the ones train
wrote, in float64 within 1e-9 relative and in float32 within 1e-4.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import yaml
from _idx import write_prepared

from pipeline import baseline, compare, evaluate, train
from pipeline.common import StageError

DATASET = "fashion-mnist"
N_TRAIN, N_VAL, N_TEST = 120, 40, 50
PARAMS = {
    "datasets": [DATASET],
    "model": {"hidden_sizes": [16, 8], "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "train": {
        "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9,
        "batch_size": 32, "epochs": 3, "patience": None, "seed": 3, "dtype": "float64",
    },
    "baseline": {"source": "run", "threads": 1},
}  # fmt: skip
STEP_RTOL = {"float64": 1e-9, "float32": 1e-4}


def write_params(path, **sections):
    """A params.yaml: PARAMS with some keys of some sections overridden."""
    params = {name: dict(value) if isinstance(value, dict) else value
              for name, value in PARAMS.items()}  # fmt: skip
    for name, overrides in sections.items():
        params[name].update(overrides)
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared folder: train/val/test Parquet splits and stats.json."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), N_TRAIN, N_VAL, N_TEST)


def run_baseline(prepared, params, out):
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--out", str(out)]
    return baseline.main([*argv, "--params", str(params)])


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    """One float64 run of train, evaluate and baseline: (root, params file)."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("run")
    params = write_params(root / "params.yaml")
    models, reports = root / "models" / DATASET, root / "reports" / DATASET
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(models)]) == 0
    assert evaluate.main([*argv, "--model", str(models), "--out", str(reports)]) == 0
    assert run_baseline(prepared, params, models / "torch") == 0
    return root, params


# ------------------------------------------------------------------ baseline: run


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_twin_per_step_losses_equal_train(prepared, tmp_path, dtype):
    pytest.importorskip("torch")
    params = write_params(tmp_path / "params.yaml", train={"dtype": dtype})
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(tmp_path / "mininn")]) == 0
    assert run_baseline(prepared, params, tmp_path / "torch") == 0
    ours = [float(r["loss"]) for r in read_csv(tmp_path / "mininn" / "steps.csv")]
    theirs = [float(r["loss"]) for r in read_csv(tmp_path / "torch" / "steps.csv")]
    assert len(ours) == len(theirs) == 3 * 4  # 3 epochs of ceil(120 / 32) batches
    np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL[dtype], atol=0)
    ours_h = read_csv(tmp_path / "mininn" / "history.csv")
    theirs_h = read_csv(tmp_path / "torch" / "history.csv")
    assert list(ours_h[0]) == list(theirs_h[0]) == list(train.HISTORY_COLUMNS)
    ours_loss = [float(r["train_loss"]) for r in ours_h]
    theirs_loss = [float(r["train_loss"]) for r in theirs_h]
    np.testing.assert_allclose(ours_loss, theirs_loss, rtol=STEP_RTOL[dtype])


def test_baseline_json_has_the_format_and_evaluates_keys(run):
    root, _ = run
    out = root / "models" / DATASET / "torch"
    result = baseline.read_baseline(out / "baseline.json", DATASET)  # validates the format
    ours = json.loads((root / "reports" / DATASET / "metrics.json").read_text())
    assert sorted(result["metrics"]) == sorted(ours)
    assert sorted(result["metrics"]["per_class_accuracy"]) == sorted(ours["per_class_accuracy"])
    assert result["framework"] == "pytorch" and result["params_mismatch"] == []
    assert result["environment"]["threads"] == 1 and result["environment"]["device"] == "cpu"
    assert result["metrics"]["epochs"] == len(result["history"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["baseline.json", "history.csv", "steps.csv"]


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import f1_score, recall_score

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
    classes = [f"c{i}" for i in range(10)]
    metrics = baseline.classification_metrics(y_true, y_pred, classes)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(y_true == y_pred), rel=1e-12)
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    recall = recall_score(y_true, y_pred, average=None)
    assert list(metrics["per_class_accuracy"]) == classes
    np.testing.assert_allclose(list(metrics["per_class_accuracy"].values()), recall, rtol=1e-12)


def test_missing_torch_gives_the_install_hint(prepared, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    params = write_params(tmp_path / "params.yaml")
    with pytest.raises(StageError, match=r"pip install torch==2\.13\.0.*baseline\.source"):
        run_baseline(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("baselines/x.json", "path template containing {dataset}", id="no-template"),
        pytest.param(3, "expected 'run' or a path template", id="not-a-string"),
        pytest.param("baselines/{dataset}-{seed}.json",
                     r"is not a path template with \{dataset\} as its only placeholder "
                     r"\(KeyError: 'seed'\)", id="other-placeholder"),
        pytest.param("elsewhere/{dataset}.json",
                     r"baseline.source: elsewhere/fashion-mnist.json is outside baselines/, the "
                     r"folder dvc.yaml tracks.*copy it into baselines/", id="outside"),
        pytest.param("baselines/../{dataset}.json", "is outside baselines/", id="dot-dot"),
        pytest.param("/tmp/{dataset}.json", "is outside baselines/", id="absolute"),
    ],
)  # fmt: skip
def test_bad_source_is_rejected(prepared, tmp_path, source, message):
    params = write_params(tmp_path / "params.yaml", baseline={"source": source})
    with pytest.raises(StageError, match=message):
        run_baseline(prepared, params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_baseline_key_is_rejected(prepared, tmp_path):
    params = write_params(tmp_path / "params.yaml", baseline={"sorce": "baselines/{dataset}.json"})
    with pytest.raises(StageError, match=r"unknown key\(s\) baseline\.sorce; the keys of "
                       r"'baseline:' are source, threads"):  # fmt: skip
        run_baseline(prepared, params, tmp_path / "out")


# ------------------------------------------------------------------ baseline: ingestion


def ingest(run, tmp_path, mutate=None, **sections):
    """Copy the run's baseline.json (mutated) to tmp_path and ingest it; the out folder."""
    root, _ = run
    data = json.loads((root / "models" / DATASET / "torch" / "baseline.json").read_text())
    if mutate is not None:
        mutate(data)
    (tmp_path / "baselines").mkdir(exist_ok=True)
    (tmp_path / "baselines" / f"{DATASET}.json").write_text(json.dumps(data), encoding="utf-8")
    source = {"source": "baselines/{dataset}.json"}  # relative to params.yaml's folder
    params = write_params(tmp_path / "params.yaml", baseline=source, **sections)
    run_baseline(tmp_path / "no-data-needed", params, tmp_path / "out")
    return tmp_path / "out"


def test_ingest_valid_file_rebuilds_the_csvs(run, tmp_path):
    out = ingest(run, tmp_path)
    original = run[0] / "models" / DATASET / "torch"
    for name in ("history.csv", "steps.csv"):
        assert (out / name).read_text() == (original / name).read_text()
    assert json.loads((out / "baseline.json").read_text())["params_mismatch"] == []


def test_ingest_flags_params_mismatch(run, tmp_path):
    out = ingest(run, tmp_path, train={"lr": 0.02, "epochs": 4})
    mismatch = json.loads((out / "baseline.json").read_text())["params_mismatch"]
    assert mismatch == ["train.epochs", "train.lr"]


def _delete(*path):
    def mutate(data):
        for key in path[:-1]:
            data = data[key]
        del data[path[-1]]

    return mutate


def _set(value, *path):
    def mutate(data):
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return mutate


MALFORMED = {
    "no-metrics": (_delete("metrics"), r"key '\(top level\)': missing \['metrics'\]"),
    "format": (_set("other/2", "format"), "key 'format': expected 'mininn-baseline/1'"),
    "dataset": (_set("mnist", "dataset"), "key 'dataset': expected 'fashion-mnist', got 'mnist'"),
    "history-epoch": (_set(5, "history", 1, "epoch"), r"key 'history\[1\].epoch': expected 2"),
    "history-loss": (_set("abc", "history", 0, "val_loss"),
                     r"key 'history\[0\].val_loss': expected a finite number, got 'abc'"),
    "history-empty": (_set([], "history"), "key 'history': expected a non-empty list"),
    "class": (_delete("metrics", "per_class_accuracy", "Bag"),
              r"key 'metrics.per_class_accuracy': missing \['Bag'\]"),
    "epochs-float": (_set(3.5, "metrics", "epochs"), "key 'metrics.epochs': expected an integer"),
    "steps": (_set([1.0, None], "steps"), r"key 'steps\[1\]': expected a finite number"),
    "environment": (_delete("environment", "threads"), r"'environment': missing \['threads'\]"),
    "zero-seconds": (_set(0, "metrics", "train_seconds"),
                     r"key 'metrics.train_seconds': expected a value in \(0.0, inf\], got 0"),
    "accuracy>1": (_set(1.5, "metrics", "test_accuracy"),
                   r"key 'metrics.test_accuracy': expected a value in \[0.0, 1.0\], got 1.5"),
    "percent": (_set(91.0, "history", 2, "val_accuracy"),
                r"key 'history\[2\].val_accuracy': expected a value in \[0.0, 1.0\]"),
    "class>1": (_set(1.01, "metrics", "per_class_accuracy", "Bag"),
                r"per_class_accuracy.Bag': expected a value in \[0.0, 1.0\]"),
    "negative-loss": (_set(-0.1, "metrics", "test_loss"), r"'metrics.test_loss': expected a value"),
    "negative-step": (_set([0.5, -1.0], "steps"), r"key 'steps\[1\]': expected a value in \[0.0"),
    "epochs-vs-history": (_set(7, "metrics", "epochs"),
                          "key 'metrics.epochs': expected 3, the number of epochs in 'history', "
                          "got 7"),
    "infinity": (_set(float("inf"), "metrics", "val_loss"),
                 r"'metrics.val_loss': expected a finite number, got inf"),
}  # fmt: skip


@pytest.mark.parametrize(("mutate", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_ingest_malformed_file_names_file_and_key(run, tmp_path, mutate, message):
    with pytest.raises(StageError, match=message) as info:
        ingest(run, tmp_path, mutate)
    assert f"{DATASET}.json" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_ingest_file_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(StageError, match=r"broken.json: not valid JSON"):
        baseline.read_baseline(path, DATASET)


def test_ingest_missing_file(tmp_path):
    with pytest.raises(StageError, match=r"missing.json not found"):
        baseline.read_baseline(tmp_path / "missing.json", DATASET)


# ------------------------------------------------------------------ compare


def test_compare_writes_every_output(run):
    root, params = run
    reports = root / "reports"
    assert compare.main(["--out", str(reports), "--models", str(root / "models"),
                         "--params", str(params)]) == 0  # fmt: skip
    summary = json.loads((reports / "comparison.json").read_text())[DATASET]
    ours = json.loads((reports / DATASET / "metrics.json").read_text())
    theirs = json.loads((reports / DATASET / "torch_metrics.json").read_text())
    assert sorted(theirs) == sorted(ours)
    assert summary["mininn"]["test_accuracy"] == ours["test_accuracy"]
    assert summary["pytorch"]["test_accuracy"] == theirs["test_accuracy"]
    assert summary["test_accuracy_diff"] == ours["test_accuracy"] - theirs["test_accuracy"]
    assert summary["time_ratio"] == ours["train_seconds"] / theirs["train_seconds"]
    # float64 without dropout: the two runs differ by rounding only
    assert summary["max_step_loss_rel_diff"] < 1e-9
    assert summary["max_train_loss_diff"] < 1e-9
    assert summary["params_mismatch"] == 0

    def numeric(tree):
        return all(numeric(v) if isinstance(v, dict) else isinstance(v, (int, float))
                   for v in tree.values())  # fmt: skip

    assert numeric(json.loads((reports / "comparison.json").read_text()))
    assert (reports / DATASET / "torch_history.csv").read_bytes() == (
        root / "models" / DATASET / "torch" / "history.csv"
    ).read_bytes()
    assert (reports / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (reports / "comparison.md").read_text()
    assert (
        f"| {DATASET} | {ours['test_accuracy']:.4f} | {theirs['test_accuracy']:.4f} |" in markdown
    )


def test_compare_reports_a_params_mismatch(run, tmp_path):
    root, params = run
    data = json.loads((root / "models" / DATASET / "torch" / "baseline.json").read_text())
    data["params_mismatch"] = ["train.lr"]
    models = tmp_path / "models"
    (models / DATASET / "torch").mkdir(parents=True)
    for name in ("steps.csv", "torch/history.csv"):
        (models / DATASET / name).write_bytes((root / "models" / DATASET / name).read_bytes())
    (models / DATASET / "torch" / "baseline.json").write_text(json.dumps(data))
    reports = tmp_path / "reports" / DATASET
    reports.mkdir(parents=True)
    for name in ("metrics.json", "history.csv"):
        (reports / name).write_bytes((root / "reports" / DATASET / name).read_bytes())
    argv = ["--out", str(tmp_path / "reports"), "--models", str(models), "--params", str(params)]
    assert compare.main(argv) == 0
    assert (
        json.loads((tmp_path / "reports" / "comparison.json").read_text())[DATASET][
            "params_mismatch"
        ]
        == 1
    )
    assert "other params: train.lr" in (tmp_path / "reports" / "comparison.md").read_text()


def _copy_run(run, tmp_path, mutate):
    """The run's compare inputs copied to tmp_path, baseline.json mutated; compare's argv."""
    root, params = run
    models, reports = tmp_path / "models" / DATASET, tmp_path / "reports" / DATASET
    (models / "torch").mkdir(parents=True)
    reports.mkdir(parents=True)
    for name in ("steps.csv", "torch/history.csv", "torch/steps.csv"):
        (models / name).write_bytes((root / "models" / DATASET / name).read_bytes())
    for name in ("metrics.json", "history.csv"):
        (reports / name).write_bytes((root / "reports" / DATASET / name).read_bytes())
    data = json.loads((root / "models" / DATASET / "torch" / "baseline.json").read_text())
    mutate(data)
    (models / "torch" / "baseline.json").write_text(json.dumps(data))
    return ["--out", str(tmp_path / "reports"), "--models", str(tmp_path / "models"),
            "--params", str(params)]  # fmt: skip


def test_compare_a_step_loss_of_zero_keeps_comparison_json_valid(run, tmp_path):
    """Dividing by the PyTorch step loss alone gave Infinity, which is not JSON."""

    def zero_loss(data):
        data["steps"][0] = 0.0

    assert compare.main(_copy_run(run, tmp_path, zero_loss)) == 0
    text = (tmp_path / "reports" / "comparison.json").read_text()

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    summary = json.loads(text, parse_constant=refuse)[DATASET]
    assert summary["max_step_loss_rel_diff"] == 1.0  # |a - 0| / max(|a|, 0)


def test_compare_zero_training_time_is_refused_before_anything_is_written(run, tmp_path):
    argv = _copy_run(run, tmp_path, _set(0.0, "metrics", "train_seconds"))
    with pytest.raises(StageError, match=r"'metrics.train_seconds': expected a value in \(0.0"):
        compare.main(argv)
    assert not (tmp_path / "reports" / "comparison.json").exists()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([1.0, 2.0], [1.0, 2.0], 0.0), ([0.0, 0.0], [0.0, 0.0], 0.0), ([1.0, 0.0], [1.0, 0.5], 1.0),
     ([2.0], [1.0], 0.5), ([1e-3], [1.001e-3], 1e-3 / 1.001)],
)  # fmt: skip
def test_max_relative_difference(a, b, expected):
    assert compare.max_relative_difference(a, b) == pytest.approx(expected, rel=1e-12)
    assert compare.max_relative_difference(b, a) == pytest.approx(expected, rel=1e-12)


def test_compare_missing_baseline_names_the_file(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    argv = ["--out", str(tmp_path / "reports"), "--models", str(tmp_path / "models")]
    with pytest.raises(StageError, match=r"torch/baseline.json not found"):
        compare.main([*argv, "--params", str(params)])
    assert not (tmp_path / "reports").exists()
