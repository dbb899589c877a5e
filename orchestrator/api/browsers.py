"""What a web page in the user's browser may do with this service.

Any page the user visits can send requests to ``http://127.0.0.1:1234``: a
form or a ``fetch`` with a simple content type goes out without a CORS
preflight, and the browser only hides the answer. So the service itself
refuses, before any handler runs:

- a state-changing request (not GET, HEAD or OPTIONS) whose ``Origin`` (or,
  without one, ``Sec-Fetch-Site``) says it comes from a page of another
  origin, unless the operator lists that origin in ``allowed_origins``;
- without auth, a request whose ``Host`` is not a name of this service
  (a page of ``evil.example`` whose DNS now points at 127.0.0.1 sends
  ``Host: evil.example``: DNS rebinding would let it read runs and artifacts).

Allowed origins also get CORS answers, so a web app of the operator's can call
the API from another origin. The local store's presigned URLs
(``/objects/…``) carry their own signature and are left to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from orchestrator.config import Settings
from orchestrator.errors import Forbidden

CORS_ORIGIN = web.RequestKey("cors_origin", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PREFIXES = ("/objects/",)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
CORS_HEADERS = "Authorization, Content-Type, x-api-key"
CORS_METHODS = "GET, HEAD, POST, PUT, DELETE"


def _host_of(origin_or_url: str) -> str:
    """``http://Example.org:80/x`` → ``example.org:80`` (the netloc, lower case)."""
    return urlsplit(origin_or_url).netloc.lower()


def own_origins(settings: Settings) -> set[str]:
    """The origins of this service's own pages: its public URL and its loopback names."""
    port = settings.port
    origins = {f"http://{name}:{port}" for name in LOOPBACK_NAMES}
    public = urlsplit(settings.base_url)
    origins.add(f"{public.scheme}://{public.netloc}".lower())
    return origins


def browser_guard(
    settings: Settings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    own = own_origins(settings)
    allowed = {o.rstrip("/").lower() for o in settings.allowed_origins}
    # Without auth, the names a request may address us by (DNS-rebinding defence).
    hosts = {_host_of(o) for o in own | allowed} | set(LOOPBACK_NAMES)
    check_host = settings.auth == "none"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        if check_host and (request.host or "").lower() not in hosts:
            raise Forbidden(
                "HOST_FORBIDDEN",
                f"this service does not answer to the name {request.host!r}; address it as "
                f"{settings.base_url} (a page whose name points at this machine is refused). "
                "Serving it under another name: set public_url",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() in allowed:
            if request.method == "OPTIONS":
                return web.Response(status=204, headers=_cors(origin, preflight=True))
            request[CORS_ORIGIN] = origin
            return await handler(request)
        if request.method not in SAFE_METHODS and _cross_origin(request, own):
            raise Forbidden(
                "ORIGIN_FORBIDDEN",
                f"refused a {request.method} from a page of another origin "
                f"({origin or request.headers.get('Sec-Fetch-Site')}): web pages may not "
                "change anything here. To let a web app of yours call this service, add "
                "its origin to allowed_origins in the configuration",
            )
        return await handler(request)

    return middleware


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers for an allowed origin (streams included)."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        response.headers.update(_cors(origin))


def _cross_origin(request: web.Request, own: set[str]) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None:
        # "null": a sandboxed frame, a file: page or a redirect; never one of ours.
        return origin.lower() not in own
    # Browsers send Sec-Fetch-Site even where they leave Origin out; other clients send neither.
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def _cors(origin: str, *, preflight: bool = False) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if preflight:
        headers.update(
            {
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
    return headers


__all__ = ["add_cors_headers", "browser_guard", "own_origins"]
