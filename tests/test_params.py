"""params.yaml as a whole: pipeline/check_params.py, and how dvc.yaml depends on it.

A stage reruns only when a params key it lists changes, so each stage lists the
whole sections it validates: a misspelt extra key then changes the section, the
stage reruns and refuses it. DVC itself reads ``datasets:`` before any stage
runs; ``make repro`` runs check_params.py first so that an empty or broken file
is reported in one line naming params.yaml.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline import check_params
from pipeline.common import PARAMS_FILE, PROJECT_ROOT, StageError

COMMITTED = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
STAGE_SECTIONS = ("datasets", "prepare", "model", "train", "baseline")


def write(tmp_path, params) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(params if isinstance(params, str) else yaml.safe_dump(params), "utf-8")
    return str(path)


def with_change(section: str, **values):
    params = {name: COMMITTED[name] for name in STAGE_SECTIONS}
    params[section] = {**params[section], **values}
    return params


def test_committed_params_pass():
    assert check_params.main(["--params", str(PARAMS_FILE)]) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("", r"params\.yaml is empty; it needs the sections datasets, prepare, model, train and "
             r"baseline \(`git checkout params\.yaml` restores the committed one\)"),
        ("# only a comment\n", "is empty"),
        ("prepare:\n  seed: 1\n", r"missing section 'datasets:'"),
        ({"datasets": ["cifar10"]}, r"^params\.yaml: datasets: unknown dataset 'cifar10'; the "
                                    r"known ones are fashion-mnist, mnist$"),
        ({"datasets": []}, r"datasets: expected a non-empty list"),
        ({"datasets": "mnist"}, r"datasets: expected a non-empty list of dataset names"),
        ({"datasets": ["mnist", "mnist"]}, r"datasets: \['mnist'\] listed more than once"),
        (with_change("train", learning_rate=0.5), r"unknown key\(s\) train\.learning_rate"),
        (with_change("model", dropuot=0.1), r"unknown key\(s\) model\.dropuot"),
        (with_change("prepare", val_szie=0.1), r"unknown key\(s\) prepare\.val_szie"),
        (with_change("baseline", thread=2), r"unknown key\(s\) baseline\.thread"),
        (with_change("train", lr="1e-3"), r"train\.lr: expected a number, got the string"),
        (with_change("prepare", val_size=1.5), r"prepare\.val_size: expected a fraction"),
        (with_change("baseline", source="x.json"), r"baseline\.source: expected 'run'"),
    ],
    ids=["empty", "comment-only", "no-datasets", "cifar10", "no-dataset", "not-a-list",
         "repeated", "train-key", "model-key", "prepare-key", "baseline-key", "yaml-string",
         "val-size", "source"],
)  # fmt: skip
def test_bad_params_are_one_line_naming_the_file_or_key(tmp_path, params, message):
    with pytest.raises(StageError, match=message) as info:
        check_params.main(["--params", write(tmp_path, params)])
    assert "\n" not in str(info.value)


def test_extra_sections_are_left_to_their_owners(tmp_path):
    params = {**{name: COMMITTED[name] for name in STAGE_SECTIONS}, "tune": {"anything": 1}}
    assert check_params.main(["--params", write(tmp_path, params)]) == 0


def test_script_prints_one_line_and_exits_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "pipeline/check_params.py", "--params", write(tmp_path, "")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_make_repro_checks_params_before_dvc():
    makefile = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("pipeline/check_params.py") < recipe.index("dvc repro")


# ------------------------------------------------------------------ dvc.yaml


DVC_YAML = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("stage", "sections"),
    [("prepare", ["prepare"]), ("train", ["model", "train"]),
     ("baseline", ["model", "train", "baseline"]), ("evaluate", ["model", "train.dtype"]),
     ("compare", ["datasets"])],
)  # fmt: skip
def test_stages_depend_on_the_whole_sections_they_validate(stage, sections):
    assert DVC_YAML["stages"][stage]["params"] == sections


def test_every_uncached_output_persists():
    """DVC deletes a stage's outputs before running it; a committed report (cache:
    false) cannot come back from the cache, so a failed stage must not delete it.
    Persisting costs no run-cache: a stage with an uncached plain output has none."""
    for name, stage in DVC_YAML["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                if isinstance(out, dict):
                    ((path, flags),) = out.items()
                    if flags.get("cache") is False:
                        assert flags.get("persist") is True, f"{name}: {path}"


def test_cached_outputs_keep_the_run_cache():
    """train and baseline outputs are cached and not persisted: DVC's run-cache
    restores them when a parameter is changed back."""
    for name in ("train", "baseline"):
        for out in DVC_YAML["stages"][name]["outs"]:
            assert isinstance(out, str), f"{name}: {out}"


def test_baseline_depends_on_the_baselines_folder():
    assert "baselines" in DVC_YAML["stages"]["baseline"]["deps"]
    assert (PROJECT_ROOT / "baselines").is_dir()
    assert "/baselines/README.md" in (PROJECT_ROOT / ".dvcignore").read_text(encoding="utf-8")
