"""The Open Inference Protocol endpoints as plain functions: a Request in, a Reply out.

No socket and no event loop here. The transport (app.py, on uvicorn and h11)
reads a request within its deadlines and size limits, then asks these
functions who may ask (``route``) and what to answer (``answer``, ``infer``);
``handle`` is the whole path for a request already read, which is how tests
drive the protocol without a server. The tensor bodies themselves are
protocol.py's.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import time

import numpy as np

from ..arrays import TooLarge
from ..errors import UserError
from ..fields import ascii_int
from ..metrics import CONTENT_TYPE as METRICS_TYPE
from ..protocol import (HttpError, check_reply, encode_response, max_elements, parse_json_request, reply_limit,
                        tensor_json)
from ..tensors import feeds_from_numpy
from .access import Access, check_access, check_token
from .pool import Service

MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
SIMPLE = {"/metrics": "metrics", "/v2/health/live": "live", "/v2/health/ready": "ready",
          "/v2": "server_metadata", "/v2/openapi.json": "openapi"}
MODEL_ACTIONS = {None: "model_metadata", "/ready": "model_ready", "/infer": "infer"}
BODY_TYPES = {"application/json", "application/octet-stream", "application/x-npy", "application/x-npz"}
FORM_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}


@dataclasses.dataclass
class Request:
    """An HTTP request as the handlers see it: header names lower-case, each with every value sent."""

    method: str
    path: str
    headers: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    body: bytes = b""


@dataclasses.dataclass
class Reply:
    code: int
    body: bytes
    headers: dict
    close: bool = False  # close the connection after this reply


def json_reply(code: int, obj) -> Reply:
    return Reply(code, json.dumps(obj).encode(), {"Content-Type": "application/json"})


def error_reply(exc: HttpError) -> Reply:
    return Reply(exc.code, json.dumps({"error": exc.message}).encode(),
                 {"Content-Type": "application/json", **exc.headers}, exc.close)


# ---------------------------------------------------------------- which endpoint, and may the client ask


def endpoint_of(request: Request) -> tuple[str, str | None]:
    """(endpoint, model name) of the request's path; the endpoint is also the label it is counted under."""
    path = request.path.rstrip("/") or "/"
    if path in SIMPLE:
        return SIMPLE[path], None
    match = MODEL_PATH.match(path)
    if not match:
        raise HttpError(404, f"no such endpoint: {request.method} {path[:100]}")
    name, _version, action = match.groups()
    return MODEL_ACTIONS[action], name


def check_request(service: Service, access: Access, request: Request, endpoint: str, name: str | None) -> None:
    """The method, the token, the model's name, readiness: HttpError when the request may not be answered."""
    method, path = request.method, request.path.rstrip("/") or "/"
    if name is None:  # health, metadata, metrics, openapi
        if method not in ("GET", "HEAD"):
            raise HttpError(405, f"{method} is not allowed on {path}", {"Allow": "GET, HEAD"})
        if endpoint == "metrics" and not access.metrics_open:
            check_token(request.headers, access)
        return
    check_token(request.headers, access)
    if name != service.name:
        raise HttpError(404, f"unknown model '{name[:100]}'; this server serves '{service.name}'")
    allowed = "POST" if endpoint == "infer" else "GET, HEAD"
    if method not in allowed.split(", "):
        raise HttpError(405, f"{method} is not allowed on {path[:100]}", {"Allow": allowed})
    if endpoint != "model_ready" and not service.ready.is_set():
        raise HttpError(503, service.failed or "model is loading", {"Retry-After": "1"})


# ---------------------------------------------------------------- the answers


def answer(service: Service, endpoint: str, openapi=None) -> Reply:
    """The reply of every endpoint but infer (all cheap: nothing here waits).

    openapi: callable(spec, model name) -> the OpenAPI document, or None.
    """
    ready = service.ready.is_set() and not service.draining.is_set()
    if endpoint == "metrics":
        return Reply(200, service.metrics.render().encode(), {"Content-Type": METRICS_TYPE})
    if endpoint == "live":
        return json_reply(200, {"live": True})
    if endpoint == "ready":
        return json_reply(200 if ready else 503, {"ready": ready})
    if endpoint == "model_ready":
        return json_reply(200 if ready else 503, {"name": service.name, "ready": ready})
    if endpoint == "server_metadata":
        from .. import __version__

        return json_reply(200, {"name": "edge-run", "version": __version__, "extensions": ["binary_tensor_data"]})
    if endpoint == "model_metadata":
        return json_reply(200, {"name": service.name, "versions": ["1"], "platform": "tflite",
                                "inputs": [tensor_json(s) for s in service.spec["inputs"]],
                                "outputs": [tensor_json(s) for s in service.spec["outputs"]]})
    if openapi is None or service.spec is None:
        raise HttpError(503, service.failed or "model is loading", {"Retry-After": "1"})
    return json_reply(200, openapi(service.spec, service.name))


def content_type(request: Request) -> str:
    return (request.headers.get("content-type") or [""])[0].split(";")[0].strip().lower()


def infer_preflight(service: Service, request: Request) -> None:
    """What refuses an infer request before its body is read: shutting down, a content type not taken."""
    if service.draining.is_set():
        raise HttpError(503, "server is shutting down", {"Retry-After": "5"}, close=True)
    ctype = content_type(request)
    if ctype in FORM_TYPES or (ctype and ctype not in BODY_TYPES):
        raise HttpError(415, f"Content-Type {ctype[:60]!r} is not taken; use application/json, "
                             "application/octet-stream (binary tensors), application/x-npy or application/x-npz",
                        close=True)


def header_length(request: Request) -> int | None:
    """The binary tensor extension's JSON header length, if the request uses it."""
    value = request.headers.get("inference-header-content-length")
    if value is None:
        return None
    text, body_length = value[0].strip(" \t"), len(request.body)
    length = ascii_int(text, most_digits=12)
    if length is None or length > body_length:
        raise HttpError(400, f"bad Inference-Header-Content-Length {text[:20]!r} for a {body_length}-byte body: "
                             "a byte count in ASCII digits, at most the body's length")
    return length


def infer(service: Service, request: Request, deadline: float) -> Reply:
    """Parse, wait for an interpreter until ``deadline`` (time.monotonic), predict, encode.

    Blocks: the transport runs it on a worker thread.
    """
    limits, ctype, body = service.limits, content_type(request), request.body
    try:
        if ctype in ("application/x-npy", "application/x-npz"):
            # Sizes come from the .npy headers and the zip directory, checked before anything is
            # allocated or inflated (edge_runtime.arrays): a small .npz may inflate to gigabytes.
            budget = sum(max_elements(s, limits.max_batch) for s in service.spec["inputs"]) * 8  # 8: widest type
            feeds = feeds_from_numpy(io.BytesIO(body), service.spec["inputs"], f"the {ctype[14:]} body", budget)
            outputs = service.infer(feeds, deadline)
            check_reply(outputs, list(outputs), reply_limit(service.spec["outputs"], limits.max_batch))
            buf = io.BytesIO()
            np.savez(buf, **outputs)
            return Reply(200, buf.getvalue(), {"Content-Type": "application/x-npz"})
        feeds, names, binary, request_id = parse_json_request(body, header_length(request), service.spec,
                                                              limits.max_batch)
        outputs = service.infer(feeds, deadline)
        check_reply(outputs, names, reply_limit(service.spec["outputs"], limits.max_batch))
    except TooLarge as exc:
        raise HttpError(413, str(exc), close=True) from None
    except UserError as exc:
        raise HttpError(400, str(exc)) from None
    return Reply(200, *encode_response(service.name, outputs, names, binary, request_id))


def handle(service: Service, access: Access, request: Request, openapi=None) -> Reply:
    """The reply to a request already read, on this thread: the protocol without a server."""
    try:
        check_access(request.method, request.headers, access)
        endpoint, name = endpoint_of(request)
        check_request(service, access, request, endpoint, name)
        if endpoint != "infer":
            return answer(service, endpoint, openapi)
        infer_preflight(service, request)
        return infer(service, request, time.monotonic() + service.limits.timeout)
    except HttpError as exc:
        return error_reply(exc)
