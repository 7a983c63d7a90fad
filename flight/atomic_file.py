"""Durable file replacement: write a temporary file, fsync it, rename it over the target.

A reader sees the old file or the whole new one, never a torn one; a failed write leaves no
temporary file behind. ``fsync_directory`` makes the rename itself durable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: Path, write: Callable[[BinaryIO], object], temp: Path | None = None) -> None:
    """Replace ``path`` with what ``write(handle)`` writes (via ``temp``, default ``.<name>.tmp``)."""
    temp = temp if temp is not None else path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
