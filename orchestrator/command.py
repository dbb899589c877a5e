"""The node contract's argv and environment, built without a shell.

``Exec`` is split like a POSIX shell would split it (quotes respected), then
``${Name}`` is expanded inside each token, so an expanded value is always part
of exactly one argument and nothing is ever interpreted by a shell unless the
Exec itself runs one.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from orchestrator.models import is_name

CONTAINER_ROOT = "/pipewell"
INPUT_DIR = f"{CONTAINER_ROOT}/in"
OUTPUT_DIR = f"{CONTAINER_ROOT}/out"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def split_exec(exec_line: str) -> list[str]:
    """Tokens of an Exec line; raises ValueError for an unbalanced quote."""
    return shlex.split(exec_line, posix=True)


def expand_argv(tokens: list[str], values: Mapping[str, str]) -> list[str]:
    """Replace ``${Name}`` in each token; unknown names are left as written."""

    def substitute(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [_PLACEHOLDER.sub(substitute, token) for token in tokens]


def env_name(prefix: str, name: str) -> str:
    """``INPUT_`` + ``input-image`` → ``INPUT_INPUT_IMAGE``."""
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def input_path(name: str, suffix: str) -> str:
    return f"{INPUT_DIR}/{_file_name(name, suffix)}"


def output_path(name: str, suffix: str) -> str:
    return f"{OUTPUT_DIR}/{_file_name(name, suffix)}"


def _file_name(name: str, suffix: str) -> str:
    # Validation refuses such names; this keeps a bad one from ever becoming a path.
    if not is_name(name):
        raise ValueError(f"{name[:80]!r} is not a valid input or output name")
    return f"{name}{suffix}"


def node_environment(
    inputs: Mapping[str, str], outputs: Mapping[str, str], flags: Mapping[str, str]
) -> dict[str, str]:
    """``INPUT_<NAME>``/``OUTPUT_<NAME>`` container paths and ``FLAG_<NAME>`` values."""
    env: dict[str, str] = {}
    env.update({env_name("INPUT_", k): v for k, v in inputs.items()})
    env.update({env_name("OUTPUT_", k): v for k, v in outputs.items()})
    env.update({env_name("FLAG_", k): v for k, v in flags.items()})
    return env


def placeholder_values(
    inputs: Mapping[str, str], outputs: Mapping[str, str], flags: Mapping[str, str]
) -> dict[str, str]:
    """Values for ``${Name}``: inputs win over outputs, outputs over flags."""
    return {**flags, **outputs, **inputs}


__all__ = [
    "INPUT_DIR",
    "OUTPUT_DIR",
    "env_name",
    "expand_argv",
    "input_path",
    "node_environment",
    "output_path",
    "placeholder_values",
    "split_exec",
]
