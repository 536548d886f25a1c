"""Client IP: X-Forwarded-For counts only behind trusted proxies."""

from __future__ import annotations

import ipaddress
from typing import Any

from tallykey.network.client_ip import client_ip, forwarded_for, scope_client_ip

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_without_trusted_proxies_the_socket_peer_is_the_client() -> None:
    assert client_ip("198.51.100.4", "203.0.113.1", ()) == "198.51.100.4"


def test_a_forged_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("198.51.100.4", "203.0.113.1", TRUSTED) == "198.51.100.4"


def test_behind_trusted_proxies_the_first_untrusted_hop_from_the_right_wins() -> None:
    assert client_ip("10.0.0.2", "203.0.113.1", TRUSTED) == "203.0.113.1"
    assert client_ip("10.0.0.2", "6.6.6.6, 203.0.113.1, 10.1.1.1", TRUSTED) == "203.0.113.1"
    assert client_ip("fd00::1", "2001:db8::5", TRUSTED) == "2001:db8::5"


def test_garbage_hops_stop_the_walk_at_the_last_trusted_address() -> None:
    assert client_ip("10.0.0.2", "not-an-ip", TRUSTED) == "10.0.0.2"
    assert client_ip("10.0.0.2", "", TRUSTED) == "10.0.0.2"


def test_ipv4_mapped_ipv6_peers_are_normalised() -> None:
    assert client_ip("::ffff:10.0.0.2", "203.0.113.1", TRUSTED) == "203.0.113.1"
    assert client_ip("::ffff:198.51.100.4", None, ()) == "198.51.100.4"


def test_every_forwarded_for_line_counts_in_order() -> None:
    scope: dict[str, Any] = {"client": ("10.0.0.2", 5000), "headers": [
        (b"x-forwarded-for", b"203.0.113.1"), (b"user-agent", b"x"),
        (b"x-forwarded-for", b"198.51.100.9, 10.0.0.3")]}
    assert forwarded_for(scope["headers"]) == "203.0.113.1,198.51.100.9, 10.0.0.3"
    assert scope_client_ip(scope, TRUSTED) == "198.51.100.9"
    assert scope_client_ip(scope, ()) == "10.0.0.2"
