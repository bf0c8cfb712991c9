"""Reading a user's input file: the checks every reader makes before parsing.

One place, so that a missing file, a folder, or a binary/UTF-16 file gives the same one-line
``DataError`` (file, line, expected form) whichever reader met it.
"""

from __future__ import annotations

import os
from pathlib import Path

from experiments.errors import DataError


def read_input_bytes(path: str | os.PathLike[str], expected: str) -> bytes:
    """The file's bytes, refusing what no text reader can parse.

    Args:
        path: the input file.
        expected: the expected form, for messages (e.g. ``"UTF-8 text, one token per line"``).

    Raises:
        DataError: the file is missing (line ``None``), is a directory (line ``None``), or holds a NUL
            byte (the line of the first one; binary and UTF-16 files do).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(p, None, f"file not found; expected {expected}") from None
    except IsADirectoryError:
        raise DataError(p, None, f"is a directory; expected {expected}") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(
            p, data.count(b"\n", 0, nul) + 1, f"contains NUL bytes (a binary or UTF-16 file?); expected {expected}"
        )
    return data
