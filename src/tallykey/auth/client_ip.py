"""The client's IP: the socket peer, or `X-Forwarded-For` only when the peer is a trusted
proxy — so a forged header can never get past an allow-list."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

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
