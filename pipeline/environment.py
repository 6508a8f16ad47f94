"""Run a stage in the project's Python environment, whatever ``python`` is first on PATH.

DVC runs each stage's ``cmd`` (``python pipeline/<stage>.py ...``) with the first
``python`` on ``PATH``: ``.venv/bin/dvc repro`` without an activated environment
starts the system Python, which lacks the pipeline's packages. Each stage script
calls :func:`ensure_environment` before its first third-party import: when the
running Python lacks a package and the project's ``.venv`` exists, the stage
starts again with ``.venv``'s Python (same arguments, same working folder);
otherwise it stops with one line naming the fix, instead of a traceback.

Standard library only: this module runs before anything else is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("numpy", "yaml", "pyarrow", "sklearn", "matplotlib", "seaborn")
"""Import names of the packages every stage may need (from requirements.txt)."""
MIN_PYTHON = (3, 10)
_GUARD = "MININN_STAGE_PYTHON"  # set before switching, so a broken .venv cannot loop


def venv_python(root: Path = PROJECT_ROOT) -> Path:
    """The interpreter of the project's virtual environment (``make setup`` creates it).

    ``dvc exp run --temp`` and queued experiments (``dvc exp run --queue``) run the
    stages in a copy of the project under ``<project>/.dvc/tmp/exps/``, which holds
    only what git tracks, so no ``.venv``: there, the project's own ``.venv`` is used.
    """
    name = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    own = root / ".venv" / name
    for exps in root.parents:
        if exps.parts[-3:] == (".dvc", "tmp", "exps"):
            project = exps.parents[2] / ".venv" / name
            return project if project.is_file() and not own.is_file() else own
    return own


def missing_packages(names: Sequence[str] = REQUIRED) -> list[str]:
    """The names among ``names`` that the running Python cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def ensure_environment(root: Path = PROJECT_ROOT, names: Sequence[str] = REQUIRED) -> None:
    """Return if this Python can run the stage; else switch to ``.venv``'s Python, or exit 1.

    Raises:
        SystemExit: (status 1) neither this Python nor ``.venv``'s has the packages;
            one line on stderr names the interpreter, what it lacks and the fix.
    """
    missing = missing_packages(names)
    if sys.version_info < MIN_PYTHON:
        missing.insert(0, f"Python >= {'.'.join(map(str, MIN_PYTHON))}")
    if not missing:
        return
    target = venv_python(root)
    if target.is_file() and os.environ.get(_GUARD) != str(target):
        os.environ[_GUARD] = str(target)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(str(target), [str(target), *sys.argv])
    script = Path(sys.argv[0]).name or "stage"
    fix = (
        "run `make setup` (it recreates .venv)"
        if os.environ.get(_GUARD) == str(target)
        else "run `make setup` to create .venv (the stages then use it whatever `python` is "
        "on PATH), or `make repro` instead of `dvc repro`"
    )
    sys.stderr.write(
        f"error: {script}: the Python running it ({sys.executable}) lacks "
        f"{', '.join(missing)}; {fix}\n"
    )
    raise SystemExit(1)
