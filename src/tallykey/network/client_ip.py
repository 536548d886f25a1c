"""The client's IP: the socket peer, or `X-Forwarded-For` only when the peer is a trusted
proxy — so a forged header can never get past an allow-list.

Every surface (management API, verify, `/auth/request`, the middleware, the console, the
throttles, audit entries, the access log) asks `scope_client_ip`, so they cannot disagree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _canonical(address: str) -> str:
    parsed = _parse(address)
    return str(parsed) if parsed is not None else address


def is_trusted(address: str, trusted: Sequence[IpNetwork]) -> bool:
    parsed = _parse(address)
    return parsed is not None and any(parsed in network for network in trusted)


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Every `X-Forwarded-For` line, joined in order: several lines of a header are one
    comma-separated list (RFC 9110 §5.3), so a proxy that adds its own line (HAProxy's
    `option forwardfor`) puts the address it saw last, where the walk starts."""
    lines = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return ",".join(lines) if lines else None


def scope_client_ip(scope: Any, trusted: Sequence[IpNetwork]) -> str:
    """The client IP of an ASGI request scope (the one function every surface uses)."""
    client = scope.get("client")
    peer = client[0] if client else None
    if not trusted:  # `client_ip` without proxies, inline (every request takes it)
        peer = peer or ""
        return _canonical(peer) if peer.startswith("::ffff:") else peer
    return client_ip(peer, forwarded_for(scope.get("headers") or ()), trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[IpNetwork]) -> str:
    """Walk `X-Forwarded-For` from the right while hops are trusted proxies; the first
    untrusted hop is the client. Unparseable hops end the walk at the last trusted one."""
    peer = peer or ""
    if not trusted or not forwarded_for:
        # the socket gives a canonical address already; only IPv4-mapped IPv6 needs work
        return _canonical(peer) if peer.startswith("::ffff:") else peer
    peer_text = _canonical(peer)
    if not is_trusted(peer_text, trusted):
        return peer_text
    current = peer_text
    for hop in reversed(forwarded_for.split(",")):
        address = _parse(hop)
        if address is None:
            return current
        current = str(address)
        if not any(address in network for network in trusted):
            return current
    return current


@lru_cache(maxsize=65_536)
def network_key(address: str) -> str:
    """What the throttles count by: an IPv4 address itself, an IPv6 address's /64 (one
    subscriber gets a whole /64, so counting single IPv6 addresses gives 2^64 budgets)."""
    if ":" not in address:
        return address
    parsed = _parse(address)
    if parsed is None:
        return address
    if parsed.version == 4:  # IPv4-mapped
        return str(parsed)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


def served_over_https(scope: Any, trusted: Sequence[IpNetwork], public_url: str | None) -> bool:
    """Whether the client reached us over HTTPS: directly (the ASGI scheme), through a
    trusted proxy that says so in `X-Forwarded-Proto` (its own, rightmost value), or
    because the deployment's public URL (`TALLYKEY_PUBLIC_URL`) is https. Decides the
    session cookie's `Secure` flag and HSTS."""
    if scope.get("scheme") == "https" or (public_url or "").lower().startswith("https://"):
        return True
    peer = scope["client"][0] if scope.get("client") else ""
    if not trusted or not is_trusted(peer, trusted):
        return False
    values = [value.decode("latin-1") for name, value in scope.get("headers") or ()
              if name == b"x-forwarded-proto"]
    return bool(values) and ",".join(values).split(",")[-1].strip().lower() == "https"
