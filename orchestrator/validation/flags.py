"""Whether a flag's value fits what its NodeDef declares: type, allowed values, range.

Flags reach a node as text (argv and environment), so a value is checked as the
text it will be. An empty value means "not set" to the catalog's nodes, so it
passes every check but ``Required``.
"""

from __future__ import annotations

import math
import re

from orchestrator.models import BOOLEAN_WORDS, FlagDef, FlagType

_INTEGER = re.compile(r"-?[0-9]+")
# Plain decimal notation only: "1e3", "+5", "inf" and "0x10" are refused, as a node's
# parser may refuse them or read them otherwise than the user meant.
_NUMBER = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)")

FLAG_TYPES = tuple(t.value for t in FlagType)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def definition_problem(flag_def: FlagDef) -> str | None:
    """What is wrong with the declaration itself (DEF_002), or None."""
    if flag_def.type not in FLAG_TYPES:
        return f"Type {flag_def.type!r} is not a flag type; use one of {', '.join(FLAG_TYPES)}"
    ranged = flag_def.min is not None or flag_def.max is not None
    if ranged and flag_def.type not in (FlagType.INTEGER, FlagType.NUMBER):
        return f"Min and Max apply to integer and number flags, not to {flag_def.type}"
    if flag_def.values is not None and flag_def.type == FlagType.BOOLEAN:
        return "Values does not apply to a boolean flag (it takes true or false)"
    if flag_def.min is not None and flag_def.max is not None and flag_def.min > flag_def.max:
        return f"Min {_number(flag_def.min)} is greater than Max {_number(flag_def.max)}"
    for value in flag_def.values or ():
        problem = value_problem(flag_def, value, check_values=False)
        if problem:
            return f"its Values include {value!r}, which {problem}"
    if flag_def.default is not None:
        problem = value_problem(flag_def, flag_def.default)
        if problem:
            return f"its Default {flag_def.default!r} {problem}"
    return None


def value_problem(flag_def: FlagDef, value: str, *, check_values: bool = True) -> str | None:
    """Why ``value`` does not fit ``flag_def`` (a phrase to follow the value), or None.

    A flag of an unknown Type takes anything: its declaration is reported instead.
    """
    text = value.strip()
    if not text:
        return None
    kind = flag_def.type
    if kind == FlagType.BOOLEAN:
        if text.lower() not in BOOLEAN_WORDS:
            return "is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"
        return None
    if check_values and flag_def.values is not None and text not in flag_def.values:
        choices = ", ".join(map(repr, flag_def.values))
        return f"is not one of the values it takes: {choices}"
    if kind == FlagType.INTEGER:
        if not _INTEGER.fullmatch(text):
            return "is not an integer; write a whole number such as 800"
        number: float = int(text)
    elif kind == FlagType.NUMBER:
        if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
            return "is not a number; write a decimal such as 0.5"
        number = float(text)
    else:
        return None
    low, high = flag_def.min, flag_def.max
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            return f"is out of range; use {_number(low)} to {_number(high)}"
        if low is not None:
            return f"is too small; use {_number(low)} or more"
        return f"is too large; use {_number(high)} or less"  # type: ignore[arg-type]
    return None


__all__ = ["FLAG_TYPES", "definition_problem", "value_problem"]
