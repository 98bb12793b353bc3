"""Where a webhook may be sent: `https` URLs whose host resolves only to public addresses.

The check runs at creation and again before each attempt, and the attempt connects to the very
address that was checked (webhooks.delivery), so a DNS answer that changes in between (rebinding)
cannot steer a delivery into a private network. WEBHOOK_ALLOW_PRIVATE_TARGETS=1 lifts the rule
for local work and tests (`http`, loopback and private addresses)."""

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
# Characters RFC 3986 never allows raw in a URI: controls, space and " < > \ ^ ` { | }.
_NOT_IN_A_URL = re.compile(r'[\x00-\x20\x7f"<>\\^`{|}]')

# (host, port) -> addresses; socket.getaddrinfo by default.
Resolver = Callable[[str, int], list[str]]


class TargetRefused(ValueError):
    """The URL may not receive webhooks; the message says why, for the developer."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # as written in the URL: the Host header and the TLS server name
    port: int
    address: str  # the checked address the attempt connects to
    path: str  # path and query


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise TargetRefused(f"The host {host!r} does not resolve.") from err
    return [info[4][0] for info in infos]


def check(url: str, allow_private: bool, resolve: Resolver = system_resolver) -> Target:
    """The target for `url`, or TargetRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    bad = _NOT_IN_A_URL.search(url)
    if bad:
        # RFC 3986 allows none of these raw; a URL echoed into a page, a log line or a header
        # with `"`, `<` or `>` in it is one step from markup. Percent-encoded they are fine.
        shown = repr(bad.group()) if bad.group().isprintable() else f"U+{ord(bad.group()):04X}"
        raise TargetRefused(f"The URL may not contain {shown} as is: percent-encode it.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise TargetRefused("The URL is not valid.") from err
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed_schemes:
        raise TargetRefused("Webhook URLs must use https.")
    if not parts.hostname:
        raise TargetRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("The URL may not carry a user name or password.")
    if parts.fragment:
        raise TargetRefused("The URL may not have a #fragment.")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(parts.hostname, port)
    if not addresses:
        raise TargetRefused(f"The host {parts.hostname!r} does not resolve.")
    if not allow_private:
        for address in addresses:
            if not _is_public(address):
                raise TargetRefused(f"The host {parts.hostname!r} resolves to a non-public address ({address}).")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, parts.hostname, port, addresses[0], path)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
