"""Configuration from environment variables, read in one place.

=================== ============================================ =========
variable            meaning                                      default
=================== ============================================ =========
MININN_LOG_LEVEL    level of the ``mininn`` logger               WARNING
MININN_INIT_MAP     variant of the activation-aware default      normal
                    initialisation: ``normal`` or ``uniform``
MININN_DATA_DIR     first folder searched for the IDX datasets   (unset)
=================== ============================================ =========

``LOG_LEVEL`` and ``INIT_MAP`` are read when this module is first imported;
assign the module's attributes (``mininn.config.INIT_MAP = "uniform"``) to change
them at run time. The data folder is read at each call of :func:`data_dir`, so a
process that sets ``MININN_DATA_DIR`` later is still heard.
"""

from __future__ import annotations

import logging
import os

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _read_choice(variable: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(variable, default).strip()
    if value.upper() in (c.upper() for c in choices):
        return next(c for c in choices if c.upper() == value.upper())
    raise ValueError(
        f"environment variable {variable}={value!r} is not one of {', '.join(choices)}; "
        f"unset it or set one of those"
    )


LOG_LEVEL: str = _read_choice("MININN_LOG_LEVEL", "WARNING", _LEVELS)
INIT_MAP: str = _read_choice("MININN_INIT_MAP", "normal", ("normal", "uniform"))
DATA_DIR_ENV = "MININN_DATA_DIR"


def data_dir() -> str | None:
    """The folder named by ``MININN_DATA_DIR``, or None when it is unset or empty."""
    return os.environ.get(DATA_DIR_ENV) or None


def get_logger(name: str = "mininn") -> logging.Logger:
    """Return a logger under ``mininn`` (standard ``logging``), at ``LOG_LEVEL``.

    A handler writing ``LEVEL name: message`` to stderr is attached to the
    ``mininn`` root logger once; applications may configure logging themselves.

    Example:
        >>> get_logger("mininn.training").name
        'mininn.training'
    """
    root = logging.getLogger("mininn")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(LOG_LEVEL)
    return logging.getLogger(name) if name.startswith("mininn") else root.getChild(name)
