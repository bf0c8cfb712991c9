"""Errors the user can act on.

Every failure caused by the user's input (a data file, a config value, a model name) is raised as an
``ExperimentsError`` subclass whose message names the file, the line or row, and what was expected.
The entry point turns these into one readable line on stderr and exit code 2, instead of a traceback
from deep inside a library.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ExperimentsError", "DataError", "ConfigError", "ModelLoadError", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class ExperimentsError(Exception):
    """Base class of errors caused by user input; the CLI exits with code 2 on these."""

    exit_code = EXIT_USER_ERROR


class DataError(ExperimentsError, ValueError):
    """A data file is malformed.

    Args:
        path: the file that is wrong.
        line: 1-based line (or row) number, or ``None`` when the problem is the whole file.
        message: what is wrong and what was expected instead.
    """

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(ExperimentsError, ValueError):
    """A configuration value or combination is impossible; raised before any training starts."""


class ModelLoadError(ExperimentsError, OSError):
    """A pretrained model or tokenizer could not be loaded (not cached and not reachable, or missing)."""


class Interrupted(ExperimentsError):
    """The run was stopped by SIGTERM (a scheduler's pre-emption, ``kill``): the resume state was saved but the
    run did not finish, so the CLI exits 143 (128 + SIGTERM) instead of reporting success."""

    exit_code = 143
