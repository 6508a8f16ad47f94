"""Check params.yaml whole before `dvc repro`: every section the stages read, every key.

    python pipeline/check_params.py [--params params.yaml]

Each stage checks its own sections when it runs. DVC, though, reads
``datasets:`` itself to expand the stages, before any stage runs: an empty
params.yaml, or one without ``datasets:``, fails inside DVC with "failed to parse
'stages.fetch.matrix' in 'dvc.yaml': Could not find 'datasets'". ``make repro``
runs this script first, so that such a file, an unknown dataset, a misspelt key
or a bad value is reported in one line naming params.yaml and the key. The sweep's
``tune:`` section must be there with a known ``tune.dataset``: DVC reads it for
``tune/dvc.yaml`` whatever command runs (the sweep checks the rest when it runs). Nothing
is written; exit status 0 when every section is valid, else 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

from mininn.data import DATASETS
from pipeline import common
from pipeline.common import StageError, run_stage
from pipeline.prepare import prepare_params
from pipeline.recipe import baseline_params, resolved_params


def check_datasets(path: str | Path | None = None) -> list[str]:
    """The ``datasets:`` list of params.yaml: non-empty, known names, no repeats."""
    datasets = common.load_params("datasets", path=path)
    if not isinstance(datasets, list) or not datasets:
        raise StageError(
            f"params.yaml: datasets: expected a non-empty list of dataset names, one per "
            f"line ('- mnist'), got {datasets!r}"
        )
    for name in datasets:
        common.check_dataset(name)
    repeated = sorted({name for name in datasets if datasets.count(name) > 1})
    if repeated:
        raise StageError(f"params.yaml: datasets: {repeated} listed more than once")
    return datasets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    datasets = check_datasets(args.params)
    prepare_params(args.params)
    for dataset in datasets:  # model:, train: and every dataset's overrides
        resolved_params(dataset, args.params)
    baseline_params(args.params)
    # DVC reads tune.dataset for tune/dvc.yaml whatever command runs (`dvc status`,
    # `dvc metrics show`); the rest of tune: is the sweep's to check when it runs, so
    # that a recipe its search space does not fit still trains.
    tune = common.load_params("tune", path=args.params)
    if not isinstance(tune, dict):
        raise StageError(f"params.yaml: expected 'tune:' to be a mapping, got {tune!r}")
    common.check_choice(tune.get("dataset"), "tune.dataset", sorted(DATASETS))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
