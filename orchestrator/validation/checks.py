"""Every check of a submission, in one pass that reports every problem at once."""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from orchestrator.command import split_exec
from orchestrator.mime import intersects, is_valid_mime
from orchestrator.models import (
    NAME_RULE,
    DataWell,
    EdgeDef,
    FlowSubmission,
    Node,
    NodeDef,
    StoreInput,
    is_name,
)
from orchestrator.tiers import TIERS
from orchestrator.validation.defs import EMPTY_CATALOG, DefLookup
from orchestrator.validation.flags import definition_problem, value_problem
from orchestrator.validation.graph import Graph
from orchestrator.validation.object_keys import (
    DEFAULT_KEY_TEMPLATE,
    KEY_VARIABLES,
    PER_RUN_VARIABLES,
    expand_key,
    key_problem,
    key_variables,
)
from orchestrator.validation.results import (
    ValidationEntry,
    ValidationResult,
    duplicated_ids,
    node_label,
    quote_list,
)
from orchestrator.validation.wells import (
    DEFAULT_STORE,
    PRODUCING_SOURCES,
    STORE_TYPES,
    WELL_SOURCES,
    StorePolicy,
    default_store_name,
    effective_wells,
)
from storage import S3_PARAMS

#: How long a flow's own store may make the service wait: seconds to connect and to
#: read, and tries per call (the service's own stores take what the operator sets).
FLOW_STORE_BOUNDS = {"connect_timeout": 5, "read_timeout": 30, "max_attempts": 3}

_TIER_EXAMPLES = ("c-nano", "c-small", "c-large", "m-small", "gn-small")


class _Validator:
    def __init__(
        self,
        submission: FlowSubmission,
        catalog: Mapping[str, NodeDef],
        store_types: tuple[str, ...],
        stores: StorePolicy,
    ) -> None:
        self.submission = submission
        self.flow = submission.flow
        self.defs = DefLookup(submission.node_defs, catalog)
        self.store_types = store_types
        self.stores = stores
        self.result = ValidationResult()
        flow = self.flow
        self.producers: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.consumers: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, node in enumerate(flow.nodes):
            for binding in node.outputs:
                self.producers[binding.edge].append((i, binding.name))
            for binding in node.inputs:
                self.consumers[binding.edge].append((i, binding.name))
        self.used_edges = list(
            dict.fromkeys(b.edge for n in flow.nodes for b in (*n.inputs, *n.outputs))
        )
        self.declared_stores = {s.name for s in flow.stores}
        self.duplicated = duplicated_ids(flow.nodes)
        # Per submitted def: whether its Type lists are all valid (for EDGE_003).
        self.types_ok: dict[int, bool] = {}

    # -------------------------------------------------------------- plumbing

    def error(self, code: str, message: str, **where: str | None) -> None:
        self.result.errors.append(ValidationEntry(code=code, message=message, **where))

    def warning(self, code: str, message: str, **where: str | None) -> None:
        self.result.warnings.append(ValidationEntry(code=code, message=message, **where))

    def node_name(self, index: int) -> str:
        node = self.flow.nodes[index]
        return f"node {node_label(node, index, node.id in self.duplicated)}"

    def run(self) -> ValidationResult:
        if not self.flow.nodes:
            self.error(
                "FLOW_002", "the flow has no nodes, so nothing would run; add at least one node"
            )
        self.check_names()
        self.check_stores()
        self.check_defs()
        self.check_node_ids()
        for index, node in enumerate(self.flow.nodes):
            self.check_node(index, node)
        self.check_edges()
        self.check_wells()
        self.check_key_collisions()
        for entry in Graph(self.flow.nodes).cycle_entries():
            self.result.errors.append(entry)
        return self.result

    # -------------------------------------------------------------- names

    def check_names(self) -> None:
        """NAME_001: every name that becomes a path, a directory or a variable is an identifier."""
        for field, what, name, where in self.named_things():
            if not is_name(name):
                shown = name if len(name) <= 80 else name[:80] + "…"
                self.error(
                    "NAME_001",
                    f"{what} {shown!r} is not a valid name: {NAME_RULE}. Names become file "
                    "names and environment variables, never paths",
                    field=field,
                    **where,
                )

    def named_things(self) -> Iterable[tuple[str, str, str, dict[str, str | None]]]:
        """(field, what it is, the name, where-fields) of every name the submission gives."""
        flow = self.flow
        for i, store in enumerate(flow.stores):
            yield f"Flow.Stores.{i}.Name", "store name", store.name, {"store": store.name}
        if flow.default_store is not None:
            yield (
                "Flow.DefaultStore",
                "DefaultStore",
                flow.default_store,
                {"store": flow.default_store},
            )
        template = flow.default_data_well
        if template is not None and template.store is not None:
            yield (
                "Flow.DefaultDataWell.Store",
                "store name",
                template.store,
                {"store": template.store},
            )
        for i, well in enumerate(flow.data_wells):
            yield f"Flow.DataWells.{i}.Edge", "edge name", well.edge, {"edge": well.edge}
            if well.store is not None:
                yield f"Flow.DataWells.{i}.Store", "store name", well.store, {"store": well.store}
        for i, node in enumerate(flow.nodes):
            where = f"Flow.Nodes.{i}"
            # An empty ID is NODE_008's business.
            if node.id:
                yield f"{where}.ID", "node ID", node.id, {"node": node.id}
            node_id = node.id or None
            for plural, bindings in (("Inputs", node.inputs), ("Outputs", node.outputs)):
                for k, binding in enumerate(bindings):
                    what = f"{plural[:-1].lower()} name"
                    yield f"{where}.{plural}.{k}.Name", what, binding.name, {"node": node_id}
                    yield (
                        f"{where}.{plural}.{k}.Edge",
                        "edge name",
                        binding.edge,
                        {"node": node_id, "edge": binding.edge},
                    )
            for k, flag in enumerate(node.flags):
                yield f"{where}.Flags.{k}.Name", "flag name", flag.name, {"node": node_id}
            if node.command is not None:
                yield f"{where}.Command", "command name", node.command, {"node": node_id}
        for i, node_def in enumerate(self.submission.node_defs):
            where = f"NodeDefs.{i}"
            for plural, declared in (("Inputs", node_def.inputs), ("Outputs", node_def.outputs)):
                for k, edge_def in enumerate(declared):
                    what = f"{plural[:-1].lower()} name"
                    yield f"{where}.{plural}.{k}.Name", what, edge_def.name, {}
            for k, flag_def in enumerate(node_def.flags):
                yield f"{where}.Flags.{k}.Name", "flag name", flag_def.name, {}
            if node_def.command is not None:
                yield f"{where}.Command.Name", "command name", node_def.command.name, {}
            for k, command_def in enumerate(node_def.commands):
                yield f"{where}.Commands.{k}.Name", "command name", command_def.name, {}

    # -------------------------------------------------------------- stores

    def store_known(self, name: str) -> bool:
        return name in self.declared_stores or name in self.stores.operator_stores

    def check_stores(self) -> None:
        flow = self.flow
        seen: dict[str, int] = {}
        for i, store in enumerate(flow.stores):
            where = f"Flow.Stores.{i}"
            if store.name in seen:
                self.error(
                    "STORE_005",
                    f"store name {store.name!r} is declared twice (Flow.Stores.{seen[store.name]} "
                    f"and {where}); give each store its own Name",
                    store=store.name,
                    field=f"{where}.Name",
                )
            else:
                seen[store.name] = i
            if store.name in self.stores.operator_stores:
                self.error(
                    "STORE_005",
                    f"store name {store.name!r} is one of this service's stores; name it in "
                    "a DataWell without declaring it, or give your own store another Name",
                    store=store.name,
                    field=f"{where}.Name",
                )
            if store.type not in self.store_types:
                self.error(
                    "STORE_002",
                    f"store {store.name!r} has Type {store.type!r}; use one of "
                    f"{', '.join(self.store_types)}",
                    store=store.name,
                    field=f"{where}.Type",
                )
            elif store.type == "local":
                self.error(
                    "STORE_006",
                    f"store {store.name!r}: a flow cannot declare a local store (it would live "
                    f"in the service's own data directory); use one of this service's stores, "
                    f"{quote_list(sorted(self.stores.operator_stores))}, by name in a DataWell",
                    store=store.name,
                    field=f"{where}.Type",
                )
            elif store.type == "s3":
                self.check_s3_store(store, where)
        if flow.default_store is not None and not self.store_known(flow.default_store):
            self.error(
                "STORE_001",
                f"DefaultStore names store {flow.default_store!r}, which is not declared; "
                f"declare it in Stores or use one of {quote_list(self.store_choices())}",
                store=flow.default_store,
                field="Flow.DefaultStore",
            )
        template = flow.default_data_well
        if template is not None and template.store is not None:
            if not self.store_known(template.store):
                self.error(
                    "STORE_001",
                    f"DefaultDataWell.Store names store {template.store!r}, which is not "
                    f"declared; declare it in Stores or use one of "
                    f"{quote_list(self.store_choices())}",
                    store=template.store,
                    field="Flow.DefaultDataWell.Store",
                )
        used = {default_store_name(flow)}
        used.update(w.store for w in flow.data_wells if w.store)
        if template is not None and template.store:
            used.add(template.store)
        for i, store in enumerate(flow.stores):
            if store.name not in used and seen.get(store.name) == i:
                self.warning(
                    "STORE_004",
                    f"store {store.name!r} is declared but no DataWell, DefaultStore or "
                    "DefaultDataWell uses it; name it in a well's Store or remove it",
                    store=store.name,
                    field=f"Flow.Stores.{i}",
                )

    def check_s3_store(self, store: StoreInput, where: str) -> None:
        """A flow's own s3 store: its bucket, its credentials, an endpoint the operator allows."""
        params = store.params
        about = {"store": store.name}
        bucket = params.get("bucket")
        if not isinstance(bucket, str) or not bucket.strip():
            self.error(
                "STORE_003",
                f"s3 store {store.name!r} needs Params.bucket, the name of its bucket "
                '(e.g. {"bucket": "my-bucket"})',
                field=f"{where}.Params.bucket",
                **about,
            )
        unknown = sorted(set(params) - S3_PARAMS)
        if unknown:
            self.error(
                "STORE_003",
                f"s3 store {store.name!r} has unknown Params {quote_list(unknown)}; known: "
                f"{quote_list(sorted(S3_PARAMS), limit=20)}",
                field=f"{where}.Params",
                **about,
            )
        allowed = self.stores.flow_store_endpoints
        if not allowed:
            self.error(
                "STORE_006",
                f"store {store.name!r}: this service does not let flows declare stores of their "
                f"own; use one of its stores, {quote_list(sorted(self.stores.operator_stores))}, "
                "by name in a DataWell (its operator can allow endpoints in "
                "storage.flow_store_endpoints)",
                field=f"{where}.Type",
                **about,
            )
            return
        for secret in ("access_key_id", "secret_access_key"):
            value = params.get(secret)
            if not isinstance(value, str) or not value:
                self.error(
                    "STORE_006",
                    f"s3 store {store.name!r} needs Params.{secret}: a flow's own store carries "
                    "its own credentials, the service never lends it its own",
                    field=f"{where}.Params.{secret}",
                    **about,
                )
        self.check_flow_store_bounds(store, where)
        for param in ("endpoint_url", "public_endpoint_url"):
            endpoint = params.get(param)
            if endpoint is None and param == "public_endpoint_url":
                continue
            if not isinstance(endpoint, str) or endpoint.rstrip("/") not in allowed:
                self.error(
                    "STORE_006",
                    f"s3 store {store.name!r}: Params.{param} must be one of the endpoints this "
                    f"service lets flows use: {quote_list(sorted(allowed))}",
                    field=f"{where}.Params.{param}",
                    **about,
                )

    def check_flow_store_bounds(self, store: StoreInput, where: str) -> None:
        """A flow's store may not hold the service's threads (or its shutdown) for long.

        Its calls run on the service's threads: each try is bounded, and so are the
        tries; it may not create buckets (its owner does that, once).
        """
        params, about = store.params, {"store": store.name}
        for param, most in FLOW_STORE_BOUNDS.items():
            value = params.get(param)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= most
            ):
                self.error(
                    "STORE_006",
                    f"s3 store {store.name!r}: Params.{param} must be a number over 0 and at most "
                    f"{most:g} for a flow's own store (got {str(value)[:40]!r})",
                    field=f"{where}.Params.{param}",
                    **about,
                )
        if params.get("create_bucket") not in (None, False):
            self.error(
                "STORE_006",
                f"s3 store {store.name!r}: a flow's own store may not create its bucket; create "
                f"{params.get('bucket')!r} once with your own tools and leave out create_bucket",
                field=f"{where}.Params.create_bucket",
                **about,
            )

    def store_choices(self) -> list[str]:
        operator = sorted(self.stores.operator_stores - {DEFAULT_STORE})
        declared = sorted(self.declared_stores - self.stores.operator_stores)
        return [DEFAULT_STORE, *operator, *declared]

    # -------------------------------------------------------------- node defs

    def check_defs(self) -> None:
        first: dict[str, int] = {}
        for i, node_def in enumerate(self.submission.node_defs):
            where = f"NodeDefs.{i}"
            if node_def.uses in first:
                j = first[node_def.uses]
                earlier = self.submission.node_defs[j]
                if earlier.model_dump(exclude={"id"}) != node_def.model_dump(exclude={"id"}):
                    self.error(
                        "DEF_001",
                        f"NodeDefs.{j} and {where} are both {node_def.uses!r} but differ; "
                        "keep one, or give the other its own Publisher/Name",
                        field=where,
                    )
            else:
                first[node_def.uses] = i
            for k, flag_def in enumerate(node_def.flags):
                problem = definition_problem(flag_def)
                if problem:
                    self.error(
                        "DEF_002",
                        f"NodeDef {node_def.uses!r} flag {flag_def.name!r}: {problem}",
                        field=f"{where}.Flags.{k}",
                    )
            ok = True
            for direction, declared in (("Inputs", node_def.inputs), ("Outputs", node_def.outputs)):
                for k, edge_def in enumerate(declared):
                    place = f"{where}.{direction}.{k}"
                    ok = self.check_type(node_def, place, direction[:-1].lower(), edge_def) and ok
            self.types_ok[id(node_def)] = ok

    def check_type(self, node_def: NodeDef, where: str, kind: str, edge_def: EdgeDef) -> bool:
        what = f"NodeDef {node_def.uses!r} {kind} {edge_def.name!r}"
        if edge_def.type is None:
            return True
        if not edge_def.type:
            self.error(
                "TYPE_002",
                f"{what} has an empty Type list, which "
                'no file can satisfy; list MIME types (e.g. ["image/png"]) or leave Type '
                "out to accept anything",
                field=f"{where}.Type",
            )
            return False
        bad = [t for t in edge_def.type if not is_valid_mime(t)]
        if bad:
            self.error(
                "TYPE_001",
                f"{what} has invalid MIME type(s) "
                f"{quote_list(bad)}; write type/subtype (e.g. 'image/png'), a family "
                "('image/*') or '*/*'",
                field=f"{where}.Type",
            )
            return False
        return True

    # -------------------------------------------------------------- nodes

    def check_node_ids(self) -> None:
        positions: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.flow.nodes):
            if not node.id:
                self.error(
                    "NODE_008",
                    f"node #{i} has no ID; give it a unique ID such as "
                    f"{(node.uses.rpartition('/')[2] or 'node') + f'-{i + 1}'!r}",
                    field=f"Flow.Nodes.{i}.ID",
                )
            else:
                positions[node.id].append(i)
        for node_id, where in positions.items():
            if len(where) > 1:
                places = ", ".join(f"Flow.Nodes.{i}" for i in where)
                self.error(
                    "NODE_007",
                    f"node ID {node_id!r} is used by {len(where)} nodes ({places}); "
                    "give each node its own ID",
                    node=node_id,
                    field=f"Flow.Nodes.{where[1]}.ID",
                )

    def check_node(self, index: int, node: Node) -> None:
        where = f"Flow.Nodes.{index}"
        who = self.node_name(index)
        node_id = node.id or None
        self.check_duplicate_bindings(index, node)
        node_def = self.defs.get(node.uses)
        if node_def is None:
            self.error(
                "NODE_001",
                self.defs.missing_message(node),
                node=node_id,
                field=f"{where}.Uses",
            )
            return
        uses = node_def.uses
        if node_def.tier not in TIERS:
            close = difflib.get_close_matches(node_def.tier, list(TIERS), n=2)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            sample = [t for t in _TIER_EXAMPLES if t in TIERS]
            self.error(
                "NODE_004",
                f"{who} uses NodeDef {uses!r}, whose Tier {node_def.tier!r} is not a known "
                f"tier{hint}; use one of {', '.join(sample)}, … ({len(TIERS)} tiers: c-*, m-*, "
                "g-*, gn-*, ga-*, gi-*)",
                node=node_id,
                field=f"{where}.Uses",
            )
        for direction, bound, declared, code in (
            ("input", node.inputs, node_def.inputs, "NODE_002"),
            ("output", node.outputs, node_def.outputs, "NODE_003"),
        ):
            names = {b.name for b in bound}
            plural = direction.capitalize() + "s"
            for edge_def in declared:
                if edge_def.required and edge_def.name not in names:
                    self.error(
                        code,
                        f"{who} does not bind the required {direction} {edge_def.name!r} of "
                        f'{uses!r}; add {{"Name": "{edge_def.name}", "Edge": "…"}} to '
                        f"its {plural}",
                        node=node_id,
                        field=f"{where}.{plural}",
                    )
            if declared:
                known = [d.name for d in declared]
                for k, binding in enumerate(bound):
                    if binding.name not in known:
                        self.error(
                            "NODE_010",
                            f"{who} binds {direction} {binding.name!r}, which {uses!r} does not "
                            f"declare; use one of {quote_list(known)}",
                            node=node_id,
                            edge=binding.edge,
                            field=f"{where}.{plural}.{k}.Name",
                        )
        given = {f.name for f in node.flags}
        for flag_def in node_def.flags:
            if flag_def.required and flag_def.default is None and flag_def.name not in given:
                self.error(
                    "NODE_005",
                    f"{who} does not set the required flag {flag_def.name!r} of {uses!r}; add "
                    f'{{"Name": "{flag_def.name}", "Value": "…"}} to its Flags',
                    node=node_id,
                    field=f"{where}.Flags",
                )
        if node_def.flags:
            declared_flags = {f.name: f for f in node_def.flags}
            for k, flag in enumerate(node.flags):
                flag_def = declared_flags.get(flag.name)
                if flag_def is None:
                    self.error(
                        "NODE_006",
                        f"{who} sets flag {flag.name!r}, which {uses!r} does not declare; use "
                        f"one of {quote_list(declared_flags)}",
                        node=node_id,
                        field=f"{where}.Flags.{k}.Name",
                    )
                    continue
                problem = value_problem(flag_def, flag.value)
                if problem is None and flag_def.required and not flag.value.strip():
                    problem = "is empty, and the flag is required"
                if problem:
                    self.error(
                        "NODE_012",
                        f"{who} sets flag {flag.name!r} to {flag.value!r}, which {problem}"
                        + (f" ({flag_def.description})" if flag_def.description else ""),
                        node=node_id,
                        field=f"{where}.Flags.{k}.Value",
                    )
        self.check_command(index, node, node_def)

    def check_duplicate_bindings(self, index: int, node: Node) -> None:
        who = self.node_name(index)
        for plural, names in (
            ("Inputs", [b.name for b in node.inputs]),
            ("Outputs", [b.name for b in node.outputs]),
            ("Flags", [f.name for f in node.flags]),
        ):
            seen: set[str] = set()
            for k, name in enumerate(names):
                if name in seen:
                    self.error(
                        "NODE_011",
                        f"{who} lists {name!r} twice in its {plural}; keep one",
                        node=node.id or None,
                        field=f"Flow.Nodes.{index}.{plural}.{k}.Name",
                    )
                seen.add(name)

    def check_command(self, index: int, node: Node, node_def: NodeDef) -> None:
        who = self.node_name(index)
        field = f"Flow.Nodes.{index}.Command"
        commands = node_def.all_commands()
        names = [c.name for c in commands]
        if node.command is not None:
            chosen = [c for c in commands if c.name == node.command]
            if not chosen:
                fix = (
                    f"use one of {quote_list(names)}"
                    if names
                    else "remove Command: the image's own command runs"
                )
                self.error(
                    "NODE_009",
                    f"{who} asks for Command {node.command!r}, which {node_def.uses!r} does "
                    f"not have; {fix}",
                    node=node.id or None,
                    field=field,
                )
                return
            command = chosen[0]
        elif len(commands) > 1:
            self.error(
                "NODE_009",
                f"{node_def.uses!r} has {len(commands)} commands, so {who} must choose one; set "
                f"its Command to one of {quote_list(names)}",
                node=node.id or None,
                field=field,
            )
            return
        elif commands:
            command = commands[0]
        else:
            return
        try:
            tokens = split_exec(command.exec)
        except ValueError as exc:
            self.error(
                "NODE_009",
                f"{who} runs command {command.name!r} of {node_def.uses!r}, whose Exec "
                f"{command.exec!r} cannot be split into arguments ({exc}); balance its quotes",
                node=node.id or None,
                field=field,
            )
            return
        if not tokens:
            self.error(
                "NODE_009",
                f"{who} runs command {command.name!r} of {node_def.uses!r}, whose Exec is empty; "
                "write the program and its arguments, or remove the command",
                node=node.id or None,
                field=field,
            )

    # -------------------------------------------------------------- edges

    def check_edges(self) -> None:
        wells = effective_wells(self.flow)
        well_sources: dict[str, list[str | None]] = defaultdict(list)
        for well in wells:
            well_sources[well.edge].append(well.source)
        for edge in self.used_edges:
            producers = self.producers.get(edge, [])
            consumers = self.consumers.get(edge, [])
            sources = well_sources.get(edge, [])
            well_fed = [s for s in sources if s in PRODUCING_SOURCES]
            # An invalid Source is WELL_001's business: do not pile edge errors on it.
            odd_source = any(s is not None and s not in WELL_SOURCES for s in sources)
            sink = any(s in (None, "none") for s in sources)
            if len(producers) > 1:
                names = [f"{self.node_name(i)} (output {out!r})" for i, out in producers]
                self.error(
                    "EDGE_004",
                    f"edge {edge!r} is produced by both {' and '.join(names)}; an edge has one "
                    "producer: bind one of these outputs to another edge",
                    edge=edge,
                    node=self.flow.nodes[producers[1][0]].id or None,
                )
            if producers and well_fed:
                i, out = producers[0]
                self.error(
                    "EDGE_004",
                    f"edge {edge!r} is produced by both {self.node_name(i)} (output {out!r}) and "
                    f"a DataWell with Source {well_fed[0]!r}; remove the well's Source to only "
                    "store the output, or bind the output to another edge",
                    edge=edge,
                    node=self.flow.nodes[i].id or None,
                    well=edge,
                )
            if consumers and not producers and not well_fed and not odd_source:
                i, name = consumers[0]
                self.error(
                    "EDGE_001",
                    f"edge {edge!r} is read by {self.node_name(i)} (input {name!r}) but nothing "
                    'produces it; add a DataWell {"Edge": "' + edge + '", "Source": '
                    '"upload"} (or "static" with a Key), or bind a node output to it',
                    edge=edge,
                    node=self.flow.nodes[i].id or None,
                )
            if producers and not consumers and not sink and not well_fed and not odd_source:
                i, name = producers[0]
                self.error(
                    "EDGE_002",
                    f"edge {edge!r} is produced by {self.node_name(i)} (output {name!r}) but "
                    'nothing consumes or stores it; add a DataWell {"Edge": "' + edge + '"} '
                    "to keep it, or bind it to a node input",
                    edge=edge,
                    node=self.flow.nodes[i].id or None,
                )
            if producers and consumers and not well_fed:
                self.check_edge_types(edge, producers, consumers)

    def edge_types(self, index: int, name: str, output: bool) -> tuple[bool, list[str] | None]:
        """(usable, Type list) of a node's bound input/output; unusable: no def or bad types."""
        node_def = self.defs.get(self.flow.nodes[index].uses)
        if node_def is None or not self.types_ok.get(id(node_def), True):
            return False, None
        for edge_def in node_def.outputs if output else node_def.inputs:
            if edge_def.name == name:
                return True, edge_def.type
        return True, None

    def check_edge_types(
        self, edge: str, producers: list[tuple[int, str]], consumers: list[tuple[int, str]]
    ) -> None:
        for p, out in producers:
            usable, made = self.edge_types(p, out, output=True)
            if not usable or made is None:
                continue
            for c, name in consumers:
                usable, accepted = self.edge_types(c, name, output=False)
                if not usable or accepted is None or intersects(made, accepted):
                    continue
                self.error(
                    "EDGE_003",
                    f"edge {edge!r} carries {', '.join(made)} from {self.node_name(p)} (output "
                    f"{out!r}) but {self.node_name(c)} input {name!r} accepts only "
                    f"{', '.join(accepted)}; connect outputs and inputs whose types overlap",
                    edge=edge,
                    node=self.flow.nodes[c].id or None,
                )

    # -------------------------------------------------------------- wells

    def check_wells(self) -> None:
        flow = self.flow
        used = set(self.used_edges)
        positions: dict[str, list[int]] = defaultdict(list)
        for i, well in enumerate(flow.data_wells):
            where = f"Flow.DataWells.{i}"
            positions[well.edge].append(i)
            if well.source is not None and well.source not in WELL_SOURCES:
                self.error(
                    "WELL_001",
                    f"the DataWell on edge {well.edge!r} has Source {well.source!r}; use one of "
                    f"{', '.join(WELL_SOURCES)} (or leave Source out to only store a node's "
                    "output)",
                    well=well.edge,
                    edge=well.edge,
                    field=f"{where}.Source",
                )
            if well.edge not in used:
                close = difflib.get_close_matches(well.edge, self.used_edges, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(
                    "WELL_002",
                    f"the DataWell on edge {well.edge!r} names an edge no node uses{hint}; "
                    f"use one of {quote_list(self.used_edges)} or remove the well",
                    well=well.edge,
                    edge=well.edge,
                    field=f"{where}.Edge",
                )
            if well.store is not None and not self.store_known(well.store):
                self.error(
                    "WELL_004",
                    f"the DataWell on edge {well.edge!r} names store {well.store!r}, which is "
                    f"not declared; declare it in Stores or use one of "
                    f"{quote_list(self.store_choices())}",
                    well=well.edge,
                    store=well.store,
                    field=f"{where}.Store",
                )
            self.check_well_key(well, where)
        for edge, where in positions.items():
            if len(where) > 1:
                places = ", ".join(f"Flow.DataWells.{i}" for i in where)
                self.error(
                    "WELL_003",
                    f"edge {edge!r} has {len(where)} DataWells ({places}); keep one",
                    well=edge,
                    edge=edge,
                    field=f"Flow.DataWells.{where[1]}",
                )
        template = flow.default_data_well
        if template is not None and template.key is not None:
            field = "Flow.DefaultDataWell.Key"
            problem = key_problem(template.key)
            if problem:
                self.error(
                    "WELL_005",
                    f"DefaultDataWell Key {template.key!r} is invalid: {problem}",
                    field=field,
                )
            elif not key_variables(template.key):
                self.error(
                    "WELL_008",
                    f"DefaultDataWell Key {template.key!r} uses no variable, so every edge of "
                    "every run would overwrite one object; include ${RUN_ID} and ${EDGE}",
                    field=field,
                )

    def check_well_key(self, well: DataWell, where: str) -> None:
        key, source = well.key, well.source
        field = f"{where}.Key"
        about: dict[str, str | None] = {"well": well.edge, "edge": well.edge, "field": field}
        if source == "static" and not key:
            self.error(
                "WELL_006",
                f"the static DataWell on edge {well.edge!r} has no Key; set Key to the object "
                'that already exists in the store (e.g. "models/weights.bin")',
                **about,
            )
            return
        if key is None:
            return
        if key == "":
            self.error(
                "WELL_005",
                f"the DataWell on edge {well.edge!r} has an empty Key; remove Key to use "
                f"{DEFAULT_KEY_TEMPLATE!r} or write one",
                **about,
            )
            return
        problem = key_problem(key)
        if problem:
            self.error(
                "WELL_005",
                f"the DataWell on edge {well.edge!r} has Key {key!r}, which is invalid: {problem}",
                **about,
            )
        variables = key_variables(key)
        if source == "static":
            if variables:
                names = ", ".join(f"${{{v}}}" for v in dict.fromkeys(variables))
                self.error(
                    "WELL_007",
                    f"the static DataWell on edge {well.edge!r} has Key {key!r}, which uses "
                    f"{names}; a static Key names one existing object: write it literally",
                    **about,
                )
            return
        if problem:
            return
        known = [v for v in variables if v in KEY_VARIABLES]
        per_run = [v for v in known if v in PER_RUN_VARIABLES]
        if source in ("upload", "webhook"):
            if not known:
                self.error(
                    "WELL_008",
                    f"the {source} DataWell on edge {well.edge!r} has Key {key!r}, which uses "
                    "no variable: every run would overwrite the same object; include "
                    '${RUN_ID} (e.g. "uploads/${RUN_ID}/${EDGE}")',
                    **about,
                )
            elif not per_run:
                self.warning(
                    "WELL_008",
                    f"the {source} DataWell on edge {well.edge!r} has Key {key!r}, which has no "
                    "${RUN_ID} or ${UUID}: runs started close together would overwrite each "
                    "other's object",
                    **about,
                )
        elif source in (None, "none") and not known:
            self.warning(
                "WELL_008",
                f"the DataWell on edge {well.edge!r} has Key {key!r}, which uses no variable: "
                "each run replaces the previous run's object (fine for a 'latest' copy; add "
                "${RUN_ID} to keep every run's)",
                **about,
            )

    def check_key_collisions(self) -> None:
        """WELL_009: two edges a run writes must not land on one (store, key)."""
        flow = self.flow
        wells = {w.edge: w for w in effective_wells(flow)}
        template_well = flow.default_data_well
        default_store = default_store_name(flow)
        moment = datetime(2000, 1, 1, tzinfo=UTC)
        targets: dict[tuple[str, str], list[str]] = defaultdict(list)
        for n, edge in enumerate(self.used_edges):
            well = wells.get(edge)
            if well is not None and well.source == "static":
                continue  # read, never written
            store = (
                (well and well.store) or (template_well and template_well.store) or default_store
            )
            key = (well and well.key) or (template_well and template_well.key)
            key = key or DEFAULT_KEY_TEMPLATE
            if key_problem(key):
                continue
            expanded = expand_key(
                key, run_id="run", flow_name=flow.name, edge=edge, now=moment, uuid=f"uuid{n}"
            )
            targets[(store, expanded)].append(edge)
        for (store, key), edges in targets.items():
            if len(edges) > 1:
                self.error(
                    "WELL_009",
                    f"edges {quote_list(edges)} would all be stored as {key!r} in store "
                    f"{store!r} and overwrite each other; put ${{EDGE}} in their Key",
                    edge=edges[1],
                    store=store,
                )


def validate(
    submission: FlowSubmission,
    *,
    catalog: Mapping[str, NodeDef] | None = EMPTY_CATALOG,
    store_types: Iterable[str] = STORE_TYPES,
    stores: StorePolicy | None = None,
    max_nodes: int | None = None,
) -> ValidationResult:
    """Every problem of a submission, errors and warnings, in one result.

    NodeDefs are looked up in the submission's ``NodeDefs`` first, then in
    ``catalog`` (keys ``publisher/name``). ``store_types`` are the store Types
    this service can open; ``stores`` what flows may use here (by default: the
    ``default`` store only, no store of their own). A flow of over ``max_nodes``
    nodes gets FLOW_003 alone: nothing else of it is checked, nor would run.
    """
    nodes = len(submission.flow.nodes)
    if max_nodes is not None and nodes > max_nodes:
        return ValidationResult(
            errors=[
                ValidationEntry(
                    code="FLOW_003",
                    message=f"the flow has {nodes} nodes, over this service's limit of "
                    f"{max_nodes} (max_flow_nodes); split it into flows of at most {max_nodes}, "
                    "or ask its operator for a higher limit",
                    field="Flow.Nodes",
                )
            ]
        )
    return _Validator(
        submission, catalog or EMPTY_CATALOG, tuple(store_types), stores or StorePolicy()
    ).run()


__all__ = ["validate"]
