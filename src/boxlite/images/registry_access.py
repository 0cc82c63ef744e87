"""Which addresses a pull may connect to when an untrusted caller chose the image reference.

A pull sends requests to the host the reference names, to the token realm its registry names
and to wherever blob downloads are redirected: all chosen by the caller or by its registry. For
the library's own user that is their machine; for a REST client of ``boxlite serve`` it would make
the server a proxy into its own network (loopback services, the cloud metadata address, a
private LAN: a token realm URL is an arbitrary GET with a query string). Pulls for such callers
run under a :class:`RegistryAccess` (set in a context variable by the server, read when a pull
opens its HTTP client): every connection then goes to a public address only, unless the
operator listed its host (``boxlite serve --allow-registry HOST[:PORT]``) or configured it
as a registry of the home. The check is made on the address actually connected to, after
resolution (a name that resolves differently the second time gains nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..errors import ConfigError, PermissionDeniedError


@dataclass(frozen=True)
class RegistryAccess:
    """Public addresses plus the listed hosts (``"host"``: any port, ``"host:port"``: that port)."""

    listed: frozenset[tuple[str, int | None]] = field(default_factory=frozenset)

    @classmethod
    def of(cls, entries: Iterable[str]) -> RegistryAccess:
        """From ``HOST[:PORT]`` entries (ConfigError for anything else: a URL, a path, a bad port)."""
        return cls(frozenset(parse_entry(e) for e in entries))

    def with_hosts(self, hosts: Iterable[str]) -> RegistryAccess:
        """Also the registries a home configures (the operator named them; one that is not a
        plain ``HOST[:PORT]`` is left out)."""
        extra = set()
        for host in hosts:
            try:
                extra.add(parse_entry(host))
            except ConfigError:
                continue
        return RegistryAccess(self.listed | extra)

    def lists(self, host: str, port: int) -> bool:
        key = host.lower().strip("[]")
        return (key, port) in self.listed or (key, None) in self.listed

    def refuse(self, host: str, port: int) -> PermissionDeniedError:
        return PermissionDeniedError(
            f"registry {host}:{port}: not at a public address; this server pulls for its clients from "
            "public addresses only, and from the hosts its operator lists (boxlite serve --allow-registry)"
        )


def parse_entry(entry: str) -> tuple[str, int | None]:
    """``"host"``, ``"host:port"``, ``"[v6]:port"`` -> (lower-case host, port or None)."""
    from urllib.parse import urlsplit

    text = entry.strip()
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ConfigError(f"registry {entry!r}: {e}: give HOST or HOST:PORT") from None
    if not text or not host or parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ConfigError(f"registry {entry!r}: give HOST or HOST:PORT")
    return host, port


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is globally routable: not loopback, private, link-local
    (cloud metadata), shared (CGNAT), multicast, reserved or unspecified, including an IPv4 address
    inside an IPv6 one (mapped, or NAT64's well-known prefix)."""
    import ipaddress  # here: the module is imported by every runtime, pulls are rare

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(str(ip.ipv4_mapped))
        if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64's well-known prefix
            return is_public(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return ip.is_global and not ip.is_multicast


_CURRENT: ContextVar[RegistryAccess | None] = ContextVar("boxlite_registry_access", default=None)


def current_access() -> RegistryAccess | None:
    """The access of the caller whose pull this is (None: the library's own user, unrestricted)."""
    return _CURRENT.get()


@contextmanager
def restricted(access: RegistryAccess | None) -> Iterator[None]:
    """Pulls started in this context (and in tasks it creates) connect as ``access`` allows
    (None: no restriction)."""
    token = _CURRENT.set(access)
    try:
        yield
    finally:
        _CURRENT.reset(token)
