"""Whether Darkroom may send a request to a URL it was given (a webhook now, an image URL later).

A URL from a client must not turn the server into a proxy onto its own network: the cloud
metadata service at 169.254.169.254, a database on 10.x, an admin port on localhost. So a URL is
refused unless its scheme is https (or http where allowed), it carries no credentials, and EVERY
address its host resolves to is globally routable, unless the operator allow-listed the host or a
CIDR containing the address.

A check is only as good as the connection that follows it: a host that resolved to a public
address a moment ago can resolve to 127.0.0.1 now (DNS rebinding). `send_pinned` therefore sends
to the vetted address itself, with the original host in the Host header and the TLS server name,
through a `safe_client` that takes no proxy from the environment and follows no redirect, so
what is checked is what is reached.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DEFAULT_PORTS = {"https": 443, "http": 80}
# Of a host's vetted addresses, in resolver order, how many a request tries until one connects.
MAX_ADDRESSES_TRIED = 3
# RFC 6052's well-known NAT64 prefix: 64:ff9b::a.b.c.d reaches IPv4 a.b.c.d through a gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """The URL may not be requested; the message says why and which setting would allow it."""


@dataclass(frozen=True)
class PinnedRequest:
    """Where to send a request so that it reaches one vetted address and nothing else."""

    url: str  # the original URL with its host replaced by the address
    host_header: str  # the original host[:port], for the Host header
    sni_hostname: str | None  # the original hostname, for TLS (None for http)


@dataclass(frozen=True)
class CheckedURL:
    url: str
    scheme: str
    hostname: str
    port: int
    addresses: tuple[IPAddress, ...]  # every address the host resolved to, all of them allowed

    def pinned(self, address: IPAddress) -> PinnedRequest:
        parts = urlsplit(self.url)
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        url = SplitResult(parts.scheme, netloc, parts.path or "/", parts.query, "").geturl()
        return PinnedRequest(
            url=url,
            host_header=parts.netloc,
            sni_hostname=self.hostname if self.scheme == "https" else None,
        )


def check_url(
    url: str,
    *,
    allow_http: bool,
    allowed_hosts: Iterable[str],
    allow_http_setting: str = "DARKROOM_WEBHOOK_ALLOW_HTTP",
    allowed_hosts_setting: str = "DARKROOM_WEBHOOK_ALLOWED_HOSTS",
) -> CheckedURL:
    """The URL and its vetted addresses, or `UnsafeURL`. Resolves the host (a DNS look-up): call
    it when the URL arrives and again right before each request."""
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURL(f"The URL must start with https:// (got '{scheme or 'no'}' scheme).")
    if scheme == "http" and not allow_http:
        raise UnsafeURL(
            "The URL must use https://; plain http is refused unless the server sets "
            f"{allow_http_setting}=true."
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(
            "The URL must not carry credentials (user:password@); put them in its path or query."
        )
    hostname = (parts.hostname or "").rstrip(".")
    if not hostname:
        raise UnsafeURL("The URL has no host.")
    port = _port_of(parts, scheme)
    host_names, networks = _parse_allowed(allowed_hosts)
    addresses = _resolve(hostname, port)
    if hostname not in host_names:
        for address in addresses:
            _refuse_if_internal(hostname, address, networks, allowed_hosts_setting)
    return CheckedURL(url=url, scheme=scheme, hostname=hostname, port=port, addresses=addresses)


def safe_client(*, tls_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """A client for URLs that came from outside: no proxy from the environment (it would connect
    somewhere other than what was checked) and no redirects (a 3xx may point anywhere).

    It has no timeout of its own: its caller bounds the whole exchange (connect, TLS, headers,
    body) with one deadline, `asyncio.timeout`, which cancels it wherever it waits. A timeout
    per read, which is all httpx offers, lets a server dripping a byte at a time hold it for ever."""
    import httpx  # here, not at the top: settings import this module, few processes send requests

    return httpx.AsyncClient(
        timeout=None, follow_redirects=False, trust_env=False, verify=tls_context or True
    )


@asynccontextmanager
async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    checked: CheckedURL,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """Send to the checked addresses themselves, trying the next one only when one cannot be
    reached; the response is streamed, so a caller that needs only the status reads no body."""
    import httpx

    last_error: Exception | None = None
    for address in checked.addresses[:MAX_ADDRESSES_TRIED]:
        pinned = checked.pinned(address)
        extensions: dict[str, Any] = {}
        if pinned.sni_hostname:
            extensions["sni_hostname"] = pinned.sni_hostname
        request = client.build_request(
            method,
            pinned.url,
            headers={**headers, "host": pinned.host_header},
            content=content,
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            last_error = error
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    assert last_error is not None  # check_url never returns a URL without addresses
    raise last_error


def parse_allowed_entry(entry: str) -> str | IPNetwork:
    """One allow-list entry: a CIDR or an IP address (as a network), else a lower-case hostname."""
    entry = entry.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    if not entry:
        raise ValueError("an empty entry")
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        if "/" in entry:
            raise ValueError(f"'{entry}' is neither a hostname nor a valid CIDR") from None
        return entry


def _split(url: str) -> SplitResult:
    if any(char.isspace() or ord(char) < 0x20 for char in url):
        raise UnsafeURL("The URL contains whitespace or control characters.")
    try:
        return urlsplit(url)
    except ValueError as error:
        raise UnsafeURL(f"The URL is malformed: {error}.") from None


def _port_of(parts: SplitResult, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise UnsafeURL("The URL's port is not a number between 0 and 65535.") from None
    if port == 0:
        raise UnsafeURL("The URL's port must not be 0.")
    return port or _DEFAULT_PORTS[scheme]


def _parse_allowed(entries: Iterable[str]) -> tuple[set[str], list[IPNetwork]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        parsed = parse_allowed_entry(entry)
        if isinstance(parsed, str):
            names.add(parsed)
        else:
            networks.append(parsed)
    return names, networks


def _resolve(hostname: str, port: int) -> tuple[IPAddress, ...]:
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeURL(f"The URL's host '{hostname}' does not resolve ({error}).") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # A scoped IPv6 address ("fe80::1%eth0") names its interface after the '%'.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURL(f"The URL's host '{hostname}' resolves to no address.")
    return tuple(addresses)


def _is_ip_literal(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (::ffff:a.b.c.d, 6to4, NAT64), if any."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _why_internal(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a globally routable unicast one."""
    for flag, kind in (
        ("is_unspecified", "an unspecified"),
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_private", "a private"),
        ("is_reserved", "a reserved"),
    ):
        if getattr(address, flag):
            return kind
    return None if address.is_global else "a non-public"


def _refuse_if_internal(
    hostname: str, address: IPAddress, networks: list[IPNetwork], setting: str
) -> None:
    embedded = _embedded_ipv4(address)
    candidates = [address] if embedded is None else [address, embedded]
    if any(candidate in network for candidate in candidates for network in networks):
        return
    kind = _why_internal(embedded if embedded is not None else address)
    if kind is None:
        return
    where = f"'{hostname}' is" if _is_ip_literal(hostname) else f"The host '{hostname}' resolves to"
    raise UnsafeURL(
        f"{where} {kind} address; requests to private, loopback, link-local and other non-public "
        f"networks are refused. The server can allow it by adding the host or a CIDR containing "
        f"the address to {setting}."
    )
