"""Loopback ports for the tests' servers (tests never leave loopback)."""

import socket


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` (a loopback address) right now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]
