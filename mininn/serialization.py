"""Save and load state dicts and nested checkpoints as ``.npz`` archives, without pickle.

The file is the archive ``numpy.savez`` writes (a zip of ``.npy`` members), so
``numpy.load`` reads it too. A flat state dict (``{str: ndarray}``, e.g.
``model.state_dict()``) is stored as it always was: one member per key, in the
dict's order. Anything else, such as a training checkpoint::

    {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
     "scheduler": scheduler.state_dict(), "epoch": 3, "history": [...]}

is stored as one member per array, named by its place in the tree (e.g.
``optimizer/state/0/exp_avg``), plus a member ``__mininn_structure__``: the tree
itself as UTF-8 JSON, in which numbers, strings, bools and None are written out
and each array is named. Dict keys may be str or int (the optimizer's parameter
indices) and keep their type; tuples stay tuples; NumPy scalars keep their dtype.

No Python objects are pickled on save or unpickled on load: a file from an
untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["load", "save"]

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"  # an archive without members, e.g. save({})
#: The member that holds the JSON tree of a nested checkpoint.
_STRUCTURE = "__mininn_structure__"
_FORMAT = "mininn.checkpoint"
_VERSION = 1
_SUPPORTED = (
    "arrays (not of dtype object), numbers, str, bool, None, and dicts, lists and tuples of them"
)


def _where(path: tuple) -> str:
    return "".join(f"[{key!r}]" for key in path) or "the top level"


def _is_flat_state_dict(obj: Any) -> bool:
    """A ``{str: ndarray}`` mapping: saved as one member per key, as it always was."""
    return (
        isinstance(obj, Mapping)
        and _STRUCTURE not in obj
        and all(isinstance(key, str) for key in obj)
        and all(isinstance(value, np.ndarray) for value in obj.values())
    )


class _Encoder:
    """Walk a tree of containers: scalars go into the JSON tree, arrays into members."""

    def __init__(self) -> None:
        self.arrays: list[tuple[str, np.ndarray]] = []
        self._names: set[str] = {_STRUCTURE}
        self._open: set[int] = set()  # containers on the current path (cycle check)

    def _member(self, path: tuple, array: np.ndarray) -> str:
        if array.dtype.hasobject:
            raise TypeError(
                f"save: value at {_where(path)} is an object array; only {_SUPPORTED} can be "
                "saved without pickle (convert it with np.asarray(..., dtype=float))"
            )
        base = "/".join(str(key) for key in path) or "array"
        name, copy = base, 1
        while name in self._names:  # e.g. a key "a/b" beside {"a": {"b": ...}}
            name, copy = f"{base}~{copy}", copy + 1
        self._names.add(name)
        self.arrays.append((name, array))
        return name

    def encode(self, value: Any, path: tuple = ()) -> Any:
        if isinstance(value, np.ndarray):
            return {"array": self._member(path, value)}
        if isinstance(value, np.generic):  # before float: np.float64 is a float
            return {"scalar": self._member(path, np.asarray(value))}
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)):
            return int(value) if isinstance(value, int) else float(value)
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in self._open:
                raise ValueError(f"save: the value at {_where(path)} contains itself")
            self._open.add(id(value))
            try:
                if isinstance(value, Mapping):
                    return {"dict": [[self._key(key, path), self.encode(item, (*path, key))]
                                     for key, item in value.items()]}  # fmt: skip
                items = [self.encode(item, (*path, i)) for i, item in enumerate(value)]
                return {"list" if isinstance(value, list) else "tuple": items}
            finally:
                self._open.discard(id(value))
        hint = " (pass model.state_dict())" if hasattr(value, "state_dict") else ""
        raise TypeError(
            f"save: value at {_where(path)} is a {type(value).__name__}{hint}; only {_SUPPORTED} "
            "can be saved without pickle"
        )

    @staticmethod
    def _key(key: Any, path: tuple) -> str | int:
        if isinstance(key, str):
            return key
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return int(key)
        raise TypeError(
            f"save: dict keys must be str or int, got {key!r} ({type(key).__name__}) at "
            f"{_where(path)}"
        )


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a state dict or a nested checkpoint to ``path`` as an ``.npz`` archive, atomically.

    The archive is written to a temporary file in the same folder and renamed
    onto ``path``, so a reader never sees half a file and a failure leaves
    nothing behind (an existing file stays as it was). The file is written at
    exactly ``path`` (``numpy.savez`` would append ``.npz`` to a name without it).

    Args:
        obj: a flat state dict ``{name: ndarray}`` (e.g. ``model.state_dict()``),
            stored one member per key in its order; or any tree of dicts (str or
            int keys), lists and tuples whose leaves are ndarrays (not of dtype
            object), NumPy scalars, Python bool, int, float, str or None.
        path: the file to write; its folder must exist.
    Raises:
        TypeError: a leaf is of another type (e.g. a Module: pass
            ``model.state_dict()``), an object array, or a dict key is neither str
            nor int.
        ValueError: a container contains itself.
        FileNotFoundError: the folder of ``path`` does not exist.
    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "model.weights")
        >>> save({"weight": np.eye(2)}, path)
        >>> {k: v.tolist() for k, v in load(path).items()}
        {'weight': [[1.0, 0.0], [0.0, 1.0]]}
        >>> save({"model": {"w": np.ones(2)}, "state": {0: {"step": 3}}, "best": None}, path)
        >>> checkpoint = load(path)
        >>> checkpoint["state"], checkpoint["best"], checkpoint["model"]["w"].tolist()
        ({0: {'step': 3}}, None, [1.0, 1.0])
    """
    if _is_flat_state_dict(obj):
        arrays = list(obj.items())
        for key, value in arrays:
            _Encoder()._member((key,), value)  # refuses object arrays
    else:
        if not isinstance(obj, (Mapping, list, tuple)) and hasattr(obj, "state_dict"):
            raise TypeError(
                f"save: expected a state dict or a nested dict/list of arrays, got "
                f"{type(obj).__name__} (pass model.state_dict())"
            )
        encoder = _Encoder()
        root = encoder.encode(obj)
        tree = json.dumps({"format": _FORMAT, "version": _VERSION, "root": root})
        arrays = [*encoder.arrays, (_STRUCTURE, np.frombuffer(tree.encode(), dtype=np.uint8))]
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


def load(path: str | os.PathLike) -> Any:
    """Read what :func:`save` (or ``numpy.savez``) wrote, without pickle.

    Args:
        path: the ``.npz`` file.
    Returns:
        For a flat state dict (and any ``.npz`` without mininn's structure entry,
        e.g. from ``numpy.savez``): an ``OrderedDict`` of ``{name: ndarray}`` in the
        saved order, to pass to ``model.load_state_dict``. For a nested checkpoint:
        the saved tree, as dicts (with their str and int keys, in order), lists,
        tuples, ndarrays, NumPy scalars (same dtype), and Python bool, int, float,
        str and None.
    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is not an ``.npz`` archive, is corrupt, holds a pickled
            (object) array, or its structure entry is not one this version reads.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no file at {path!r}; check the path (written by save?)")
    with open(path, "rb") as file:
        magic = file.read(len(_ZIP_MAGIC))
    if magic not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
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
    if _STRUCTURE not in state:
        return state
    return _decode_checkpoint(state, path)


def _decode_checkpoint(members: dict[str, np.ndarray], path: str) -> Any:
    def malformed(why: str) -> ValueError:
        return ValueError(
            f"load: {path!r} has a malformed {_STRUCTURE} entry ({why}); the file is corrupt "
            "or was not written by mininn.save"
        )

    raw = members.pop(_STRUCTURE)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise malformed(f"expected UTF-8 bytes, got an array of {raw.dtype} {raw.shape}")
    try:
        tree = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise malformed(f"not JSON: {error}") from error
    if not isinstance(tree, dict) or tree.get("format") != _FORMAT or "root" not in tree:
        raise malformed("no mininn.checkpoint header")
    if tree.get("version") != _VERSION:
        raise ValueError(
            f"load: {path!r} is a mininn checkpoint of version {tree.get('version')!r}; this "
            f"mininn reads version {_VERSION}: upgrade mininn"
        )

    def decode(node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise malformed(f"unexpected node {node!r:.80}")
        ((kind, content),) = node.items()
        if kind in ("array", "scalar"):
            if content not in members:
                raise malformed(f"no member {content!r}")
            return members[content] if kind == "array" else members[content][()]
        if kind == "dict" and isinstance(content, list):
            if not all(isinstance(item, list) and len(item) == 2 for item in content):
                raise malformed("a dict entry is not a [key, value] pair")
            return {key: decode(value) for key, value in content}
        if kind in ("list", "tuple") and isinstance(content, list):
            items = [decode(item) for item in content]
            return items if kind == "list" else tuple(items)
        raise malformed(f"unknown node kind {kind!r}")

    return decode(tree["root"])
