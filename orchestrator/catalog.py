"""The built-in NodeDefs (``nodedefs/*.yaml``): usable by name without sending them."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.models import NodeDef

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "nodedefs"

# libyaml's safe loader where PyYAML was built with it: the service reads the
# catalog at every start, and the pure-Python loader takes 25 ms over it, libyaml 3.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_catalog(directory: Path = BUILTIN_DIR) -> dict[str, NodeDef]:
    """NodeDefs keyed ``publisher/name``; a broken file stops the service with its name."""
    catalog: dict[str, NodeDef] = {}
    if not directory.is_dir():
        return catalog
    for path in sorted(directory.glob("*.y*ml")):
        try:
            node_def = NodeDef.model_validate(yaml.load(path.read_text(), Loader=_SafeLoader))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"built-in NodeDef {path} is invalid: {exc}") from exc
        catalog[node_def.uses] = node_def
    return catalog


__all__ = ["BUILTIN_DIR", "load_catalog"]
