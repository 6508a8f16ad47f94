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
from pathlib import Path

import numpy as np
import pytest
import yaml

import mininn
from pipeline import baseline, check_params, common, recipe, train
from pipeline.common import PARAMS_FILE, PROJECT_ROOT, StageError

COMMITTED = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
STAGE_SECTIONS = ("datasets", "prepare", "model", "train", "overrides", "baseline", "tune")


def write(tmp_path, params) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(params if isinstance(params, str) else yaml.safe_dump(params), "utf-8")
    return str(path)


def with_change(section: str, **values):
    params = {name: COMMITTED[name] for name in STAGE_SECTIONS}
    params[section] = {**params[section], **values}
    return params


def with_train(**values):
    """The committed params with train: keys set; a dict value replaces the key's whole value."""
    return with_change("train", **values)


def with_overrides(overrides):
    params = {name: COMMITTED[name] for name in STAGE_SECTIONS}
    params["overrides"] = overrides
    return params


def test_committed_params_pass():
    assert check_params.main(["--params", str(PARAMS_FILE)]) == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("", r"params\.yaml is empty; it needs the sections datasets, prepare, model, train, "
             r"baseline and tune \(`git checkout params\.yaml` restores the committed one\)"),
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
        (with_change("train", lr="0.001"), r"train\.lr: expected a number, got the string "
                                           r"'0\.001'; write it without quotes$"),
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


def test_sections_no_stage_reads_are_left_alone(tmp_path):
    params = {**{name: COMMITTED[name] for name in STAGE_SECTIONS}, "notes": {"anything": 1}}
    assert check_params.main(["--params", write(tmp_path, params)]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (None, r"missing section 'tune:'"),
        ({"dataset": "cifar10"}, r"^tune\.dataset: expected one of \['fashion-mnist', 'mnist'\]"),
    ],
    ids=["missing", "dataset"],
)
def test_the_sweeps_dataset_is_checked_too(tmp_path, change, message):
    """DVC reads tune.dataset for tune/dvc.yaml whatever command runs: make repro checks
    it (the sweep checks the rest of tune: when it runs)."""
    params = {name: COMMITTED[name] for name in STAGE_SECTIONS if name != "tune"}
    if change is not None:
        params["tune"] = {**COMMITTED["tune"], **change}
    with pytest.raises(StageError, match=message) as info:
        check_params.main(["--params", write(tmp_path, params)])
    assert "\n" not in str(info.value)


SCHEDULER_NAMES = (
    "CosineAnnealingLR, ExponentialLR, LinearLR, MultiStepLR, OneCycleLR, ReduceLROnPlateau, StepLR"
)
ONE_CYCLE_ARGS = (
    "max_lr, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, "
    "cycle_momentum, base_momentum, max_momentum, div_factor, final_div_factor, "
    "three_phase"
)


def one_cycle(**args):
    return {"name": "OneCycleLR", "args": args}


RECIPE_ERRORS = {  # params -> the whole one-line message (a regex)
    "optimizer": (with_train(optimizer="lamb"),
                  r"train\.optimizer: expected one of \['sgd', 'adam', 'adamw', 'rmsprop'\], "
                  r"got 'lamb'"),
    "betas-length": (with_train(betas=[0.9]), r"train\.betas: expected a list of two numbers "
                     r"in \[0, 1\), e\.g\. \[0\.9, 0\.999\], got \[0\.9\]"),
    "betas-one": (with_train(betas=[0.9, 1.0]),
                  r"train\.betas\[1\]: expected a value in \[0, 1\), got 1\.0"),
    "betas-string": (with_train(betas=["0.9", 0.999]),
                     r"train\.betas\[0\]: expected a number, got the string '0\.9'"),
    "scheduler-type": (with_train(scheduler="OneCycleLR"),
                       r"train\.scheduler: expected a mapping with the keys name, args, "
                       r"got 'OneCycleLR'"),
    "scheduler-name": (with_train(scheduler={"name": "CosineLR", "args": {}}),
                       r"train\.scheduler\.name: expected null \(a constant lr\) or one of "
                       + SCHEDULER_NAMES + r", got 'CosineLR'"),
    "sequential": (with_train(scheduler={"name": "SequentialLR", "args": {}}),
                   r"train\.scheduler\.name: .* got 'SequentialLR'"),
    "scheduler-key": (with_train(scheduler={"name": "StepLR", "args": {}, "step": 1}),
                      r"train\.scheduler: unknown key\(s\) train\.scheduler\.step; the keys of "
                      r"train\.scheduler are args, name"),
    "no-args": (with_train(scheduler={"name": "StepLR"}),
                r"train\.scheduler: missing key\(s\) train\.scheduler\.args"),
    "args-type": (with_train(scheduler={"name": "StepLR", "args": [3]}),
                  r"train\.scheduler\.args: expected a mapping of StepLR's keyword arguments"),
    "unknown-arg": (with_train(scheduler=one_cycle(max_lr=0.003, maxlr=0.1)),
                    r"train\.scheduler\.args\.maxlr: unknown argument of OneCycleLR; its "
                    r"arguments are " + ONE_CYCLE_ARGS + "$"),
    "last_epoch": (with_train(scheduler={"name": "StepLR", "args": {"step_size": 2,
                                                                      "last_epoch": 3}}),
                   r"train\.scheduler\.args\.last_epoch: unknown argument of StepLR; its "
                   r"arguments are step_size, gamma$"),
    "max_lr": (with_train(scheduler=one_cycle(max_lr=-1)),
               r"^train\.scheduler\.args\.max_lr: expected a value in \(0, inf\], got -1$"),
    "max_lr-inf": (with_train(scheduler=one_cycle(max_lr=float("inf"))),
                   r"^train\.scheduler\.args\.max_lr: expected a finite number, got inf$"),
    "momentum": (with_train(scheduler=one_cycle(max_lr=0.01, max_momentum=1.5)),
                 r"^train\.scheduler\.args\.max_momentum: expected a value in \[0, 1\], got 1\.5$"),
    "refused": (with_train(scheduler=one_cycle(max_lr=0.01, pct_start=2.0)),
                r"^train\.scheduler\.args: OneCycleLR refuses \{'max_lr': 0\.01, "
                r"'pct_start': 2\.0, 'epochs': 40, 'steps_per_epoch': 1\}: .*pct_start"),
    "override-scheduler": (with_overrides({"mnist": {"train": {"scheduler": {"name": "StepLR"}}}}),
                           r"^overrides\.mnist\.train\.scheduler\.args: StepLR refuses \{\}: "),
    "required-arg": (with_train(scheduler={"name": "StepLR", "args": {"gamma": 0.5}}),
                     r"train\.scheduler\.args: StepLR refuses \{'gamma': 0\.5\}: .*missing 1 "
                     r"required positional argument: 'step_size'"),
    "arg-string": (with_train(scheduler=one_cycle(max_lr="0.003")),
                   r"train\.scheduler\.args\.max_lr: expected a number, got the string '0\.003'; "
                   r"write it without quotes$"),
    "label_smoothing": (with_train(label_smoothing=1.5),
                        r"train\.label_smoothing: expected a value in \[0, 1\], got 1\.5"),
    "clip-zero": (with_train(clip_grad_norm=0),
                  r"train\.clip_grad_norm: expected a value in \(0, inf\], got 0"),
    "clip-text": (with_train(clip_grad_norm="max"),
                  r"train\.clip_grad_norm: expected a number, got the string 'max'"),
    "augment-type": (with_train(augment=1),
                     r"train\.augment: expected a mapping with the keys crop_padding, hflip"),
    "augment-key": (with_train(augment={"crop_padding": 0, "hflip": 0.0, "vflip": 0.5}),
                    r"unknown key\(s\) train\.augment\.vflip"),
    "augment-missing": (with_train(augment={"crop_padding": 1}),
                        r"missing key\(s\) train\.augment\.hflip"),
    "crop-negative": (with_train(augment={"crop_padding": -1, "hflip": 0.0}),
                      r"train\.augment\.crop_padding: expected a value in \[0, 28\], got -1"),
    "crop-float": (with_train(augment={"crop_padding": 1.5, "hflip": 0.0}),
                   r"train\.augment\.crop_padding: expected an integer, got 1\.5"),
    "hflip": (with_train(augment={"crop_padding": 0, "hflip": 2}),
              r"train\.augment\.hflip: expected a value in \[0, 1\], got 2"),
    "override-dataset": (with_overrides({"cifar10": {"train": {"epochs": 3}}}),
                         r"overrides\.cifar10: not a dataset of datasets: \(fashion-mnist, "
                         r"mnist\); remove it or add the dataset"),
    "override-type": (with_overrides(["mnist"]), r"overrides: expected a mapping of dataset "
                      r"names"),
    "override-dataset-type": (with_overrides({"mnist": 3}),
                              r"overrides\.mnist: expected a mapping of sections"),
    "override-section": (with_overrides({"mnist": {"optim": {"lr": 0.1}}}),
                         r"overrides\.mnist\.optim: unknown section; overrides set keys of "
                         r"model: and train:"),
    "override-key": (with_overrides({"mnist": {"train": {"lrr": 0.1}}}),
                     r"overrides\.mnist\.train: unknown key\(s\) overrides\.mnist\.train\.lrr"),
    "override-nested-key": (with_overrides({"mnist": {"train": {"augment": {"shift": 1}}}}),
                            r"unknown key\(s\) overrides\.mnist\.train\.augment\.shift"),
    "override-value": (with_overrides({"mnist": {"train": {"augment": {"crop_padding": -1}}}}),
                       r"^overrides\.mnist\.train\.augment\.crop_padding: expected a value in "
                       r"\[0, 28\], got -1$"),
    "override-model": (with_overrides({"fashion-mnist": {"model": {"dropout": 1.0}}}),
                       r"^overrides\.fashion-mnist\.model\.dropout: expected a value in "
                       r"\[0, 1\), got 1\.0$"),
    "override-args": (with_overrides({"mnist": {"train": {"scheduler": {"args": {"max_lr": 0}}}}}),
                      r"^overrides\.mnist\.train\.scheduler\.args\.max_lr: expected a value "
                      r"in \(0, inf\], got 0$"),
    "override-betas": (with_overrides({"mnist": {"train": {"betas": [0.9, 2]}}}),
                       r"^overrides\.mnist\.train\.betas\[1\]: expected a value in \[0, 1\)"),
}  # fmt: skip


@pytest.mark.parametrize(("params", "message"), RECIPE_ERRORS.values(), ids=RECIPE_ERRORS.keys())
def test_bad_recipe_values_are_one_line_naming_the_key(tmp_path, params, message):
    with pytest.raises(StageError, match=message) as info:
        check_params.main(["--params", write(tmp_path, params)])
    assert "\n" not in str(info.value)


def test_overrides_merge_into_one_dataset_only(tmp_path):
    path = write(tmp_path, COMMITTED)
    mnist, fashion = (recipe.resolved_params(d, path) for d in ("mnist", "fashion-mnist"))
    assert mnist["train"]["augment"] == {"crop_padding": 1, "hflip": 0.0}
    assert fashion["train"]["augment"] == {"crop_padding": 0, "hflip": 0.0}
    assert {k: v for k, v in mnist["train"].items() if k != "augment"} == {
        k: v for k, v in fashion["train"].items() if k != "augment"
    }
    assert mnist["model"] == fashion["model"] == recipe.model_params(path)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [({"args": {"max_lr": 0.005}}, {"name": "OneCycleLR", "args": {"max_lr": 0.005}}),
     ({"name": "CosineAnnealingLR"}, {"name": "CosineAnnealingLR", "args": {}}),
     ({"name": "StepLR", "args": {"step_size": 5}}, {"name": "StepLR", "args": {"step_size": 5}}),
     (None, None)],
    ids=["args-merge", "other-class-drops-the-args", "other-class-with-args", "null"],
)  # fmt: skip
def test_a_scheduler_override_merges_or_replaces(tmp_path, scheduler, expected):
    path = write(tmp_path, with_overrides({"mnist": {"train": {"scheduler": scheduler}}}))
    assert recipe.resolved_params("mnist", path)["train"]["scheduler"] == expected


def test_no_overrides_section_is_no_override(tmp_path):
    params = {name: COMMITTED[name] for name in STAGE_SECTIONS if name != "overrides"}
    path = write(tmp_path, params)
    assert recipe.resolved_params("mnist", path) == {
        "model": recipe.model_params(path), "train": recipe.train_params(path)
    }  # fmt: skip
    for empty in (None, {}, {"mnist": None}):
        path = write(tmp_path, with_overrides(empty))
        assert recipe.resolved_params("mnist", path)["train"] == recipe.train_params(path)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [({"name": "OneCycleLR", "args": {"max_lr": 0.003}},
      {"max_lr": 0.003, "epochs": 40, "steps_per_epoch": 469}),
     ({"name": "OneCycleLR", "args": {"max_lr": 0.003, "total_steps": 20000}},
      {"max_lr": 0.003, "total_steps": 20000}),
     ({"name": "CosineAnnealingLR", "args": {}}, {"T_max": 40}),
     ({"name": "CosineAnnealingLR", "args": {"T_max": 10, "eta_min": 0.0001}},
      {"T_max": 10, "eta_min": 0.0001}),
     ({"name": "StepLR", "args": {"step_size": 10}}, {"step_size": 10})],
    ids=["onecycle", "onecycle-total", "cosine", "cosine-given", "step"],
)  # fmt: skip
def test_scheduler_arguments_filled_from_train(scheduler, expected):
    train_p = {**recipe.check_train(COMMITTED["train"]), "scheduler": scheduler}
    assert recipe.scheduler_kwargs(train_p, steps_per_epoch=469) == expected


def test_a_one_cycle_shorter_than_the_training_is_refused():
    train_p = {
        **recipe.check_train(COMMITTED["train"]),
        "scheduler": {"name": "OneCycleLR", "args": {"max_lr": 0.003, "total_steps": 100}},
    }
    optimizer = recipe.build_optimizer([mininn.Parameter(np.zeros(1))], train_p)
    with pytest.raises(StageError, match=(
        r"^train\.scheduler\.args: OneCycleLR's cycle has 100 steps, fewer than the 18760 of "
        r"train\.epochs=40 x 469 batches; drop total_steps/epochs/steps_per_epoch"
    )):  # fmt: skip
        recipe.build_scheduler(optimizer, train_p, 469)


@pytest.mark.parametrize("name", list(recipe.SCHEDULERS))
def test_every_scheduler_can_be_named(tmp_path, name):
    needed = {"StepLR": {"step_size": 3}, "MultiStepLR": {"milestones": [5, 10]},
              "ExponentialLR": {"gamma": 0.9}, "OneCycleLR": {"max_lr": 0.01}}  # fmt: skip
    path = write(tmp_path, with_train(scheduler={"name": name, "args": needed.get(name, {})}))
    assert check_params.main(["--params", path]) == 0


def test_the_optimizer_gets_momentum_or_betas():
    train_p = recipe.check_train(COMMITTED["train"])
    params = [mininn.Parameter(np.zeros(1))]
    adamw = recipe.build_optimizer(params, {**train_p, "betas": [0.8, 0.9]})
    assert type(adamw).__name__ == "AdamW" and adamw.defaults["betas"] == (0.8, 0.9)
    assert adamw.defaults["weight_decay"] == 0.01
    sgd = recipe.build_optimizer(params, {**train_p, "optimizer": "sgd", "momentum": 0.5})
    assert sgd.defaults["momentum"] == 0.5 and "betas" not in sgd.defaults


def test_the_augmentation_is_seeded_from_train_seed_and_pads_black():
    train_p = {**recipe.check_train(COMMITTED["train"]), "seed": 7,
               "augment": {"crop_padding": 2, "hflip": 0.5}}  # fmt: skip
    transform = recipe.build_transform(train_p, fill=-0.5)
    crop, flip = transform.transforms
    assert (crop.padding, crop.fill, flip.p) == ((2, 2, 2, 2), -0.5, 0.5)
    for mine, seed in ((crop, recipe.CROP_SEED), (flip, recipe.FLIP_SEED)):
        expected = np.random.default_rng([7, seed]).bit_generator.state
        assert mine._generator.bit_generator.state == expected
    x = np.random.default_rng(0).normal(size=(64, 784))
    again = recipe.build_transform(train_p, fill=-0.5)
    np.testing.assert_array_equal(transform(x), again(x))  # the same seed: the same batches
    assert recipe.build_transform({**train_p, "augment": {"crop_padding": 0, "hflip": 0.0}},
                                  fill=0.0) is None  # fmt: skip


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
    [("prepare", ["prepare"]), ("train", ["model", "train", "overrides"]),
     ("baseline", ["model", "train", "overrides", "baseline"]),
     ("evaluate", ["model", "train", "overrides"]), ("compare", ["datasets"])],
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
        for out in DVC_YAML["stages"][name]["outs"] + DVC_YAML["stages"][name]["metrics"]:
            assert isinstance(out, str), f"{name}: {out}"


@pytest.mark.parametrize(("name", "folder"), [("train", ""), ("baseline", "/torch")])
def test_dvclive_metrics_are_declared_and_the_checkpoint_is_not(name, folder):
    stage = DVC_YAML["stages"][name]
    live = f"models/${{item.dataset}}{folder}/live"
    assert stage["metrics"] == [f"{live}/metrics.json"]
    assert {f"{live}/params.yaml", f"{live}/plots"} <= set(stage["outs"])
    assert not any("checkpoints" in out for out in stage["outs"])
    assert "/checkpoints/" in (PROJECT_ROOT / ".gitignore").read_text(encoding="utf-8")


@pytest.mark.parametrize("stage", [train, baseline], ids=["train", "baseline"])
def test_the_checkpoint_fingerprint_covers_the_stage_code_dvc_tracks(stage):
    name = stage.__name__.rsplit(".", 1)[1]
    deps = DVC_YAML["stages"][name]["deps"]
    assert sorted(stage.CODE) == sorted(d for d in deps if d.startswith("pipeline/"))
    assert "mininn" in deps  # checkpoint_file adds mininn/**/*.py


def test_baseline_depends_on_the_baselines_folder():
    assert "baselines" in DVC_YAML["stages"]["baseline"]["deps"]
    assert (PROJECT_ROOT / "baselines").is_dir()
    assert "/baselines/README.md" in (PROJECT_ROOT / ".dvcignore").read_text(encoding="utf-8")


def test_metrics_are_the_narrow_files_only():
    """`dvc metrics show` has a column per distinct key of every metrics file, and `dvc
    exp show` one per file for a key several files share (``<path>:<key>``): DVCLive's
    progress (step, val_accuracy) and evaluate's test accuracy, under a key per dataset;
    the data report, evaluate's and PyTorch's metrics and comparison.json are reports."""
    declared = set()
    for stage in DVC_YAML["stages"].values():
        for entry in stage.get("metrics", []):
            declared.add(entry if isinstance(entry, str) else next(iter(entry)))
    assert declared == {
        "models/${item.dataset}/live/metrics.json",
        "models/${item.dataset}/torch/live/metrics.json",
        "reports/${item.dataset}/accuracy.json",
    }


@pytest.mark.parametrize(
    "text", ["1e-05", "1.0e-3", "3e3", "-2E+2", "0.001", ".5", "1", "-7", ".inf", "true", "null"]
)
def test_params_are_read_as_dvc_reads_them(text):
    """YAML 1.2's numbers (DVC parses params.yaml with ruamel.yaml): ``1e-05`` is a
    float, where PyYAML's YAML 1.1 reads the string '1e-05'."""
    ruamel = pytest.importorskip("ruamel.yaml")
    theirs = ruamel.YAML(typ="safe", pure=True).load(f"x: {text}\n")["x"]
    ours = common.read_yaml(f"x: {text}\n")["x"]
    assert type(ours) is type(theirs) and (ours == theirs or ours != ours), (ours, theirs)


def test_a_small_float_set_by_dvc_exp_run_is_a_number(tmp_path):
    """`dvc exp run -S train.weight_decay=0.00001` writes ``weight_decay: 1e-05``."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    path = write(tmp_path, {name: COMMITTED[name] for name in STAGE_SECTIONS})
    hydra.apply_overrides(path, ["train.weight_decay=0.00001"])
    assert "weight_decay: 1e-05" in Path(path).read_text(encoding="utf-8")
    assert check_params.main(["--params", path]) == 0
    assert recipe.train_params(path)["weight_decay"] == 1e-05
