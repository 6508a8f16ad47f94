"""The baseline and compare stages on tiny prepared data in tmp_path.

The baseline's twin must reproduce train's run step for step (same initial
weights, same augmented batches, same Dropout masks, the same recipe): its per-step
losses are checked against the ones train wrote, in float64 within 1e-9 relative
and in float32 within a budget counted in float32's epsilon, with every option of
the default recipe on.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from _idx import write_prepared

from mininn.data import DATASETS
from pipeline import baseline, compare, evaluate, recipe, reports, train
from pipeline.common import StageError

DATASET = "fashion-mnist"
N_TRAIN, N_VAL, N_TEST = 120, 40, 50
PARAMS = {
    "datasets": [DATASET],
    "model": {"hidden_sizes": [16, 8], "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "train": {
        "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "momentum": 0.9,
        "betas": [0.9, 0.999], "scheduler": None, "label_smoothing": 0.0,
        "clip_grad_norm": None, "augment": {"crop_padding": 0, "hflip": 0.0},
        "batch_size": 32, "epochs": 3, "patience": None, "seed": 3, "dtype": "float64",
    },
    "baseline": {"source": "run", "threads": 1},
}  # fmt: skip
# float32: 12 steps, each through the longest sum (784 terms of the first layer), one
# rounding per term: 12 * 784 * eps32 (about 1.1e-3; 1.2e-7 is seen).
STEP_RTOL = {"float64": 1e-9, "float32": 12 * 784 * float(np.finfo(np.float32).eps)}
RECIPE = {  # every option of the default recipe on; 15 steps an epoch
    "model": {"dropout": 0.3, "batch_norm": True},
    "train": {"optimizer": "adamw", "weight_decay": 0.01, "betas": [0.85, 0.99],
              "scheduler": {"name": "OneCycleLR", "args": {"max_lr": 0.01}},
              "label_smoothing": 0.1, "clip_grad_norm": 0.5,
              "augment": {"crop_padding": 2, "hflip": 0.5}, "batch_size": 8, "epochs": 7},
}  # fmt: skip


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


def run_sections(**changes):
    """The params sections of the `run` fixture (RECIPE for 3 epochs), with ``changes``."""
    sections = {"model": dict(RECIPE["model"]), "train": {**RECIPE["train"], "epochs": 3}}
    for name, values in changes.items():
        sections[name] = {**sections.get(name, {}), **values}
    return sections


@pytest.fixture(scope="module")
def run(prepared, tmp_path_factory):
    """One float64 run of train, evaluate and baseline with the whole recipe (3 epochs):
    (root, params file)."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("run")
    params = write_params(root / "params.yaml", **run_sections())
    models, reports = root / "models" / DATASET, root / "reports" / DATASET
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(models)]) == 0
    assert evaluate.main([*argv, "--model", str(models), "--out", str(reports)]) == 0
    assert run_baseline(prepared, params, models / "torch") == 0
    return root, params


# ------------------------------------------------------------------ baseline: run


def step_losses(folder):
    return reports.read_steps(folder / "steps.csv")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_twin_per_step_losses_equal_train(prepared, tmp_path, dtype):
    pytest.importorskip("torch")
    params = write_params(tmp_path / "params.yaml", train={"dtype": dtype})
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(tmp_path / "mininn")]) == 0
    assert run_baseline(prepared, params, tmp_path / "torch") == 0
    ours, theirs = step_losses(tmp_path / "mininn"), step_losses(tmp_path / "torch")
    assert len(ours) == len(theirs) == 3 * 4  # 3 epochs of ceil(120 / 32) batches
    np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL[dtype], atol=0)
    ours_h = reports.read_history(tmp_path / "mininn" / "live")
    theirs_h = reports.read_history(tmp_path / "torch" / "live")
    assert list(ours_h.columns) == list(theirs_h.columns) == list(reports.HISTORY_COLUMNS)
    np.testing.assert_allclose(ours_h["train_loss"], theirs_h["train_loss"], rtol=STEP_RTOL[dtype])


def test_twin_of_the_whole_recipe_is_exact_step_by_step(prepared, tmp_path):
    """Dropout, BatchNorm, AdamW, OneCycleLR, label smoothing, clipping, RandomCrop and
    RandomHorizontalFlip, through the two stage scripts, in float64: every step's loss
    agrees within 1e-9 (same masks, batches and schedule; rounding only)."""
    pytest.importorskip("torch")
    params = write_params(tmp_path / "params.yaml", model=RECIPE["model"],
                          train={**RECIPE["train"], "dtype": "float64"})  # fmt: skip
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(tmp_path / "mininn")]) == 0
    assert run_baseline(prepared, params, tmp_path / "torch") == 0
    ours, theirs = step_losses(tmp_path / "mininn"), step_losses(tmp_path / "torch")
    assert len(ours) == len(theirs) == 7 * 15 >= 100
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)
    ours_h = reports.read_history(tmp_path / "mininn" / "live")
    theirs_h = reports.read_history(tmp_path / "torch" / "live")
    for column in ("val_loss", "lr"):
        np.testing.assert_allclose(ours_h[column], theirs_h[column], rtol=1e-9, err_msg=column)
    assert ours_h["lr"].nunique() == 7  # the schedule moved the lr every epoch


def test_twin_needs_the_same_augmentation(prepared, tmp_path, monkeypatch):
    """The exact agreement above is not a property of any two runs: a crop drawn from
    another stream in the baseline parts the losses at the first step."""
    pytest.importorskip("torch")
    params = write_params(tmp_path / "params.yaml", model=RECIPE["model"],
                          train={**RECIPE["train"], "dtype": "float64", "epochs": 1})  # fmt: skip
    argv = ["--dataset", DATASET, "--prepared", str(prepared), "--params", str(params)]
    assert train.main([*argv, "--out", str(tmp_path / "mininn")]) == 0
    monkeypatch.setattr(recipe, "CROP_SEED", 99)  # the crop's own stream, another seed
    assert run_baseline(prepared, params, tmp_path / "torch") == 0
    ours, theirs = step_losses(tmp_path / "mininn"), step_losses(tmp_path / "torch")
    assert abs(ours[0] - theirs[0]) > 1e-6 * ours[0]


def test_baseline_json_has_the_format_and_evaluates_keys(run):
    root, _ = run
    out = root / "models" / DATASET / "torch"
    result = baseline.read_baseline(out / "baseline.json", DATASET)  # validates the format
    ours = json.loads((root / "reports" / DATASET / "metrics.json").read_text())
    assert sorted(result["metrics"]) == sorted([*reports.METRIC_KEYS, "per_class_accuracy"])
    assert set(ours) < set(result["metrics"])
    assert sorted(result["metrics"]["per_class_accuracy"]) == sorted(DATASETS[DATASET].classes)
    assert result["framework"] == "pytorch" and result["params_mismatch"] == []
    assert result["environment"]["threads"] == 1 and result["environment"]["device"] == "cpu"
    assert result["metrics"]["epochs"] == len(result["history"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["baseline.json", "live", "steps.csv"]
    assert sorted(p.name for p in (out / "live").iterdir()) == ["metrics.json", "params.yaml",
                                                                "plots"]  # fmt: skip


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
    params = write_params(tmp_path / "params.yaml", **run_sections(baseline=source, **sections))
    run_baseline(tmp_path / "no-data-needed", params, tmp_path / "out")
    return tmp_path / "out"


def test_ingest_valid_file_rebuilds_the_outputs(run, tmp_path):
    out = ingest(run, tmp_path)
    original = run[0] / "models" / DATASET / "torch"
    assert (out / "steps.csv").read_text() == (original / "steps.csv").read_text()
    for name in reports.LIVE_METRICS:
        tsv = f"live/plots/metrics/{name}.tsv"
        assert (out / tsv).read_text() == (original / tsv).read_text(), name
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
    out = root / "reports"
    assert compare.main(["--out", str(out), "--models", str(root / "models"),
                         "--params", str(params)]) == 0  # fmt: skip
    summary = json.loads((out / "comparison.json").read_text())[DATASET]
    ours = json.loads((out / DATASET / "metrics.json").read_text())
    theirs = json.loads((out / DATASET / "torch_metrics.json").read_text())
    assert sorted(theirs) == sorted(ours) == sorted(reports.REPORT_METRICS)
    assert summary["mininn"]["test_accuracy"] == ours["test_accuracy"]
    assert summary["pytorch"]["test_accuracy"] == theirs["test_accuracy"]
    assert summary["test_accuracy_diff"] == ours["test_accuracy"] - theirs["test_accuracy"]
    seconds = reports.read_history(out / DATASET / "history.csv")["seconds"].sum()
    torch_seconds = json.loads((root / "models" / DATASET / "torch" / "baseline.json").read_text())
    assert summary["mininn"]["train_seconds"] == pytest.approx(seconds, rel=1e-12)
    assert summary["time_ratio"] == pytest.approx(
        seconds / torch_seconds["metrics"]["train_seconds"], rel=1e-12
    )
    # float64, the whole recipe with Dropout: the two runs differ by rounding only
    ours_steps = reports.read_steps(root / "models" / DATASET / "steps.csv")
    theirs_steps = reports.read_steps(root / "models" / DATASET / "torch" / "steps.csv")
    rel = np.abs(np.subtract(ours_steps, theirs_steps)) / np.maximum(ours_steps, theirs_steps)
    assert summary["steps"] == {
        "compared": len(ours_steps), "max_rel_diff": pytest.approx(rel.max(), rel=1e-12),
        "median_rel_diff": pytest.approx(np.median(rel), rel=1e-12),
        "max_at_step": int(rel.argmax()) + 1,
    }  # fmt: skip
    assert 0 < summary["steps"]["max_rel_diff"] < 1e-9
    assert summary["max_train_loss_diff"] < 1e-9
    assert summary["params_mismatch"] == 0

    def numeric(tree):
        return all(numeric(v) if isinstance(v, dict) else isinstance(v, (int, float))
                   for v in tree.values())  # fmt: skip

    assert numeric(json.loads((out / "comparison.json").read_text()))
    pd.testing.assert_frame_equal(
        pd.read_csv(out / DATASET / "torch_history.csv"),
        reports.read_history(root / "models" / DATASET / "torch" / "live"), check_exact=True,
    )  # fmt: skip
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "comparison.md").read_text()
    first = markdown.split("\n\n")[1].splitlines()  # the report leads with the steps
    assert first[0] == "| dataset | steps | largest rel. diff. | at step | median rel. diff. |"
    s = summary["steps"]
    assert first[2] == (f"| {DATASET} | {s['compared']} | {s['max_rel_diff']:.2e} | "
                        f"{s['max_at_step']} | {s['median_rel_diff']:.2e} |")  # fmt: skip
    assert f"| {DATASET} | {ours['test_accuracy']:.4f} | {theirs['test_accuracy']:.4f} |" in (
        markdown
    )
    assert "statistical" not in markdown


def test_compare_reports_a_params_mismatch(run, tmp_path):
    root, params = run
    data = json.loads((root / "models" / DATASET / "torch" / "baseline.json").read_text())
    data["params_mismatch"] = ["train.lr"]
    models = tmp_path / "models"
    (models / DATASET / "torch").mkdir(parents=True)
    source = root / "models" / DATASET
    (models / DATASET / "steps.csv").write_bytes((source / "steps.csv").read_bytes())
    shutil.copytree(source / "torch" / "live", models / DATASET / "torch" / "live")
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
    for name in ("steps.csv", "torch/steps.csv"):
        (models / name).write_bytes((root / "models" / DATASET / name).read_bytes())
    shutil.copytree(root / "models" / DATASET / "torch" / "live", models / "torch" / "live")
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
    assert summary["steps"]["max_rel_diff"] == 1.0  # |a - 0| / max(|a|, 0)


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
