"""Skyfield timescale and planetary ephemeris, both from installed files: never the network.

Loading de421 by bare file name, or a non-built-in timescale, would try to download; the timescale here uses
skyfield's built-in leap-second and Delta T tables, and the ephemeris is the de421.bsp shipped in
the skyfield-data package, opened by path.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path

from skyfield.api import load, load_file
from skyfield.jpllib import SpiceKernel
from skyfield.timelib import Timescale


@functools.lru_cache(maxsize=1)
def timescale() -> Timescale:
    return load.timescale(builtin=True)


def ephemeris_path() -> Path:
    """Path of the de421.bsp inside the installed skyfield-data package."""
    path = Path(str(importlib.resources.files("skyfield_data") / "data" / "de421.bsp"))
    if not path.is_file():
        raise FileNotFoundError(f"de421.bsp not found at {path}; is skyfield-data installed?")
    return path


@functools.lru_cache(maxsize=1)
def ephemeris() -> SpiceKernel:
    return load_file(str(ephemeris_path()))
