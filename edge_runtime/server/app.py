"""The plain ASGI application: a request read within its limits, handed to the handlers, the reply sent.

No framework (starlette/fastapi) on top of uvicorn: routing is a table in
handlers.py. What this layer adds is what needs the event loop:

- the body read within one total deadline (``--timeout``), not a timer
  restarted by every byte (uvicorn's keep-alive timer), and bounded per
  request (``--max-body``, 413) and across requests (bytes buffered at once);
- an inference slot taken only once the body is in: a slow client holds
  no worker and no queue place (503 with Retry-After when all are taken);
- the blocking part (parse, wait for an interpreter, predict, encode) on a
  worker thread, so the loop keeps answering health checks and /metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from ..fields import ascii_int
from ..protocol import HttpError
from .access import Access, check_access
from .handlers import Reply, Request, answer, check_request, endpoint_of, error_reply, infer, infer_preflight
from .pool import Service

# Set in the scope by the connection (connection.py) when the client shut its sending side before the body's end.
HALF_CLOSED = "edge_run.half_closed"


class App:
    """The ASGI application: routing, limits and replies for one Service."""

    def __init__(self, service: Service, access: Access, openapi=None):
        self.service = service
        self.access = access
        self.openapi = openapi  # callable(spec, name) -> dict, or None
        self.busy = 0  # requests holding an inference slot (touched on the event loop only)
        self.buffered = 0  # body bytes held by requests still reading or waiting
        self.executor = concurrent.futures.ThreadPoolExecutor(service.limits.slots, thread_name_prefix="infer")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; websockets are not installed
            return
        metrics = self.service.metrics
        state = {"endpoint": "other", "code": 500, "started": time.perf_counter()}
        metrics.in_flight.inc()
        try:
            reply = await self._reply(scope, receive, state)
            state["code"] = reply.code
            # Counted before the reply leaves: a client that reads /metrics next sees its request.
            metrics.request_done(state["endpoint"], reply.code, time.perf_counter() - state["started"])
            state["recorded"] = True
            close = reply.close or self.service.draining.is_set()
            await send({"type": "http.response.start", "status": reply.code, "headers": [
                (b"Content-Length", str(len(reply.body)).encode()),
                *((k.encode(), str(v).encode()) for k, v in reply.headers.items()),
                *([(b"Connection", b"close")] if close else [])]})
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            metrics.in_flight.dec()
            if not state.get("recorded"):  # the client went away, or the task was cancelled at shutdown
                metrics.request_done(state["endpoint"], state["code"], time.perf_counter() - state["started"])

    async def _reply(self, scope, receive, state) -> Reply:
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
        request = Request(scope["method"], scope["path"], headers)
        try:
            check_access(request.method, headers, self.access)
            endpoint, name = endpoint_of(request)
            state["endpoint"] = endpoint
            check_request(self.service, self.access, request, endpoint, name)
            if endpoint != "infer":
                return answer(self.service, endpoint, self.openapi)
            return await self._infer(receive, request, scope)
        except HttpError as exc:
            return error_reply(exc)

    def _body_length(self, headers: dict) -> int | None:
        """Content-Length (None when chunked); framing problems were refused by the connection already."""
        length = headers.get("content-length")
        if length is None:
            if "transfer-encoding" not in headers:
                raise HttpError(411, "Content-Length is required")
            return None
        value = ascii_int(length[0].strip(" \t"))  # h11 has checked it is digits; never int() on others' text
        if value is None:
            raise HttpError(400, f"bad Content-Length {length[0][:20]!r}", close=True)
        if value > self.service.limits.max_body:
            raise HttpError(413, f"body of {value} bytes is over the limit of {self.service.limits.max_body}",
                            close=True)
        return value

    async def _read_body(self, receive, length: int | None, deadline: float, scope) -> bytes:
        """The whole body within one total deadline (not per chunk), within the size limits."""
        limits, chunks, size = self.service.limits, [], 0
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HttpError(400, "the client went away before sending the whole body", close=True)
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    self.buffered += len(chunk)
                    chunks.append(chunk)
                    if size > limits.max_body:
                        raise HttpError(413, f"body is over the limit of {limits.max_body} bytes", close=True)
                    if self.buffered > limits.buffered:
                        raise HttpError(503, "server is busy: too many request bodies in memory",
                                        {"Retry-After": "1"}, close=True)
                    if scope.get(HALF_CLOSED):
                        raise _cut_short(size, length, "the client closed its side of the connection first")
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _cut_short(size, length, f"not complete within the {limits.timeout:g} s deadline") from None
        finally:
            self.buffered -= size

    async def _infer(self, receive, request: Request, scope) -> Reply:
        service, limits = self.service, self.service.limits
        infer_preflight(service, request)
        length = self._body_length(request.headers)
        deadline = time.monotonic() + limits.timeout
        request.body = await self._read_body(receive, length, deadline, scope)
        if self.busy >= limits.slots:
            raise HttpError(503, "server is busy: all workers and queue places are taken", {"Retry-After": "1"},
                            close=True)
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, infer, service, request, deadline)
        finally:
            self.busy -= 1


def _cut_short(size: int, length: int | None, why: str) -> HttpError:
    promised = "" if length is None else f" of the {length} bytes Content-Length promised"
    return HttpError(400, f"body ended after {size}{promised}: {why}", close=True)
