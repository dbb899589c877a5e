"""Object key templates: their variables, their checks, and their expansion."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.models import is_name
from storage.base import InvalidKey, check_key

DEFAULT_KEY_TEMPLATE = "${RUN_ID}/${EDGE}"
KEY_VARIABLES = (
    "RUN_ID",
    "FLOW_NAME",
    "EDGE",
    "TIMESTAMP",
    "DATE",
    "YEAR",
    "MONTH",
    "DAY",
    "UUID",
)
# Variables that differ between two runs started in the same second.
PER_RUN_VARIABLES = ("RUN_ID", "UUID")
# The longest value of each variable (names are at most 128 characters).
_LONGEST = {
    "RUN_ID": 32,
    "FLOW_NAME": 128,
    "EDGE": 128,
    "TIMESTAMP": 20,
    "DATE": 10,
    "YEAR": 4,
    "MONTH": 2,
    "DAY": 2,
    "UUID": 32,
}
#: Longest key a template may expand to; the tenant's namespace comes on top.
MAX_EXPANDED_KEY = 768
#: Where a tenant's objects live in the service's own stores.
TENANTS_ROOT = "tenants"


def tenant_prefix(tenant: str) -> str:
    """``tenants/<tenant>``: the namespace of a tenant's objects in the service's stores.

    A tenant that is not a name (made before tenants had to be) gets a digest of
    it, which no name can equal ('~' is not in a name).
    """
    if is_name(tenant):
        return f"{TENANTS_ROOT}/{tenant}"
    return f"{TENANTS_ROOT}/~{hashlib.sha256(tenant.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class _Var:
    name: str


_KEY_TOKEN = re.compile(
    r"\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<open>\$\{)|(?P<lone>\$)"
)


def _parse_key(template: str) -> tuple[list[str | _Var], list[str]]:
    """Literal text and variables of a key template, and syntax problems."""
    pieces: list[str | _Var] = []
    problems: list[str] = []
    position = 0
    for match in _KEY_TOKEN.finditer(template):
        if match.start() > position:
            pieces.append(template[position : match.start()])
        position = match.end()
        name = match.group("braced")
        if name is None:
            name = match.group("bare")
        if name is not None:
            pieces.append(_Var(name))
        elif match.group("open"):
            problems.append("'${' is not closed by '}'")
        else:
            problems.append("a '$' starts no variable (write ${NAME})")
    if position < len(template):
        pieces.append(template[position:])
    return pieces, problems


def key_variables(template: str) -> list[str]:
    return [p.name for p in _parse_key(template)[0] if isinstance(p, _Var)]


_UNSAFE_IN_VALUE = re.compile(r"[^A-Za-z0-9._:-]")


def _safe_value(value: str) -> str:
    value = _UNSAFE_IN_VALUE.sub("_", value)
    if value.strip(".") == "":
        return "_" * max(1, len(value))
    return value


def key_values(
    *, run_id: str, flow_name: str, edge: str, now: datetime, uuid: str
) -> dict[str, str]:
    """The value of each key variable (before making them safe for a key)."""
    moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return {
        "RUN_ID": run_id,
        "FLOW_NAME": flow_name,
        "EDGE": edge,
        "TIMESTAMP": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "DATE": moment.strftime("%Y-%m-%d"),
        "YEAR": moment.strftime("%Y"),
        "MONTH": moment.strftime("%m"),
        "DAY": moment.strftime("%d"),
        "UUID": uuid,
    }


def expand_key(
    template: str, *, run_id: str, flow_name: str, edge: str, now: datetime, uuid: str
) -> str:
    """The object key a template names for one run and edge.

    ``now`` is read in UTC (a naive datetime is taken as UTC); ``TIMESTAMP`` is
    ``YYYY-MM-DDTHH:MM:SSZ``. Values are made key-safe (see the module notes).
    Raises ValueError for an unknown variable or a malformed template.
    """
    pieces, problems = _parse_key(template)
    if problems:
        raise ValueError(f"key template {template!r}: {problems[0]}")
    values = key_values(run_id=run_id, flow_name=flow_name, edge=edge, now=now, uuid=uuid)
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, _Var):
            if piece.name not in values:
                raise ValueError(f"key template {template!r}: unknown variable ${{{piece.name}}}")
            out.append(_safe_value(values[piece.name]))
        else:
            out.append(piece)
    return "".join(out)


def key_problem(template: str) -> str | None:
    """Why a key template is not acceptable (WELL_005), or None."""
    pieces, problems = _parse_key(template)
    unknown = sorted({p.name for p in pieces if isinstance(p, _Var)} - set(KEY_VARIABLES))
    reasons = list(dict.fromkeys(problems))
    if unknown:
        names = ", ".join(f"${{{name}}}" for name in unknown)
        allowed = ", ".join(f"${{{name}}}" for name in KEY_VARIABLES)
        reasons.append(f"unknown variable {names} (allowed: {allowed})")
    if not problems and not unknown:
        sample = "".join("x" * _LONGEST[p.name] if isinstance(p, _Var) else p for p in pieces)
        if len(sample) > MAX_EXPANDED_KEY:
            reasons.append(
                f"the key may be at most {MAX_EXPANDED_KEY} characters once its variables are "
                "filled in at their longest"
            )
        try:
            check_key(sample)
        except InvalidKey:
            reasons.append(
                "the key must stay inside its bucket: a relative path with no leading '/', "
                "no '..', '.' or empty segments, no backslash, segments of at most 255 "
                "characters, and only letters, digits and . _ - + = @ , : ~ outside variables"
            )
    return "; ".join(reasons) or None


__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "KEY_VARIABLES",
    "MAX_EXPANDED_KEY",
    "PER_RUN_VARIABLES",
    "expand_key",
    "key_problem",
    "key_values",
    "key_variables",
    "tenant_prefix",
]
