"""`edge-run serve`: the Open Inference Protocol (KServe v2) over HTTP.

Endpoints:

    GET  /v2/health/live            GET /v2/health/ready          GET /v2
    GET  /v2/models/NAME            GET /v2/models/NAME/ready
    POST /v2/models/NAME/infer      (JSON tensors, the binary tensor
                                     extension, or a .npy/.npz body)
    GET  /metrics                   (Prometheus text format)
    GET  /v2/openapi.json           (an OpenAPI 3 description of the above)

Tensors are in the ONNX contract (names, shapes, float datatypes). Bad
requests get a 4xx with a JSON ``{"error": ...}`` body and never take the
server down; load beyond the queue gets 503 with Retry-After; SIGTERM stops
accepting, lets in-flight requests finish (within --timeout), and exits 0.

Protocol apart from transport, as KServe's Python server on uvicorn:

    pool.py        the model pool and its limits (Limits, Service)
    access.py      who may ask: Host allow-list, Origin, bearer token
    handlers.py    the endpoints as plain functions, a Request in, a Reply out
    app.py         the ASGI app: bodies read within deadlines and limits, slots
    connection.py  one HTTP/1.1 connection: uvicorn's h11 protocol, hardened
    launch.py      the port, the uvicorn server, signals, the bundle's models
"""

from .access import LOOPBACK_NAMES, Access
from .app import App
from .handlers import Reply, Request, handle
from .launch import listen, make_server, serve
from .pool import Limits, Service

__all__ = ["LOOPBACK_NAMES", "Access", "App", "Limits", "Reply", "Request", "Service", "handle", "listen",
           "make_server", "serve"]
