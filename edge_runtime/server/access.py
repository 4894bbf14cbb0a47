"""Who may ask `edge-run serve`: the Host it answers to, the Origin, the bearer token.

LAN safety without a proxy in front: a Host allow-list against DNS
rebinding, cross-origin browser requests refused, and (``--token-file``)
a shared secret on the model endpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress

from ..protocol import HttpError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclasses.dataclass
class Access:
    """Who may talk to the server: Host names it answers to, and the shared secret.

    With a token, /metrics wants it too (it tells what runs, how busy, how hot), unless metrics_open
    (--metrics-open: for a Prometheus that scrapes without it); health, /v2 and the OpenAPI stay open.
    """

    hosts: frozenset = frozenset(LOOPBACK_NAMES)
    token: str | None = None
    metrics_open: bool = False


def host_name(value: str) -> str | None:
    """The host part of a Host header or Origin authority, lower-case, without port; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6 address]:port
        end = value.find("]")
        rest = value[end + 1:]
        return value[1:end] if end > 1 and (not rest or rest.startswith(":")) else None
    name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name.rstrip(".") or None


def host_allowed(name: str | None, access: Access) -> bool:
    """A Host the server answers to: an allowed name, or an IP address.

    DNS rebinding needs a name the attacker controls that resolves to us; a
    request addressed to an IP literal cannot be one, so LAN clients reach a
    server on --host 0.0.0.0 by its address without listing every interface.
    """
    if name is None:
        return False
    if name in access.hosts:
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def check_access(method: str, headers: dict, access: Access) -> None:
    """Host must name us; a browser's cross-origin request is refused."""
    hosts = headers.get("host", [])
    if len(hosts) != 1:
        raise HttpError(400, "exactly one Host header is required")
    if not host_allowed(host_name(hosts[0]), access):
        raise HttpError(421, f"this server does not answer to Host {hosts[0][:100]!r}; "
                             "start it with --allow-host NAME to allow that name")
    origin = headers.get("origin", [None])[0]
    if origin is not None:
        name = host_name(origin.split("://", 1)[-1]) if "://" in origin else None
        if name is None or name not in access.hosts:
            raise HttpError(403, f"cross-origin requests are refused (Origin {origin[:100]!r})")


def check_token(headers: dict, access: Access) -> None:
    if access.token is None:
        return
    given = (headers.get("authorization") or [""])[0]
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), access.token.encode()):
        raise HttpError(401, "a valid 'Authorization: Bearer TOKEN' header is required (the server's --token-file)",
                        {"WWW-Authenticate": "Bearer"})
