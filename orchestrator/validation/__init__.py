"""Validation of a submitted flow: every problem at once, each with a code and a fix.

:func:`validate` never stops at the first problem: it returns a
:class:`ValidationResult` whose ``errors`` (the flow must not run) and
``warnings`` (it may) are :class:`ValidationEntry` objects, each with a
``code``, a ``message`` saying what to change, and where it is (``node``,
``edge``, ``well``, ``store``, ``field``; ``None`` ones are left out of JSON).

Codes are Pupload's (``FLOW_``, ``NODE_``, ``EDGE_``, ``WELL_``, ``STORE_``,
``TYPE_``) plus Pipewell's own, marked "ours" in :data:`CODES`.

Implicit wells (Pipewell's choice)
----------------------------------
A flow that declares **no** ``DataWells`` at all still runs, as in the seed:
every input edge that no node produces gets an implied ``upload`` well, and
every output edge that no node consumes gets an implied sink well, both in the
default store (:func:`default_store_name`). So ``EDGE_001``/``EDGE_002`` never
fire for such a flow. As soon as the flow declares **any** ``DataWell``,
nothing is implied: each entry edge needs its own upload (or static, webhook)
well and each final output its own well, else ``EDGE_001``/``EDGE_002`` say
which well to add. :func:`effective_wells` gives the wells a run uses.

Object keys
-----------
A well's ``Key`` is a template of ``${RUN_ID}``, ``${FLOW_NAME}``, ``${EDGE}``,
``${TIMESTAMP}``, ``${DATE}``, ``${YEAR}``, ``${MONTH}``, ``${DAY}``,
``${UUID}`` (``$NAME`` without braces is read too, as Pupload's Go does).
Without a Key, :data:`DEFAULT_KEY_TEMPLATE`. :func:`expand_key` replaces every
character of a value that is not a letter, digit, ``.``, ``_``, ``:`` or ``-``
by ``_`` (and an empty or all-dots value by underscores), so a template that
passes ``WELL_005`` always expands to a key inside its bucket. ``TIMESTAMP`` is
Pupload's RFC 3339 form in UTC (``2026-03-03T10:30:05Z``).

The other helpers a run needs (:func:`resolve_defs`, :func:`topological_order`,
:func:`effective_wells`, :func:`default_store_name`, :func:`expand_key`) are
pure and expect a flow that validated.

Collections
-----------
Which edges carry collections and which nodes map over them is decided by
:func:`~orchestrator.validation.collections.collection_shape`, for validation and
planning alike; the ``COLL_`` codes report what a flow asks for that does not fit it.

The package's modules: ``results`` (entries, codes), ``wells`` (stores, effective
wells), ``object_keys`` (Key templates), ``defs`` (NodeDef lookup), ``flags`` (flag
declarations and values), ``graph`` (order, cycles), ``collections`` (collection edges,
mapped nodes) and the ``checks`` package (the pass): ``checks.context`` (the submission
as every check reads it) and one module per topic, ``names``, ``stores``, ``nodedefs``,
``nodes``, ``edges``, ``wells`` and ``collections``.
"""

from orchestrator.validation.checks import validate
from orchestrator.validation.defs import resolve_defs
from orchestrator.validation.graph import topological_order
from orchestrator.validation.object_keys import (
    DEFAULT_KEY_TEMPLATE,
    KEY_VARIABLES,
    expand_key,
    key_values,
    tenant_prefix,
)
from orchestrator.validation.results import CODES, ValidationEntry, ValidationResult
from orchestrator.validation.wells import (
    DEFAULT_STORE,
    PRODUCING_SOURCES,
    STORE_TYPES,
    WELL_SOURCES,
    StorePolicy,
    default_store_name,
    effective_wells,
)

__all__ = [
    "CODES",
    "DEFAULT_KEY_TEMPLATE",
    "DEFAULT_STORE",
    "KEY_VARIABLES",
    "PRODUCING_SOURCES",
    "STORE_TYPES",
    "StorePolicy",
    "WELL_SOURCES",
    "ValidationEntry",
    "ValidationResult",
    "default_store_name",
    "effective_wells",
    "expand_key",
    "key_values",
    "resolve_defs",
    "tenant_prefix",
    "topological_order",
    "validate",
]
