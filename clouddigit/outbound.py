"""The one way to send a request to a URL a tenant typed (today: webhooks).

The worker runs next to things tenants must never reach: the object stores' masters and volume
servers on loopback, the database, the cloud's metadata address, the operator's private networks. One
webhook pointed at SeaweedFS's `/col/delete` once made a whole region's images unreadable. So a URL is
parsed strictly, its host is resolved once, every address it resolves to must be public (or in the
operator's allowlist, `OUTBOUND_ALLOWED_NETWORKS`), and the connection is made to that very address:
a name cannot resolve to a public address for the check and to 127.0.0.1 for the connection. The Host
header, TLS SNI and the certificate check still use the name. Redirects are never followed (a 3xx is
the answer), proxies from the environment are never used, the whole exchange has a deadline, and only a
little of the answer is read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ANSWER_BYTES = 4096
_FORBIDDEN_CHARACTERS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
# A host whose last label is a number is an address in one of the spellings inet_aton accepts
# (2130706433, 0x7f000001, 0177.0.0.1, 127.1): only the plain dotted form is taken.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """The request was not made or got no answer. The text is for the user and never holds the URL's
    path or query, which often are the webhook's secret."""


class Refused(OutboundError):
    """The URL is malformed, or leads to an address tenants may not reach: nothing was sent."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower-case; an IPv6 address without its brackets
    port: int
    path: str  # path and query, as sent in the request line
    netloc: str  # host[:port] as typed, for messages

    @property
    def is_literal(self) -> bool:
        return _literal(self.host) is not None


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    location: str


def parse(url: str) -> Target:
    """The URL's parts, or Refused if it is anything but a plain http(s) URL to a host name or address."""
    if _FORBIDDEN_CHARACTERS.search(url):
        raise Refused("the URL contains spaces, control characters or backslashes")
    if not url.isascii():
        raise Refused("the URL has non-ASCII characters; write an international name in its xn-- form")
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        raise Refused("the URL's host or port is malformed") from None
    scheme = split.scheme.lower()
    if scheme not in DEFAULT_PORTS or not split.netloc:
        raise Refused("the URL must start with http:// or https://")
    if "@" in split.netloc:
        raise Refused("the URL must not carry a user name or password (user@host)")
    if "%" in split.netloc:
        raise Refused("the URL's host must not have a zone (%)")
    if port == 0:
        raise Refused("the URL's port must be between 1 and 65535")
    host = (split.hostname or "").lower()
    if split.netloc.startswith("["):
        if not isinstance(_literal(host), ipaddress.IPv6Address):
            raise Refused(f"[{host}] is not an IPv6 address")
    else:
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise Refused(f"{host or 'the URL'} is not a valid host name")
        if _NUMERIC_LABEL.fullmatch(labels[-1]) and not isinstance(_literal(host), ipaddress.IPv4Address):
            raise Refused(f"write the address {host} as four decimal numbers, e.g. 203.0.113.7")
    path = split.path or "/"
    if split.query:
        path = f"{path}?{split.query}"
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], path, split.netloc)


def check(url: str) -> Target:
    """Parse `url` and resolve its host now: Refused if any address it resolves to is not allowed,
    OutboundError if it does not resolve. (Sending checks again: names change.)"""
    target = parse(url)
    _allowed_address(target)
    return target


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST `body` to `url`, connecting to the address that was checked. Any status is an answer,
    redirects included; Refused or OutboundError if there was none."""
    target = parse(url)
    address = _allowed_address(target)
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(
            target.host, target.port, address=address, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = _PinnedHTTPConnection(target.host, target.port, address=address, timeout=timeout)
    # Socket timeouts bound each read, not the whole exchange: a receiver trickling its headers a byte at
    # a time would hold the caller (the scheduler's tick) for hours. At the deadline the socket is cut.
    expired = threading.Event()
    deadline = threading.Timer(timeout, _cut, [connection, expired])
    deadline.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)
        answer = Answer(response.status, response.reason, response.getheader("Location", ""))
    except (OSError, http.client.HTTPException) as error:
        raise _failure(target, error, timeout, expired.is_set()) from None
    finally:
        deadline.cancel()
        connection.close()
    if expired.is_set():  # a cut stream can still parse as an answer: it is not one
        raise _too_slow(target, timeout)
    return answer


def _cut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    expired.set()
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also under TLS: the reading thread sees the end of the stream.
            socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)


def _too_slow(target: Target, timeout: float) -> OutboundError:
    return OutboundError(f"{target.netloc} did not answer within {timeout:g} s")


def _failure(target: Target, error: Exception, timeout: float, expired: bool) -> OutboundError:
    if expired or isinstance(error, TimeoutError):
        return _too_slow(target, timeout)
    if isinstance(error, ssl.SSLError):
        reason = getattr(error, "verify_message", None) or error.reason or str(error)
        return OutboundError(f"could not connect to {target.netloc}: {reason}")
    if isinstance(error, OSError):
        return OutboundError(f"could not connect to {target.netloc}: {error.strerror or error}")
    return OutboundError(f"{target.netloc} did not answer in HTTP: {type(error).__name__}")


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to. Tests replace this (they never ask a real resolver)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def refusal(address: Address) -> str:
    """Why tenants may not reach `address` ("a loopback address"), or "" if they may."""
    carried = _carried_ipv4(address)
    candidates = [address] if carried is None else [carried, address]
    if any(candidate in network for candidate in candidates for network in _allowlist()):
        return ""
    for candidate in candidates:
        if candidate.is_unspecified:
            return "an unspecified address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local:
            return "a site-local address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved:
            return "a reserved address"
        if not candidate.is_global:
            return "a shared (carrier-grade NAT) address"
    return ""


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _carried_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped, NAT64, 6to4 or Teredo."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _allowlist() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(network, strict=False) for network in settings.OUTBOUND_ALLOWED_NETWORKS]


def _allowed_address(target: Target) -> str:
    """Resolve the target's host once and return the address to connect to; every address it resolves
    to must be allowed (one bad answer among good ones is refused: which one is used is not ours)."""
    try:
        addresses = resolve(target.host, target.port)
    except (OSError, UnicodeError):
        raise OutboundError(f"{target.host} does not resolve") from None
    if not addresses:
        raise OutboundError(f"{target.host} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.partition("%")[0])
        reason = refusal(address)
        if reason and target.is_literal:
            raise Refused(f"{address} is {reason}, not a public one")
        if reason:
            raise Refused(f"{target.host} resolves to {address}, {reason}, not a public one")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Sends `Host: <host>` but connects to `address`, the one that was checked."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As _PinnedHTTPConnection, with TLS whose SNI and certificate check use the host name."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self.address, self.context = address, context

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.context.wrap_socket(sock, server_hostname=self.host)
