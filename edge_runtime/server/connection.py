"""One HTTP/1.1 connection: uvicorn's h11 protocol, hardened.

Why uvicorn + h11 (the HTTP layer is not ours to write)
-------------------------------------------------------
The first server was ``http.server.ThreadingHTTPServer``: a thread per
connection, a socket timeout that restarted with every byte, our own
Content-Length handling. Attacked, it fell over (issue 12): slow-body
clients held every inference slot, ``Content-Length`` with
``Transfer-Encoding`` was accepted, SIGTERM waited forever on a silent
client, and the reply went out in two writes that met Nagle's algorithm and
the client's delayed ACK (~44 ms per keep-alive request). HTTP/1.1 parsing
and framing now come from h11 (pure Python, strict RFC 9112 parser) driven by
uvicorn's asyncio protocol, as KServe's own Python server does; both are
pure-Python wheels (py3-none-any) that ride in the bundle like numpy. No
framework on top (starlette/fastapi): the app (app.py) is plain ASGI.

Measured on the PP-OCR classifier bundle (input 1x3x48x192), one keep-alive
connection, in-process predict p50 beside it, interleaved (2-core x86-64
host, shared; benchmarks/serve_load.py --keepalive 10):

    tensors  old server (serve / predict p50)   uvicorn+h11 (serve / predict p50)
    binary   47.99 / 3.24 ms  (+44.8 ms)        6.27 / 2.96 ms  (+3.3 ms)
    JSON     55.98 / 4.25 ms  (+51.7 ms)        15.44 / 4.04 ms (+11.4 ms)

and again with the host quiet (load average 1): binary 1.89 / 0.61 ms
(+1.28 ms), JSON 11.92 / 0.54 ms (+11.39 ms, of which json.loads of the
560 KB body is 7.5 ms).

The old server's ~44 ms is Nagle meeting the delayed ACK (the reply went out
in two writes); now a reply leaves in one write (OneWrite) with TCP_NODELAY.
What is left over predict is our own work: JSON decoding alone is ~7 ms for
27648 floats (a Python float per value), and on the digits bundle (64 values)
serve costs +0.7 ms over predict. Nine clients each trickling a 1000-byte
body at 5 bytes/s, a tenth sending 20 normal requests (workers 1, queue 1):
old server, 20 of 20 got 503 (the slow bodies held every slot, with a
timeout restarted by each byte); now 20 of 20 answered, p50 1.2 ms, max 7 ms
(bodies are read on the event loop before a slot is taken, and each slow
body is refused at its one total deadline).

What this module adds on top of uvicorn, and why:

- a total deadline (``--timeout``) on reading the request head: uvicorn
  resets its keep-alive timer on every byte and has no head timeout (the
  body has its own total deadline, in the app);
- a total deadline on each reply's writing: a client that stops reading
  (pipelining requests, say, and never reading a reply) is dropped
  ``--timeout`` after the kernel stops taking its replies, where uvicorn
  waited for it for ever, its requests answered one at a time meanwhile;
- the reply to a request whose client shut its sending side (a half-close):
  uvicorn closed the connection and lost it;
- a bound on open connections (``--max-connections``: one more gets 503 and
  is closed);
- a body in tiny pieces (1-byte chunks) refused: h11 parses each piece in
  Python, on the event loop every request shares (CountedConnection);
- refusal of ambiguous framing (Content-Length with Transfer-Encoding,
  duplicated Content-Length) with the connection closed (RFC 9112 §6.1, §6.3;
  h11 alone lets Transfer-Encoding win and merges equal duplicates);
- protocol errors as the same JSON ``{"error": ...}`` the app answers with.
"""

from __future__ import annotations

import contextlib
import json
import socket

from .app import HALF_CLOSED
from .pool import Service


def framing_problem(data: bytes) -> str | None:
    """Ambiguous body framing in a request head at the start of ``data`` (None when fine or incomplete).

    RFC 9112 §6.1/§6.3: Content-Length beside Transfer-Encoding, or more
    than one Content-Length, is how requests get smuggled; refused, and the
    connection closed. (h11 alone lets Transfer-Encoding win, and merges
    equal duplicates.)
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
        if end < 0:
            return None
    lengths, encodings = [], 0
    for line in data[:end].splitlines()[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths += value.split(b",")
        elif name == b"transfer-encoding":
            encodings += 1
    if len(lengths) > 1:
        return "more than one Content-Length"
    if lengths and encodings:
        return "both Content-Length and Transfer-Encoding"
    return None


class OneWrite:
    """A transport that sends what is written in one event-loop step as one write.

    uvicorn writes the status line and headers, then the body: two segments
    per reply. Joined, a reply leaves in one send() (and TCP_NODELAY, which
    asyncio sets, sends it at once): no Nagle / delayed-ACK stall on a
    keep-alive connection, and a client's first read holds the whole reply.
    """

    def __init__(self, transport, loop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data: bytes) -> None:
        if data:
            self._pending.append(bytes(data))
            if len(self._pending) == 1:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name):  # pause/resume_reading, is_closing, get_extra_info, ...
        return getattr(self._transport, name)


# Replies buffered toward one client: what the kernel holds (SO_SNDBUF; Linux doubles it for bookkeeping; left
# alone it grows to 4 MB, thousands of small replies a client that never reads gets computed first), and
# nothing in user space beyond the reply being written. Beyond that the client must read within --timeout.
SEND_BUFFER = 256 * 1024


def bound_buffers(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    transport.set_write_buffer_limits(high=0)  # pause_writing() as soon as the kernel takes no more


# A request body's h11 events (one per chunk, or per read) must average this many bytes once past the first
# FREE_EVENTS; see CountedConnection.
MIN_EVENT_BYTES = 256
FREE_EVENTS = 64


class CountedConnection:
    """h11's connection, counting each request's body events: a body cut into tiny pieces is refused.

    h11 parses chunked framing in Python, one event per chunk: a body of
    1-byte chunks made each 256 KB read some 37,000 events on the event loop,
    and four such clients held a health check for 10 s (then it timed out).
    Past FREE_EVENTS, a body's events must average MIN_EVENT_BYTES, or the
    request is a protocol error: 400, connection closed.
    """

    def __init__(self, conn):
        self._conn, self._events, self._bytes, self.problem = conn, 0, 0, None

    def next_event(self):
        import h11

        event = self._conn.next_event()
        if type(event) is h11.Request:
            self._events = self._bytes = 0
        elif type(event) is h11.Data:
            self._events += 1
            self._bytes += len(event.data)
            if self._events > FREE_EVENTS and self._bytes < MIN_EVENT_BYTES * self._events:
                self.problem = (f"request body in pieces of {self._bytes / self._events:.0f} bytes on average "
                                f"(chunks or writes); send it in pieces of at least {MIN_EVENT_BYTES}")
                raise h11.RemoteProtocolError(self.problem)
        return event

    def __getattr__(self, name):  # send, their_state, trailing_data, start_next_cycle, ...
        return getattr(self._conn, name)


def busy_reply(connections: int) -> bytes:
    """The 503 a connection beyond --max-connections gets, written raw: it never reaches h11."""
    body = json.dumps({"error": f"server is busy: {connections} connections are open"}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def bad_request(conn, message: str) -> bytes:
    """A 400 with a JSON error, through h11 (so its state knows the connection ends); b"" if h11 refuses."""
    import h11

    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    with contextlib.suppress(h11.LocalProtocolError):
        return (conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
                + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
    return b""


class Hardened:
    """What EdgeProtocol adds to uvicorn's H11Protocol (mixed in before it; see make_protocol).

    ``service`` is set on the class that make_protocol makes. Every timer
    runs --timeout: "head" from the end of one reply to the next request's
    complete head, "write" while the kernel takes no more of our replies.
    """

    service: Service
    _refused = False
    _eof = False  # the client shut its sending side

    def connection_made(self, transport):
        self._timers = {}
        limits = self.service.limits
        if len(self.connections) >= limits.connections:
            self._refused = True
            self.transport = transport
            transport.write(busy_reply(limits.connections))
            transport.close()
            self.service.metrics.request_done("other", 503, 0.0)
            return
        bound_buffers(transport)
        self.conn = CountedConnection(self.conn)
        super().connection_made(OneWrite(transport, self.loop))
        self._arm("head", self._head_timed_out)

    def connection_lost(self, exc):
        for name in list(self._timers):
            self._cancel(name)
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data):
        if not self._refused:
            super().data_received(data)

    def _arm(self, name: str, callback):
        self._cancel(name)
        self._timers[name] = self.loop.call_later(self.service.limits.timeout, callback)

    def _cancel(self, name: str):
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _head_timed_out(self):
        """No complete request head within --timeout (however slowly bytes trickle in): drop it."""
        self._timers.pop("head", None)
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self):
        """The kernel takes no more of our replies: the client is not reading them. It has --timeout to.

        Until then uvicorn holds the next reply back (and with it the next
        pipelined request); after it the connection is dropped, whatever is
        still unsent, rather than held for a client that never reads.
        """
        super().pause_writing()
        if "write" not in self._timers:
            self._arm("write", self._write_timed_out)

    def resume_writing(self):
        self._cancel("write")
        super().resume_writing()

    def _write_timed_out(self):
        self._timers.pop("write", None)
        self.transport.abort()  # close() would wait for the unread replies to drain: for ever

    def eof_received(self):
        """The client shut its sending side (a half-close): what it sent is answered, then the connection closes.

        uvicorn closed at once, and the reply was lost: a body cut short got
        its 400 only if the client kept its side open.
        """
        self._eof = True
        if self._refused:
            return None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.flush()  # a reply OneWrite still holds goes out before asyncio closes the transport
            return None
        self._end_body()
        return True  # the transport stays open for the reply

    def _end_body(self):
        """After the client's EOF a request's body is whatever came: the app hears so at once (HALF_CLOSED)."""
        cycle = self.cycle
        if self._eof and cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.scope[HALF_CLOSED] = True
            cycle.more_body = False
            cycle.message_event.set()

    def handle_events(self):
        import h11

        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            problem = framing_problem(self.conn.trailing_data[0])
            if problem:
                self._refuse(f"ambiguous request framing ({problem}); the connection is closed")
                return
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived: the app's body deadline takes over
            self._cancel("head")
        self._end_body()  # a pipelined request begun after the client's EOF

    def send_400_response(self, msg: str):
        self._refuse(self.conn.problem or "malformed HTTP request (request line, header or chunk framing; RFC 9112)")

    def _refuse(self, message: str):
        if self.cycle is None or self.cycle.response_complete:  # else the app counts its request when it ends
            self.service.metrics.request_done("other", 400, 0.0)
        self.transport.write(bad_request(self.conn, message))
        self.transport.close()

    def on_response_complete(self):
        super().on_response_complete()  # and the next pipelined request, if one is there
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return
        if self._eof:  # the client sends no more: nothing is left to answer
            self.transport.close()
        else:
            self._arm("head", self._head_timed_out)


def make_protocol(service: Service):
    """uvicorn's h11 protocol with a total head deadline, a connection cap and JSON protocol errors."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type("EdgeProtocol", (Hardened, H11Protocol), {"service": service})
