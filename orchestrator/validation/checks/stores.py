"""STORE_*: the stores a flow declares or names, and what a flow's own store may do."""

from __future__ import annotations

from orchestrator.models import StoreInput
from orchestrator.validation.checks.context import CheckContext
from orchestrator.validation.results import quote_list
from orchestrator.validation.wells import default_store_name
from storage import S3_PARAMS

#: How long a flow's own store may make the service wait: seconds to connect and to
#: read, and tries per call (the service's own stores take what the operator sets).
FLOW_STORE_BOUNDS = {"connect_timeout": 5, "read_timeout": 30, "max_attempts": 3}


def check(ctx: CheckContext) -> None:
    flow = ctx.flow
    seen: dict[str, int] = {}
    for i, store in enumerate(flow.stores):
        where = f"Flow.Stores.{i}"
        if store.name in seen:
            ctx.error(
                "STORE_005",
                f"store name {store.name!r} is declared twice (Flow.Stores.{seen[store.name]} "
                f"and {where}); give each store its own Name",
                store=store.name,
                field=f"{where}.Name",
            )
        else:
            seen[store.name] = i
        if store.name in ctx.stores.operator_stores:
            ctx.error(
                "STORE_005",
                f"store name {store.name!r} is one of this service's stores; name it in "
                "a DataWell without declaring it, or give your own store another Name",
                store=store.name,
                field=f"{where}.Name",
            )
        if store.type not in ctx.store_types:
            ctx.error(
                "STORE_002",
                f"store {store.name!r} has Type {store.type!r}; use one of "
                f"{', '.join(ctx.store_types)}",
                store=store.name,
                field=f"{where}.Type",
            )
        elif store.type == "local":
            ctx.error(
                "STORE_006",
                f"store {store.name!r}: a flow cannot declare a local store (it would live "
                f"in the service's own data directory); use one of this service's stores, "
                f"{quote_list(sorted(ctx.stores.operator_stores))}, by name in a DataWell",
                store=store.name,
                field=f"{where}.Type",
            )
        elif store.type == "s3":
            _check_s3_store(ctx, store, where)
    if flow.default_store is not None and not ctx.store_known(flow.default_store):
        ctx.error(
            "STORE_001",
            f"DefaultStore names store {flow.default_store!r}, which is not declared; "
            f"declare it in Stores or use one of {quote_list(ctx.store_choices())}",
            store=flow.default_store,
            field="Flow.DefaultStore",
        )
    template = flow.default_data_well
    if template is not None and template.store is not None:
        if not ctx.store_known(template.store):
            ctx.error(
                "STORE_001",
                f"DefaultDataWell.Store names store {template.store!r}, which is not "
                f"declared; declare it in Stores or use one of "
                f"{quote_list(ctx.store_choices())}",
                store=template.store,
                field="Flow.DefaultDataWell.Store",
            )
    used = {default_store_name(flow)}
    used.update(w.store for w in flow.data_wells if w.store)
    if template is not None and template.store:
        used.add(template.store)
    for i, store in enumerate(flow.stores):
        if store.name not in used and seen.get(store.name) == i:
            ctx.warning(
                "STORE_004",
                f"store {store.name!r} is declared but no DataWell, DefaultStore or "
                "DefaultDataWell uses it; name it in a well's Store or remove it",
                store=store.name,
                field=f"Flow.Stores.{i}",
            )


def _check_s3_store(ctx: CheckContext, store: StoreInput, where: str) -> None:
    """A flow's own s3 store: its bucket, its credentials, an endpoint the operator allows."""
    params = store.params
    about = {"store": store.name}
    bucket = params.get("bucket")
    if not isinstance(bucket, str) or not bucket.strip():
        ctx.error(
            "STORE_003",
            f"s3 store {store.name!r} needs Params.bucket, the name of its bucket "
            '(e.g. {"bucket": "my-bucket"})',
            field=f"{where}.Params.bucket",
            **about,
        )
    unknown = sorted(set(params) - S3_PARAMS)
    if unknown:
        ctx.error(
            "STORE_003",
            f"s3 store {store.name!r} has unknown Params {quote_list(unknown)}; known: "
            f"{quote_list(sorted(S3_PARAMS), limit=20)}",
            field=f"{where}.Params",
            **about,
        )
    allowed = ctx.stores.flow_store_endpoints
    if not allowed:
        ctx.error(
            "STORE_006",
            f"store {store.name!r}: this service does not let flows declare stores of their "
            f"own; use one of its stores, {quote_list(sorted(ctx.stores.operator_stores))}, "
            "by name in a DataWell (its operator can allow endpoints in "
            "storage.flow_store_endpoints)",
            field=f"{where}.Type",
            **about,
        )
        return
    for secret in ("access_key_id", "secret_access_key"):
        value = params.get(secret)
        if not isinstance(value, str) or not value:
            ctx.error(
                "STORE_006",
                f"s3 store {store.name!r} needs Params.{secret}: a flow's own store carries "
                "its own credentials, the service never lends it its own",
                field=f"{where}.Params.{secret}",
                **about,
            )
    _check_flow_store_bounds(ctx, store, where)
    for param in ("endpoint_url", "public_endpoint_url"):
        endpoint = params.get(param)
        if endpoint is None and param == "public_endpoint_url":
            continue
        if not isinstance(endpoint, str) or endpoint.rstrip("/") not in allowed:
            ctx.error(
                "STORE_006",
                f"s3 store {store.name!r}: Params.{param} must be one of the endpoints this "
                f"service lets flows use: {quote_list(sorted(allowed))}",
                field=f"{where}.Params.{param}",
                **about,
            )


def _check_flow_store_bounds(ctx: CheckContext, store: StoreInput, where: str) -> None:
    """A flow's store may not hold the service's threads (or its shutdown) for long.

    Its calls run on the service's threads: each try is bounded, and so are the
    tries; it may not create buckets (its owner does that, once).
    """
    params, about = store.params, {"store": store.name}
    for param, most in FLOW_STORE_BOUNDS.items():
        value = params.get(param)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
            ctx.error(
                "STORE_006",
                f"s3 store {store.name!r}: Params.{param} must be a number over 0 and at most "
                f"{most:g} for a flow's own store (got {str(value)[:40]!r})",
                field=f"{where}.Params.{param}",
                **about,
            )
    if params.get("create_bucket") not in (None, False):
        ctx.error(
            "STORE_006",
            f"s3 store {store.name!r}: a flow's own store may not create its bucket; create "
            f"{params.get('bucket')!r} once with your own tools and leave out create_bucket",
            field=f"{where}.Params.create_bucket",
            **about,
        )


__all__ = ["FLOW_STORE_BOUNDS", "check"]
