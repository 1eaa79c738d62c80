"""Which IP addresses are public: one rule for every place onair decides whether
to reach an address a stranger named (webhook receivers, WebRTC candidates).

Not public: loopback, private (RFC 1918), shared/CGNAT (100.64/10), link-local
(169.254/16 with the cloud metadata address, fe80::/10), ULA (fc00::/7),
multicast, unspecified, documentation and other reserved ranges, and IPv6
forms that embed such an IPv4 address (mapped, NAT64, 6to4).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    return None


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = _embedded_v4(ip)
        if v4 is not None:
            return is_public(v4)
    return ip.is_global and not ip.is_multicast


def is_public_text(address: str) -> bool:
    """`is_public` of an address written as text; False for what is not an address."""
    try:
        return is_public(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return False


def client_subject(remote: str | None) -> str:
    """Whom a per-address limit counts: the address, or its /64 for IPv6 (one
    host holds a whole /64, so per-address counts would be free for the taking)."""
    if not remote:
        return "unknown"
    try:
        ip = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)
