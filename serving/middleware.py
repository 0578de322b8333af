"""Pure ASGI middleware: request ids, access logs, HTTP metrics, no stack traces to clients.

Per request: `HEAD` answered as the `GET` of the same URL without the body (load balancers
probe `/health` with HEAD); a body limit (413 when `Content-Length` or the bytes read pass it),
`X-Request-ID` (the caller's when it is a sane token of at most 64 characters,
else a fresh uuid4 hex) on the response and in `request.state.request_id`; `X-Model-Version`
when a model answered or is loaded; one JSON access-log line; the Prometheus counters labelled
by route template; and any unhandled exception turned into a logged 500
`{"detail": "internal error", "request_id": …}`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.logs import ACCESS_LOGGER_NAME, LOGGER_NAME, log_event
from serving.metrics import ServingMetrics

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
UNMATCHED_ROUTE = "<unmatched>"
access_logger = logging.getLogger(ACCESS_LOGGER_NAME)
error_logger = logging.getLogger(f"{LOGGER_NAME}.errors")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.fullmatch(text) else uuid.uuid4().hex
    return uuid.uuid4().hex


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Wraps every HTTP request; `current_version()` names the loaded model (or None)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServingMetrics,
        current_version: Callable[[], str | None],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.current_version = current_version
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False
        method = scope["method"]
        if method == "HEAD":
            scope["method"] = "GET"  # routed and answered as GET; the body is dropped below

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            elif message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                version = state.get("model_version") or self.current_version()
                if version:
                    headers.append((b"x-model-version", version.encode()))
                message["headers"] = headers
            await send(message)

        limit, declared, received = self.max_body_bytes, content_length(scope), 0

        async def receive_with_limit() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise HTTPException(413, f"request body over {limit} bytes")
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body over {limit} bytes")
            return message

        try:
            await self.app(scope, receive_with_limit, send_with_headers)
        except Exception:
            log_event(
                error_logger,
                logging.ERROR,
                "unhandled_exception",
                request_id=request_id,
                method=method,
                path=scope["path"],
                exc_info=True,
            )
            if response_started:
                raise
            status = 500
            content = {"detail": "internal error", "request_id": request_id}
            await _send_json(send, 500, content, request_id, with_body=method != "HEAD")
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.observe_request(route, method, status, seconds)
            log_event(
                access_logger,
                logging.INFO,
                "request",
                request_id=request_id,
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 3),
                model_version=state.get("model_version"),
            )


async def _send_json(
    send: Send, status: int, content: dict[str, str], request_id: str, *, with_body: bool
) -> None:
    body = json.dumps(content).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body if with_body else b""})
