"""Durations as people write them in config and flows: ``90s``, ``30m``, ``12h``, ``30d``,
``2w``, or a number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
DURATION_RULE = "a duration: seconds (3600), or a number with s, m, h, d or w (90s, 30m, 12h, 30d)"


def parse_duration(value: str | int | float) -> float:
    """Seconds of ``value``; ValueError (saying how to write one) for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_RULE}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValueError(f"{value!r} is not {DURATION_RULE}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not {DURATION_RULE} above zero")
    return seconds


def describe_duration(seconds: float) -> str:
    """``2592000`` → ``30d``: the largest unit that divides it, else seconds."""
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


__all__ = ["DURATION_RULE", "describe_duration", "parse_duration"]
