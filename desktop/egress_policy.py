"""A session's network egress policy: which hosts the desktop may reach (``policy.network``).

Entries of ``allow`` and ``deny``:

* ``example.com`` — that host only (not ``www.example.com``);
* ``*.example.com`` — any subdomain at any depth (``a.example.com``, ``a.b.example.com``), not ``example.com``
  itself: list both to allow both;
* ``*`` — every host;
* a CIDR or an address (``10.0.0.0/8``, ``192.0.2.7``, ``::1``) — matched against the address the proxy
  actually connects to (it resolves names itself), and against IP-literal URLs.

A request is allowed when its host or address matches ``allow`` and neither matches ``deny``: block wins.
Hosts compare case-insensitively, without a trailing dot, in their IDNA (``xn--``) form.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deskpilot.errors import PolicyError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ENTRIES = 500
_MAX_HOST = 253


def normalize_host(host: str) -> str:
    """The comparable form of a host name; raises ``PolicyError`` for something that is not one."""
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name or len(name) > _MAX_HOST:
        raise PolicyError(f"not a host name: {host!r}")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        if parse_ip(name) is None:
            raise PolicyError(f"not a host name: {host!r}") from exc
    if any(c.isspace() or c in "/@?#\\" for c in name):
        raise PolicyError(f"not a host name: {host!r}")
    return name


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HostList:
    """Exact names, suffixes (from ``*.``), networks and ``*``, parsed once."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    everything: bool

    @classmethod
    def parse(cls, entries: Iterable[Any], what: str) -> HostList:
        items = list(entries)
        if len(items) > MAX_ENTRIES:
            raise PolicyError(f"network.{what}: at most {MAX_ENTRIES} entries")
        exact: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        everything = False
        for entry in items:
            if not isinstance(entry, str) or not entry.strip():
                raise PolicyError(f"network.{what}: each entry is a non-empty string, not {entry!r}")
            text = entry.strip()
            if text == "*":
                everything = True
            elif text.startswith("*."):
                suffixes.append("." + normalize_host(text[2:]))
            elif "/" in text:
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError as exc:
                    raise PolicyError(f"network.{what}: not a CIDR: {text!r}") from exc
            elif "*" in text:
                raise PolicyError(f"network.{what}: a wildcard only as a whole label prefix (*.example.com): "
                                  f"{text!r}")
            elif (ip := parse_ip(text)) is not None:
                networks.append(ipaddress.ip_network(ip))
            else:
                exact.add(normalize_host(text))
        return cls(frozenset(exact), tuple(suffixes), tuple(networks), everything)

    def matches(self, host: str, address: IPAddress | None) -> bool:
        if self.everything or host in self.exact or any(host.endswith(s) for s in self.suffixes):
            return True
        return address is not None and any(address in net for net in self.networks)

    def entries(self) -> list[str]:
        out = ["*"] if self.everything else []
        return out + sorted(self.exact) + ["*" + s for s in self.suffixes] + [str(n) for n in self.networks]


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allow: HostList
    deny: HostList

    @classmethod
    def from_lists(cls, allow: Iterable[Any], deny: Iterable[Any]) -> NetworkPolicy:
        return cls(HostList.parse(allow, "allow"), HostList.parse(deny, "deny"))

    @classmethod
    def from_spec(cls, spec: Any, default_allow: Iterable[str], default_deny: Iterable[str]) -> NetworkPolicy:
        """``policy.network`` of a session; a list left out takes the settings' default."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise PolicyError("policy.network must be an object with 'allow' and/or 'deny' lists")
        unknown = set(spec) - {"allow", "deny"}
        if unknown:
            raise PolicyError(f"policy.network: unknown keys {sorted(unknown)} (allow, deny)")
        allow, deny = spec.get("allow", list(default_allow)), spec.get("deny", list(default_deny))
        if not isinstance(allow, list) or not isinstance(deny, list):
            raise PolicyError("policy.network.allow and .deny are lists of strings")
        return cls.from_lists(allow, deny)

    def decide(self, host: str, address: IPAddress | None) -> str | None:
        """None when allowed, else the reason it is blocked (``deny`` or ``not_allowed``)."""
        if self.deny.matches(host, address):
            return "deny"
        if not self.allow.matches(host, address):
            return "not_allowed"
        return None

    def allowing(self, host: str) -> NetworkPolicy:
        """This policy with ``host`` added to ``allow`` (a ``deny`` entry still wins)."""
        name = normalize_host(host)
        return NetworkPolicy(HostList(self.allow.exact | {name}, self.allow.suffixes, self.allow.networks,
                                      self.allow.everything), self.deny)

    def to_spec(self) -> dict[str, list[str]]:
        return {"allow": self.allow.entries(), "deny": self.deny.entries()}
