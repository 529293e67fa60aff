"""SSRF protection for downloads: which network endpoints an artifact may be fetched from.

Before RouteIQ connects to an endpoint (a custom S3 or GCS endpoint, an HTTP(S) URL), it
resolves the host and refuses it when any address is loopback, private, link-local, shared
(CGNAT), multicast, reserved or unspecified, unless one of these allows it:

- `ROUTEIQ_SSRF_HOST_ALLOWLIST`: the host name itself is listed (exact match, no wildcards);
- `ROUTEIQ_SSRF_CIDR_ALLOWLIST`: every address the host resolves to is in a listed network;
- `ROUTEIQ_SSRF_ALLOW_PRIVATE=true`: non-public addresses are allowed, except the cloud
  instance-metadata addresses (169.254.169.254 and friends), which stay refused unless
  allowlisted by host or CIDR, since they hand out credentials.

The check resolves the name once and the HTTP client resolves it again when it connects; a
DNS answer that changes in between (DNS rebinding) is not caught here. Allowlist the exact
endpoint host in production.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from routeiq_router.artifacts.manifest import ArtifactError

if TYPE_CHECKING:
    from routeiq_router.settings import RouteIQSettings

__all__ = [
    "METADATA_ADDRESSES",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "SsrfError",
    "SsrfPolicy",
    "resolve_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int | None], list[str]]

# instance-metadata services (AWS/GCP/Azure/OpenStack, ECS, EKS pod identity, Alibaba)
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.170.23",
        "100.100.100.200",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")


class SsrfError(ArtifactError):
    """A download refused by the SSRF policy; the message names the host, address and setting."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="ssrf")


def resolve_host(host: str, port: int | None) -> list[str]:
    """Every address `host` resolves to (the system resolver, as the HTTP client will use)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _non_public_kind(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address, or None when it is one."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return _non_public_kind(embedded)
    checks = (
        ("shared (carrier-grade NAT)", address in _SHARED),
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for kind, hit in checks:
        if hit:
            return kind
    return None if address.is_global else "not globally routable"


@dataclass(frozen=True)
class SsrfPolicy:
    """Which endpoints downloads may reach; build it with `from_settings` in the gateway."""

    allow_private: bool = False
    host_allowlist: frozenset[str] = frozenset()
    cidr_allowlist: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=resolve_host, compare=False, repr=False)

    @classmethod
    def from_values(
        cls,
        *,
        allow_private: bool = False,
        hosts: Iterable[str] = (),
        cidrs: Iterable[str] = (),
        resolver: Resolver = resolve_host,
    ) -> SsrfPolicy:
        return cls(
            allow_private=allow_private,
            host_allowlist=frozenset(_host_key(host) for host in hosts if host.strip()),
            cidr_allowlist=tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs),
            resolver=resolver,
        )

    @classmethod
    def from_settings(cls, settings: RouteIQSettings) -> SsrfPolicy:
        """From `ROUTEIQ_SSRF_ALLOW_PRIVATE`, `ROUTEIQ_SSRF_HOST_ALLOWLIST`, `ROUTEIQ_SSRF_CIDR_ALLOWLIST`."""
        return cls.from_values(
            allow_private=settings.ssrf_allow_private,
            hosts=settings.ssrf_host_allowlist,
            cidrs=settings.ssrf_cidr_allowlist,
        )

    def _in_cidr_allowlist(self, address: IPAddress) -> bool:
        return any(
            address.version == network.version and address in network for network in self.cidr_allowlist
        )

    def check_host(self, host: str, port: int | None = None) -> None:
        """Raise SsrfError unless every address of `host` may be reached."""
        if _host_key(host) in self.host_allowlist:
            return
        try:
            addresses = [ipaddress.ip_address(item.split("%", 1)[0]) for item in self.resolver(host, port)]
        except (OSError, UnicodeError, ValueError) as error:
            raise SsrfError(f"endpoint host {host!r} does not resolve ({error}); refused") from None
        if not addresses:
            raise SsrfError(f"endpoint host {host!r} resolves to no address; refused")
        for address in addresses:
            if self._in_cidr_allowlist(address):
                continue
            if address in METADATA_ADDRESSES or (
                (embedded := _embedded_ipv4(address)) is not None and embedded in METADATA_ADDRESSES
            ):
                raise SsrfError(
                    f"endpoint host {host!r} resolves to {address}, a cloud instance-metadata address; "
                    "refused (add the host to ROUTEIQ_SSRF_HOST_ALLOWLIST or the address to "
                    "ROUTEIQ_SSRF_CIDR_ALLOWLIST if this is really intended)"
                )
            kind = _non_public_kind(address)
            if kind is not None and not self.allow_private:
                raise SsrfError(
                    f"endpoint host {host!r} resolves to {address}, a {kind} address; refused "
                    "(allow it with ROUTEIQ_SSRF_HOST_ALLOWLIST, ROUTEIQ_SSRF_CIDR_ALLOWLIST or "
                    "ROUTEIQ_SSRF_ALLOW_PRIVATE=true)"
                )

    def check_url(self, url: str) -> None:
        """Raise SsrfError unless `url` is http(s) and its host may be reached."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"}:
            raise SsrfError(f"endpoint {url!r}: only http:// and https:// endpoints are allowed")
        try:
            port = parts.port
        except ValueError:
            raise SsrfError(f"endpoint {url!r}: invalid port") from None
        if not parts.hostname:
            raise SsrfError(f"endpoint {url!r} has no host")
        self.check_host(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
