"""Request bodies: JSON (or YAML), objects, and the {Flow, NodeDefs} submission."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from orchestrator.api.errors import BadRequest
from orchestrator.models import FlowSubmission


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (or YAML when sent as application/yaml), or a 400 saying why."""
    body = await request.read()
    if request.content_type in ("application/yaml", "application/x-yaml", "text/yaml"):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise BadRequest("BODY_MALFORMED", f"request body is not valid YAML: {exc}") from exc
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(
            "BODY_MALFORMED",
            f"request body is not valid JSON: {exc}",
        ) from exc


async def read_object(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` when ``empty_ok``."""
    if empty_ok and not await request.read():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("BODY_MALFORMED", "request body must be a JSON object")
    return body


async def read_fields(
    request: web.Request, accepted: tuple[str, ...], *, empty_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object with no field outside ``accepted`` (typos surface)."""
    body = await read_object(request, empty_ok=empty_ok)
    unknown = [k for k in body if k not in accepted]
    if unknown:
        raise BadRequest(
            "BODY_MALFORMED",
            f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}",
        )
    return body


async def read_submission(request: web.Request) -> FlowSubmission:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("BODY_MALFORMED", "request body must be an object with Flow and NodeDefs")
    if "Flow" not in body:
        raise BadRequest("BODY_MALFORMED", "request body has no 'Flow': send {Flow, NodeDefs}")
    return FlowSubmission.model_validate(body)


__all__ = ["read_fields", "read_json", "read_object", "read_submission"]
