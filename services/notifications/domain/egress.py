"""Where webhooks may go (SSRF): only to public addresses, unless the operator allow-listed a host or network.

Pure rules; resolving host names and connecting are the adapters' (adapters/egress.py), which ask
`EgressPolicy.refusal` about every address a host name resolves to, at registration and again at every
connection, and connect only to addresses that passed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Special-purpose ranges (IANA's IPv4 and IPv6 special-purpose address registries), most specific first,
# with the reason a refusal names. Addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are
# judged by the embedded address first (see `refusal`).
_SPECIAL: list[tuple[str, str]] = [
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "'this network' (reserved)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (reserved)"),
    ("192.0.2.0/24", "documentation (reserved)"),
    ("192.88.99.0/24", "6to4 relay anycast (reserved)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (reserved)"),
    ("198.51.100.0/24", "documentation (reserved)"),
    ("203.0.113.0/24", "documentation (reserved)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated, reserved)"),
    ("64:ff9b:1::/48", "local-use NAT64 (reserved)"),
    ("100::/64", "discard-only (reserved)"),
    ("2001::/23", "IETF protocol assignments (reserved)"),
    ("2001:db8::/32", "documentation (reserved)"),
    ("fc00::/7", "unique local (ULA, private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated, private)"),
    ("ff00::/8", "multicast"),
]
SPECIAL_RANGES: list[tuple[IPNetwork, str]] = [(ipaddress.ip_network(n), why) for n, why in _SPECIAL]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def parse_ip(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal (IPv6 with or without brackets), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002::/16), NAT64 (64:ff9b::/96)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def special_purpose(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address (e.g. "loopback"), or None when it is one."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = special_purpose(inner)
        return f"{why}, embedded in {ip}" if why else None
    for net, why in SPECIAL_RANGES:
        if ip.version == net.version and ip in net:
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Public unicast addresses only, except allow-listed host names and networks (e.g. 127.0.0.1 in tests,
    a partner's endpoint inside the district's network)."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)  # lower-case host names
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """Entries are host names, IP addresses or CIDR networks ("hooks.partner.internal", "127.0.0.1", "10.20.0.0/16")."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            ip = parse_ip(entry)
            if ip is not None:
                networks.append(ipaddress.ip_network(ip))
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{entry!r} is not a CIDR network") from None
                continue
            if not _HOST.fullmatch(entry):
                raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR network")
            hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        """An allow-listed host name: whatever it resolves to is accepted."""
        return host.lower().rstrip(".") in self.allowed_hosts

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a connection to `ip` is refused, or None when it may be made."""
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return None
        inner = embedded_ipv4(ip)
        if inner is not None and any(net.version == 4 and inner in net for net in self.allowed_networks):
            return None
        return special_purpose(ip)
