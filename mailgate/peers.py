"""Peers: an SMTP client's IP address as policy reads it, and whether it is in a list of
networks (pure; no sockets).

One reading for every decision about a peer: which clients may connect
(``MAILGATE_TRUSTED_PEERS``, SMTP-05), which are loopback (the STARTTLS exemption,
SMTP-11), and which relays' Authentication-Results count (``MAILGATE_AUTHRES_RELAYS``,
SPOOF-02). An IPv6 zone is stripped and an IPv4-mapped address is read as IPv4, so
``::ffff:127.0.0.1`` is ``127.0.0.1`` for all three.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_address(host: str) -> Address | None:
    """The peer's IP as policy sees it: without an IPv6 zone, IPv4-mapped unwrapped."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(host: str) -> bool:
    address = peer_address(host)
    return address is not None and address.is_loopback


def trusted_networks(peers: Sequence[str]) -> list[Any]:
    return [ipaddress.ip_network(p, strict=False) for p in peers]


@lru_cache(maxsize=64)
def _networks(peers: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(trusted_networks(peers))


def is_trusted(host: str, networks: Sequence[Any]) -> bool:
    """Whether ``host`` is in one of ``networks`` (``ip_network`` objects, or their text)."""
    address = peer_address(host)
    if address is None:
        return False
    if any(isinstance(net, str) for net in networks):
        networks = _networks(tuple(str(net) for net in networks))
    return any(address.version == net.version and address in net for net in networks)
