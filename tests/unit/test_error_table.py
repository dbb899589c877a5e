"""The one error table: each error's status and code come from it, no code outside it can
be named, and the domain's messages name no route (the API adds them, to the same text)."""

import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import make_mocked_request

from orchestrator import errors as domain
from orchestrator.api import flows, native
from orchestrator.api.errors import CODES, ERRORS, LISTED_AT, TABLE, UNKNOWN_RUN_TEXT, response_for
from orchestrator.api.openapi import Answer, codes, operation
from orchestrator.errors import (
    ArtifactNotFound,
    BodyInvalid,
    BodyTimeout,
    ConfigError,
    ConfigNotFound,
    Conflict,
    ContentTypeUnsupported,
    DataDirFull,
    DataDirUnwritable,
    FileTooLarge,
    FlowInvalid,
    FlowNotFound,
    Forbidden,
    InputMismatch,
    InvalidInvocation,
    KeyExists,
    KeyInvalid,
    NodeDefNotFound,
    NotFound,
    RunFinished,
    RunNotFound,
    StoreFull,
)
from storage import (
    InvalidKey,
    KeyConflict,
    ObjectExists,
    ObjectNotFound,
    SignatureInvalid,
    StoreError,
    StoreUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]
DATABASE = Path("/data/pipewell.db")

# The status and code each error was answered with before the table: they must not move.
ANSWERED = [
    (RunFinished("r1", "COMPLETE"), 409, "RUN_FINISHED"),
    (Conflict("OBJECT_EXISTS", "m"), 409, "OBJECT_EXISTS"),
    (KeyExists("m"), 409, "API_KEY_EXISTS"),
    *[
        (NotFound(code, "m"), 404, code)
        for code in ("API_KEY_NOT_FOUND", "OBJECT_NOT_FOUND", "STORE_NOT_FOUND", "TASK_NOT_FOUND")
    ],
    (NodeDefNotFound("acme/x"), 404, "NODEDEF_NOT_FOUND"),
    (ConfigNotFound("g1", "c"), 404, "CONFIG_NOT_FOUND"),
    (ArtifactNotFound("r1", "e", "gone"), 404, "ARTIFACT_NOT_FOUND"),
    (FlowNotFound("f"), 404, "FLOW_NOT_FOUND"),
    *[
        (Forbidden(code, "m"), 403, code)
        for code in ("FORBIDDEN", "HOST_FORBIDDEN", "ORIGIN_FORBIDDEN")
    ],
    (ContentTypeUnsupported("m"), 415, "CONTENT_TYPE_UNSUPPORTED"),
    (BodyTimeout(15), 408, "BODY_TIMEOUT"),
    (FileTooLarge(10), 413, "FILE_TOO_LARGE"),
    (DataDirFull(DATABASE), 507, "STORAGE_FULL"),
    (StoreFull("m"), 507, "STORAGE_FULL"),
    (DataDirUnwritable(DATABASE, "readonly database"), 503, "STORAGE_UNWRITABLE"),
    (ConfigError("m"), 502, "STORE_UNAVAILABLE"),
    *[
        (BodyInvalid(code, "m"), 400, code)
        for code in ("BODY_MALFORMED", "VERSION_INVALID", "LIMIT_INVALID")
    ],
    *[
        (InvalidInvocation(code, "m"), 400, code)
        for code in (
            "CONFIG_INVALID",
            "FLAGS_INVALID",
            "INPUT_INVALID",
            "NODE_UNKNOWN",
            "TIMEOUT_INVALID",
        )
    ],
    (KeyInvalid("m"), 400, "API_KEY_INVALID"),
    (FlowInvalid([{"code": "FLOW_002", "message": "m"}]), 400, "FLOW_INVALID"),
    (InputMismatch(["a"], ["b"]), 400, "INPUT_INVALID"),
    (SignatureInvalid("m", expired=True), 403, "URL_INVALID"),
    (InvalidKey("m"), 400, "KEY_INVALID"),
    (ObjectExists("k"), 409, "OBJECT_EXISTS"),
    (KeyConflict("m"), 409, "KEY_CONFLICT"),
    (ObjectNotFound("k"), 404, "OBJECT_NOT_FOUND"),
    (StoreUnavailable("m"), 502, "STORE_UNAVAILABLE"),
    (StoreError("m"), 502, "STORE_UNAVAILABLE"),
]


def answer(exc: Exception) -> tuple[int, dict]:
    response = response_for(make_mocked_request("GET", "/x"), exc)
    return response.status, json.loads(response.text or "")


@pytest.mark.parametrize(("exc", "status", "code"), ANSWERED, ids=lambda v: type(v).__name__)
def test_every_error_keeps_its_status_and_code(exc, status, code):
    answered, body = answer(exc)
    assert (answered, body["code"]) == (status, code)


def test_the_unknown_run_stays_the_seeds_text():
    response = response_for(make_mocked_request("GET", "/x"), RunNotFound("r1"))
    assert (response.status, response.text) == (400, UNKNOWN_RUN_TEXT)


def test_an_error_with_a_code_outside_the_table_is_a_fault_of_ours():
    status, body = answer(domain.RequestRefused("NO_SUCH_CODE", "m"))
    assert (status, body["code"]) == (500, "INTERNAL_ERROR")


def test_each_code_has_one_row():
    assert len(TABLE) == len(ERRORS)
    assert all(row.when and 400 <= row.status < 600 for row in ERRORS)


# ------------------------------------------------------------- no code outside the table


def test_an_operation_cannot_name_a_code_the_table_lacks():
    with pytest.raises(ValueError, match="NO_SUCH_CODE"):
        operation("x", tag="native", answers={200: Answer("ok")}, errors=("NO_SUCH_CODE",))
    with pytest.raises(ValueError, match="NO_SUCH_CODE"):
        codes("FLOW_NOT_FOUND", "NO_SUCH_CODE")
    assert codes("FLOW_NOT_FOUND") == ("FLOW_NOT_FOUND",)


#: Classes whose first argument is the code, and the status each stands for (if one).
CODED: dict[str, int | None] = {
    "RequestRefused": None,
    "BodyInvalid": None,
    "InvalidInvocation": None,
    "NotFound": 404,
    "Forbidden": 403,
    "Conflict": 409,
    "error_response": None,
}


def _coded_calls():
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            first = node.args[0]
            if name in CODED and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", name, first.value


def test_every_code_the_service_raises_is_a_row_of_the_table():
    calls = list(_coded_calls())
    assert len(calls) > 40  # the scan does find them
    for where, name, code in calls:
        assert code in CODES, f"{where}: {name}({code!r}) has no row in the error table"
        status = CODED[name]
        assert status is None or CODES[code] == status, f"{where}: {code} is not {status}"
    # A class's own code too; FlowFileUnreadable is the CLI's, never answered over HTTP.
    own = {
        kind.code
        for kind in vars(domain).values()
        if isinstance(kind, type) and issubclass(kind, domain.PipewellError)
    }
    assert own - set(CODES) == {"FLOW_FILE_UNREADABLE", "RUN_NOT_FOUND"}
    assert "RUN_NOT_FOUND" in TABLE


# ------------------------------------------------------------ no route in the domain


def test_the_api_adds_the_route_to_the_domains_words():
    cases = [
        (FlowNotFound("f"), "no saved flow 'f'", "no saved flow 'f' (see GET /api/v1/flows)"),
        (
            FlowNotFound("f version 2"),
            "no saved flow 'f version 2'",
            "no saved flow 'f version 2' (see GET /api/v1/flows)",
        ),
        (
            NodeDefNotFound("acme/x"),
            "no built-in NodeDef 'acme/x'; a flow may send its own in NodeDefs",
            "no built-in NodeDef 'acme/x' (see GET /api/v1/nodedefs); a flow may send its "
            "own in NodeDefs",
        ),
        (
            ConfigNotFound("g1", "small"),
            "flow g1 has no config 'small'",
            "flow g1 has no config 'small' (see GET /api/v1/flows/g1/configs)",
        ),
    ]
    for exc, domain_text, answered in cases:
        assert str(exc) == domain_text
        assert answer(exc)[1]["message"] == answered


def test_the_routes_named_are_served():
    served = {
        (route.method, route.path)
        for module in (flows, native)
        for route in module.routes
        if hasattr(route, "path")
    }
    for kind, route in LISTED_AT:
        method, path = route(SimpleNamespace(graph_id="{ref}")).split(" ")
        assert (method, path) in served, f"{kind.__name__}: {method} {path} is not a route"


#: Below the API: what raises errors a caller reads (the CLI's own words may name routes).
NOT_DOMAIN = {"api", "ui", "flow_test", "cli.py", "client.py", "reference.py"}
ROUTE = re.compile(r"\b(GET|POST|PUT|DELETE|HEAD) /|/api/v1/")


def test_no_domain_message_names_a_route():
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        if NOT_DOMAIN & set(path.relative_to(ROOT).parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            said = isinstance(node, ast.Raise) or (
                path.name == "errors.py" and isinstance(node, ast.Constant | ast.JoinedStr)
            )
            if said and id(node) not in docstrings:
                assert not ROUTE.search(ast.unparse(node)), f"{path}:{node.lineno} names a route"
