"""Stage fetch@<dataset>: the four raw IDX files, SHA-256 verified, uncompressed.

    python pipeline/fetch.py --dataset mnist --out data/raw/mnist

Inputs: the first source that serves verified files (see ``mininn.data.fetch``):
``$MININN_DATA_DIR``, ``../shared/datasets``, ``/usr/share/datasets/<dataset>``,
the publishers' addresses. Output: ``--out``, a folder of four uncompressed IDX
files, byte-identical whichever source served them. Params: none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

from mininn.data import DATASETS, DatasetNotFoundError, fetch
from pipeline import common
from pipeline.common import StageError, run_stage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    args = parser.parse_args(argv)
    info = common.check_dataset(args.dataset, DATASETS)
    common.remove_stale_siblings(args.out)  # fetch writes a .NAME.tmp-<pid> folder beside it
    try:
        fetch(info, args.out, progress=not args.no_progress)
    except DatasetNotFoundError as exc:
        raise StageError(str(exc)) from exc
    print(f"fetch: {args.dataset} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
