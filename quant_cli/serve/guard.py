"""The server's outer layer, as one pure ASGI middleware (cheaper per request than Starlette's
BaseHTTPMiddleware): bearer-token check, request-size limit, and Prometheus metrics.

- Token: when set, every path but /health needs `Authorization: Bearer <token>` (401 otherwise),
  compared in constant time.
- Size: a body over `max_body_bytes` is answered 413 before the app sees it, whether or not the
  client sent Content-Length (the body is read up to the limit, then replayed to the app).
- Metrics: requests by endpoint and status, a latency histogram by endpoint, errors by kind
  (4xx/5xx classes and the named kinds the app reports). Unknown paths count as "other", so a
  scan of random URLs cannot blow up the label set.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

OPEN_PATHS = ("/health",)
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry per app, so several apps (tests, a reload) never clash in the global one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("qfactory_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "qfactory_request_seconds",
            "Request latency in seconds",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter("qfactory_errors", "Failed requests by kind", ["kind"], registry=self.registry)


class Guard:
    def __init__(self, app: Any, metrics: Metrics, endpoints: set[str], token: str | None, max_body_bytes: int) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints
        self.token = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        status = {"code": 500}

        async def send_recording(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refuse_unauthorised(scope)
            body = None
            if refusal is None:
                body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                await _json(send_recording, *refusal)
            else:
                await self.app(scope, _replay(body) if body is not None else receive, send_recording)
        finally:
            code = status["code"]
            self.metrics.requests.labels(endpoint, str(code)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if code >= 400:
                self.metrics.errors.labels(_kind(code)).inc()

    def _refuse_unauthorised(self, scope: dict) -> tuple[int, dict, dict] | None:
        if self.token is None or scope["path"] in OPEN_PATHS:
            return None
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.token):
            return None
        return (
            401,
            {
                "error": "missing or wrong bearer token; send 'Authorization: Bearer <QFACTORY_SERVE_TOKEN>'",
                "kind": "Unauthorized",
            },
            {"www-authenticate": "Bearer"},
        )

    async def _read_body(self, scope: dict, receive: Any) -> tuple[bytes | None, tuple[int, dict, dict] | None]:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None, None
        too_big = (
            413,
            {
                "error": f"request body over {self.max_body_bytes:,} bytes; send fewer bars per request",
                "kind": "TooLarge",
            },
            {},
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None, too_big
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None, too_big
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), None


def _replay(body: bytes) -> Any:
    sent = {"done": False}

    async def receive() -> dict:
        if sent["done"]:
            return {"type": "http.disconnect"}
        sent["done"] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _json(send: Any, status: int, payload: dict, headers: dict) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _kind(code: int) -> str:
    return {
        401: "unauthorized",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        422: "invalid_input",
    }.get(code, "server_error" if code >= 500 else "client_error")
