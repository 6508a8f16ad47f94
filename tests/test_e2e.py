"""End to end: the real dvc.yaml on tiny generated data, in a temporary git repo.

The project (library, stage scripts, dvc.yaml, params.yaml) is copied into
``tmp_path``, made a git repo, given small params and tiny IDX data, and then:
``dvc repro``; ``dvc exp run -S train.scheduler.args.max_lr=...``; ``dvc metrics diff``
must show the change and ``dvc status`` must be clean; DVCLive's folders are there
and ``dvc exp show --json`` reads them; ``dvc metrics show`` fits 120 columns; a
key that params.yaml lacks is set with ``-S +overrides.<dataset>.train.epochs=3``.

The tiny files cannot match the pinned SHA-256 of the real datasets, so ``fetch``
cannot serve them: they are placed in ``data/raw/<dataset>/`` (where fetch
writes) and recorded with ``dvc commit fetch@<dataset>``; every later stage runs
for real. ``MININN_DATA_DIR`` points at the tiny mirror all the same, so no stage
can reach the team's mirror. The PyTorch baseline and compare stages run when
torch and their scripts are there; otherwise only train and evaluate are run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _idx import write_tiny_dataset

from pipeline.common import PROJECT_ROOT

pytestmark = pytest.mark.slow

COPIED = ["mininn", "pipeline", "baselines", "dvc.yaml", "params.yaml", ".dvcignore",
          ".dvc/config", ".dvc/.gitignore", ".gitignore"]  # fmt: skip
SMALL = {
    "prepare": {"val_size": 60, "seed": 0},
    "model": {"hidden_sizes": [16], "activation": "relu", "batch_norm": True, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 64, "patience": None},
    "baseline": {"source": "run", "threads": 1},
}


def dvc(repo: Path, *args: str, fails: bool = False, columns: int | None = None) -> str:
    """Run ``dvc args`` in ``repo`` with the test's Python first on PATH; return stdout
    (stdout and stderr when ``fails``: then the command must fail)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(MININN_DATA_DIR=str(repo.parent / "mirror"), MPLBACKEND="Agg")
    if columns is not None:
        env["COLUMNS"] = str(columns)
    result = subprocess.run(
        [str(Path(bin_dir) / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert (result.returncode != 0) == fails, f"dvc {' '.join(args)}: {result.returncode}\n{output}"
    return output if fails else result.stdout


def edit_params(repo: Path, section: str, **values) -> None:
    """Set keys of one section of repo's params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def git(repo: Path, *args: str) -> None:
    who = {"NAME": "test", "EMAIL": "test@example.com"}
    env = {
        **os.environ,
        **{f"GIT_{r}_{k}": v for r in ("AUTHOR", "COMMITTER") for k, v in who.items()},
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_project(tmp_path: Path) -> tuple[Path, list[str]]:
    """Copy the project into tmp_path/project with small params and tiny raw data."""
    repo = tmp_path / "project"
    for name in COPIED:
        source, target = PROJECT_ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for section, values in SMALL.items():
        params.setdefault(section, {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for dataset in params["datasets"]:
        write_tiny_dataset(tmp_path / "mirror", dataset, n_train=300, n_test=60)
        write_tiny_dataset(repo / "data" / "raw" / dataset, dataset, 300, 60, gz=False,
                           subfolder=False)  # fmt: skip
    return repo, params["datasets"]


def test_repro_then_experiment_shows_in_metrics_diff_and_status_is_clean(tmp_path):
    if shutil.which("git") is None or not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("needs git and dvc (installed by `make test`)")
    repo, datasets = make_project(tmp_path)
    full = (
        importlib.util.find_spec("torch") is not None
        and (repo / "pipeline" / "baseline.py").exists()
        and (repo / "pipeline" / "compare.py").exists()
    )
    targets = [] if full else [f"evaluate@{d}" for d in datasets]  # [] = the whole pipeline
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    for dataset in datasets:
        dvc(repo, "commit", "-f", "-q", f"fetch@{dataset}")

    dvc(repo, "repro", *targets)
    before = {d: json.loads((repo / f"reports/{d}/metrics.json").read_text()) for d in datasets}
    assert all(m["epochs"] == 2 for m in before.values())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "repro")

    for dataset in datasets:  # DVCLive's folders, every epoch logged
        for live in (f"models/{dataset}/live", f"models/{dataset}/torch/live")[: 2 if full else 1]:
            assert json.loads((repo / live / "metrics.json").read_text())["step"] == 2, live
            assert yaml.safe_load((repo / live / "params.yaml").read_text())["dataset"] == dataset
            tsv = (repo / live / "plots/metrics/val_accuracy.tsv").read_text().splitlines()
            assert tsv[0] == "step\tval_accuracy" and len(tsv) == 1 + 2, live
    assert not (repo / "checkpoints").exists()  # finished runs remove their checkpoints
    shown = dvc(repo, "metrics", "show", columns=120).splitlines()
    assert max(map(len, shown)) <= 120, "\n".join(shown)

    dvc(repo, "exp", "run", "-S", "train.scheduler.args.max_lr=0.01", *targets)
    diff = json.loads(dvc(repo, "metrics", "diff", "--all", "--json"))
    for dataset in datasets:  # the metric: test accuracy, a key per dataset
        change = diff[f"reports/{dataset}/accuracy.json"][f"{dataset}.test_accuracy"]
        after = json.loads((repo / f"reports/{dataset}/metrics.json").read_text())
        assert change["old"] == before[dataset]["test_accuracy"], change
        assert change["new"] == after["test_accuracy"], change
    # what changed, without the dependencies: one short column per metric and param
    shown = dvc(repo, "exp", "show", "--no-pager", "--only-changed", "--drop", "Created|.*/",
                columns=120)  # fmt: skip
    assert max(map(len, shown.splitlines())) <= 120 and "…" not in shown, shown  # none cut
    assert f"{datasets[0]}.test_accuracy" in shown and "max_lr" in shown, shown
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["scheduler"]["args"]["max_lr"] == 0.01
    experiments = json.loads(dvc(repo, "exp", "show", "--json"))
    workspace = next(e for e in experiments if e["rev"] == "workspace")["data"]["metrics"]
    live = workspace[f"models/{datasets[0]}/live/metrics.json"]["data"]
    assert live["step"] == 2 and 0 <= live["val_accuracy"] <= 1, live
    status = dvc(repo, "status", *targets)
    assert "up to date" in status, status
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "experiment applied")
    dataset = datasets[0]
    metrics = repo / f"reports/{dataset}/metrics.json"
    committed = metrics.read_bytes()

    # A failed stage keeps the committed reports (persist: true), and says why in one line.
    edit_params(repo, "model", hidden_sizes=[8])
    output = dvc(repo, "repro", "--single-item", f"evaluate@{dataset}", fails=True)
    assert f"error: evaluate@{dataset}: cannot load models/{dataset}/model.npz" in output
    assert metrics.read_bytes() == committed
    git(repo, "checkout", "params.yaml")

    # A misspelt key changes the section the stage depends on: it reruns and refuses it.
    edit_params(repo, "train", learning_rate=0.5)
    assert f"train@{dataset}" in dvc(repo, "status", f"train@{dataset}")
    output = dvc(repo, "repro", "--single-item", f"train@{dataset}", fails=True)
    assert "error: " in output and "unknown key(s) train.learning_rate" in output, output
    git(repo, "checkout", "params.yaml")

    # A key params.yaml lacks: Hydra's `+key=value` adds it (plain `key=value` is refused).
    last = datasets[-1]
    output = dvc(repo, "exp", "run", "-S", f"overrides.{last}.train.epochs=3", *targets,
                 fails=True)  # fmt: skip
    assert f"use +overrides.{last}.train.epochs=3" in output, output
    dvc(repo, "exp", "run", "-S", f"+overrides.{last}.train.epochs=3", *targets)
    assert (
        yaml.safe_load((repo / "params.yaml").read_text())["overrides"][last]["train"]["epochs"]
        == 3
    )
    epochs = {d: json.loads((repo / f"reports/{d}/metrics.json").read_text())["epochs"]
              for d in datasets}  # fmt: skip
    assert epochs == {d: 3 if d == last else 2 for d in datasets}
    git(repo, "checkout", "params.yaml")
    if not full:
        return

    # An ingested baseline file is a dependency: editing it makes the stage stale.
    baseline = json.loads((repo / f"models/{dataset}/torch/baseline.json").read_text())
    (repo / "baselines" / f"{dataset}.json").write_text(json.dumps(baseline), encoding="utf-8")
    edit_params(repo, "baseline", source="baselines/{dataset}.json")
    dvc(repo, "repro", "--single-item", f"baseline@{dataset}")
    assert "up to date" in dvc(repo, "status", f"baseline@{dataset}")
    baseline["environment"]["wall_seconds"] += 1.0
    (repo / "baselines" / f"{dataset}.json").write_text(json.dumps(baseline), encoding="utf-8")
    status = dvc(repo, "status", f"baseline@{dataset}")
    assert f"baseline@{dataset}" in status and "modified:" in status and "baselines" in status


def test_metrics_show_of_this_project_fits_120_columns():
    """The committed metrics as a user first sees them: `dvc metrics show` at the root
    (the pipeline's metrics files and the sweep's) in a 120-column terminal."""
    if shutil.which("git") is None or not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("needs git and dvc (installed by `make test`)")
    shown = dvc(PROJECT_ROOT, "metrics", "show", columns=120)
    assert "reports/mnist/accuracy.json" in shown, shown
    assert max(map(len, shown.splitlines())) <= 120, shown
