"""Save and load state dicts as ``.npz`` archives, without pickle.

The file is the archive ``numpy.savez`` writes (a zip of ``.npy`` members, one
per key, in the dict's order), so ``numpy.load`` reads it too. No Python
objects are pickled on save or unpickled on load: a file from an untrusted
source cannot run code.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["load", "save"]

_ZIP_MAGIC = b"PK\x03\x04"


def _as_array(key: Any, value: Any) -> np.ndarray:
    if not isinstance(key, str):
        raise TypeError(f"save: state_dict keys must be str, got {key!r} ({type(key).__name__})")
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        kind = "an object array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        raise TypeError(
            f"save: value of key {key!r} is {kind}; only numeric ndarrays and numbers can be "
            "saved without pickle (convert it with np.asarray(..., dtype=float))"
        )
    return value


def save(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state_dict`` to ``path`` as an ``.npz`` archive, atomically.

    The archive is written to a temporary file in the same folder and renamed
    onto ``path``, so a reader never sees half a file and a failure leaves
    nothing behind. The file is written at exactly ``path`` (``numpy.savez``
    would append ``.npz`` to a name without it).

    Args:
        state_dict: ``{name: array}``, e.g. ``model.state_dict()``; values are
            ndarrays (not of dtype object) or Python/NumPy numbers. Key order is kept.
        path: the file to write; its folder must exist.
    Raises:
        TypeError: ``state_dict`` is not a mapping (e.g. a Module: pass
            ``model.state_dict()``), a key is not a str, or a value is not an array
            or number.
        FileNotFoundError: the folder of ``path`` does not exist.
    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "model.weights")
        >>> save({"weight": np.eye(2), "step": 3}, path)
        >>> {k: v.tolist() for k, v in load(path).items()}
        {'weight': [[1.0, 0.0], [0.0, 1.0]], 'step': 3}
    """
    if not isinstance(state_dict, Mapping):
        hint = " (pass model.state_dict())" if hasattr(state_dict, "state_dict") else ""
        raise TypeError(
            f"save: expected a mapping of names to arrays, got {type(state_dict).__name__}{hint}"
        )
    arrays = [(key, _as_array(key, value)) for key, value in state_dict.items()]
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save: folder {folder!r} of {path!r} does not exist; create it")
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            # What np.savez does, member by member: np.savez(file, **arrays) would
            # reject keys named "file" or "allow_pickle".
            with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED) as archive:
                for key, array in arrays:
                    with archive.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # as open() would create it; mkstemp gives 0600
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def load(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Read a state dict written by :func:`save` (or ``numpy.savez``), without pickle.

    Args:
        path: the ``.npz`` file.
    Returns:
        ``OrderedDict`` of ``{name: ndarray}`` in the saved order; numbers come back
        as 0-d arrays. Pass it to ``model.load_state_dict``.
    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is not an ``.npz`` archive, is corrupt, or holds a
            pickled (object) array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no file at {path!r}; check the path (written by save?)")
    with open(path, "rb") as file:
        magic = file.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:
        raise ValueError(
            f"load: {path!r} is not an .npz archive (it does not start with a zip header); "
            "mininn.load reads files written by mininn.save or numpy.savez"
        )
    state: OrderedDict[str, np.ndarray] = OrderedDict()
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                try:
                    state[key] = archive[key]
                except ValueError as error:
                    if "allow_pickle" in str(error):  # numpy refuses object arrays
                        raise ValueError(
                            f"load: array {key!r} in {path!r} holds pickled Python objects, "
                            "which are not loaded for safety; save numeric arrays only"
                        ) from error
                    raise ValueError(
                        f"load: array {key!r} in {path!r} is corrupt: {error}"
                    ) from error
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"load: {path!r} is a corrupt .npz archive: {error}") from error
    return state
