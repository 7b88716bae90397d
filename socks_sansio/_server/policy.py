"""What a proxy server allows: users and their passwords, and access rules. Pure.

Users. A user list maps names to stored passwords, either in plain text or
hashed with PBKDF2-SHA256 in one of three forms (make the first with
:meth:`UserDatabase.hash_password` or ``socks-sansio hash-password``):

* ours: ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>``;
* Django's: ``pbkdf2_sha256$<iterations>$<salt text>$<hash base64>`` (the
  salt's UTF-8 octets are the salt; the hash is standard base64, 44 characters
  ending in ``=``). It shares our prefix and is told apart by its last field:
  hex digits only is ours, base64 with its ``=`` padding is Django's (a hex
  string never holds ``=``, so no value is both);
* passlib's: ``$pbkdf2-sha256$<rounds>$<salt>$<checksum>``, salt and checksum
  in passlib's adapted base64 (``.`` for ``+``, no padding).

Any other value, including one that starts with a hash prefix but does not
parse, is refused when the list is built, not at the first login (so a plain
password may not start with ``pbkdf2_sha256$`` or ``$pbkdf2-sha256$``).
Checks compare in constant time and do
the same work for unknown users, so timing does not reveal which names exist.
A hashed password, once verified, is remembered as a salted digest so that a
busy server does not re-run PBKDF2 for every connection of the same user.

Rules. An ordered list of ``allow``/``deny`` rules, each matching on the client
network, the destination (network or host-name pattern) and the port; the
first rule that matches decides, and the default decides when none does. The
SSRF guard (``block_private``) refuses destinations in private, loopback,
link-local, multicast, reserved or unspecified address space. Destinations are
checked twice: by name before resolution, and by address after it, so a name
that resolves to 127.0.0.1 cannot smuggle a private target past the rules.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final, Literal, final

import attrs

from .._address import Address, parse_ip_literal
from .._errors import LocalProtocolError

__all__ = ["AccessPolicy", "AccessRule", "UserDatabase", "ip_literal", "is_private"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HASH_PREFIX: Final = "pbkdf2_sha256$"  # ours, and Django's
_PASSLIB_PREFIX: Final = "$pbkdf2-sha256$"
_HASH_PREFIXES: Final = (_HASH_PREFIX, _PASSLIB_PREFIX)
_DEFAULT_ITERATIONS: Final = 200_000
_SHA256_SIZE: Final = 32
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


@final
class UserDatabase:
    """Usernames and their passwords (plain, or PBKDF2-SHA256 hashed).

    Args:
        users: username -> stored password (``str`` plain text, or a hash from
            :meth:`hash_password`). Names and passwords are UTF-8 on the wire.
    """

    __slots__ = ("_cache", "_dummy", "_users")

    DEFAULT_ITERATIONS: ClassVar[int] = _DEFAULT_ITERATIONS
    """PBKDF2 iterations :meth:`hash_password` uses unless told otherwise."""

    def __init__(self, users: Mapping[str | bytes, str]) -> None:
        self._users: dict[bytes, str] = {}
        for name, stored in users.items():
            key = name.encode() if isinstance(name, str) else bytes(name)
            if not 1 <= len(key) <= 255:
                raise LocalProtocolError(f"user name {name!r} must be 1 to 255 octets")
            if stored.startswith(_HASH_PREFIXES):
                try:
                    _parse_hash(stored)  # refuse a malformed hash now, not at the first login
                except LocalProtocolError as exc:
                    raise LocalProtocolError(f"user {name!r}: {exc.message}") from None
            self._users[key] = stored
        self._cache: dict[bytes, bytes] = {}
        # Checked for unknown names, so that they cost what a wrong password for a known one costs.
        hashed = [_parse_hash(v)[0] for v in self._users.values() if v.startswith(_HASH_PREFIXES)]
        self._dummy = f"{_HASH_PREFIX}{max(hashed)}$00${'00' * 32}" if hashed else "\0" * 16

    def __len__(self) -> int:
        return len(self._users)

    def __repr__(self) -> str:
        return f"UserDatabase(<{len(self._users)} users>)"

    @classmethod
    def from_lines(cls, lines: Iterable[str], *, source: str = "user list") -> UserDatabase:
        """Parse ``user:password`` lines (the password may be a hash); ``#`` comments and blank lines are skipped.

        Raises:
            LocalProtocolError: a line without ``:``, or an empty user name; the
                message gives the line number, never the password.
        """
        users: dict[str | bytes, str] = {}
        for number, raw in enumerate(lines, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, colon, password = line.partition(":")
            if not colon or not name:
                raise LocalProtocolError(f"{source} line {number}: expected 'user:password'")
            users[name] = password
        return cls(users)

    @staticmethod
    def hash_password(
        password: str | bytes, *, iterations: int = _DEFAULT_ITERATIONS, salt: bytes | None = None
    ) -> str:
        """Hash *password* for storage: ``pbkdf2_sha256$iterations$salt$hash`` (salt and hash in hex).

        Args:
            password: the password (``str`` is encoded as UTF-8, as on the wire).
            iterations: PBKDF2-SHA256 iterations (:attr:`DEFAULT_ITERATIONS` by default).
            salt: the salt; 16 random octets by default.
        """
        secret = password.encode() if isinstance(password, str) else password
        salt = os.urandom(16) if salt is None else salt
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
        return f"{_HASH_PREFIX}{iterations}${salt.hex()}${digest.hex()}"

    def check(self, username: bytes, password: bytes) -> bool:
        """Whether *password* is *username*'s password (constant-time comparison)."""
        stored = self._users.get(username)
        if stored is None:  # the same work for a name that does not exist
            if self._dummy.startswith(_HASH_PREFIX):
                _verify(self._dummy, password)
            else:
                hmac.compare_digest(self._dummy.encode(), password)
            return False
        if not stored.startswith(_HASH_PREFIXES):
            return hmac.compare_digest(stored.encode(), password)
        remembered = self._cache.get(username)
        quick = hashlib.sha256(stored.encode() + b"\0" + password).digest()
        if remembered is not None and hmac.compare_digest(remembered, quick):
            return True
        if _verify(stored, password):
            self._cache[username] = quick
            return True
        return False


def _decimal(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError("iterations must be a positive decimal number")
    return int(text)


def _ab64(text: str) -> bytes:
    """passlib's adapted base64: ``.`` for ``+``, no padding."""
    return base64.b64decode(text.replace(".", "+") + "=" * (-len(text) % 4), validate=True)


def _parse_hash(stored: str) -> tuple[int, bytes, bytes]:
    """``(iterations, salt, digest)`` of a stored hash in any of the three forms (see the module docstring)."""
    fields = stored.split("$")
    try:
        if stored.startswith(_PASSLIB_PREFIX):
            _, _, rounds, salt, checksum = fields
            iterations, salt_octets, digest = _decimal(rounds), _ab64(salt), _ab64(checksum)
        else:
            _, count, salt, encoded = fields
            iterations = _decimal(count)
            if encoded and _HEX_DIGITS.issuperset(encoded):  # ours: hex digits only
                return iterations, bytes.fromhex(salt), bytes.fromhex(encoded)
            if len(encoded) != 44 or not encoded.endswith("="):
                raise ValueError("the hash is neither hex nor Django's base64")
            salt_octets, digest = salt.encode(), base64.b64decode(encoded, validate=True)
        if len(digest) != _SHA256_SIZE:  # Django's and passlib's: the whole SHA-256 output
            raise ValueError("a PBKDF2-SHA256 hash is 32 octets")
        return iterations, salt_octets, digest
    except (ValueError, binascii.Error):  # binascii.Error is a ValueError; named for the reader
        raise LocalProtocolError(
            "a stored password hash must look like pbkdf2_sha256$ITERATIONS$SALT_HEX$HASH_HEX (socks-sansio "
            "hash-password), pbkdf2_sha256$ITERATIONS$SALT$HASH_BASE64 (Django) or "
            "$pbkdf2-sha256$ROUNDS$SALT$CHECKSUM (passlib)"
        ) from None


def _verify(stored: str, password: bytes) -> bool:
    iterations, salt, digest = _parse_hash(stored)
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password, salt, iterations), digest)


def _networks(values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    out = []
    for value in values:
        try:
            out.append(value if not isinstance(value, str) else ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise LocalProtocolError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or ::1/128)") from None
    return tuple(out)


def _patterns(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(pattern.lower().rstrip(".") for pattern in values)


def _ports(values: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out = tuple(values)
    for low, high in out:
        if not 0 <= low <= high <= 0xFFFF:
            raise LocalProtocolError(f"port range {low}-{high} is not within 0-65535")
    return out


@final
@attrs.frozen(kw_only=True)
class AccessRule:
    """One ``allow`` or ``deny`` rule. An empty criterion matches everything.

    Attributes:
        action: ``"allow"`` or ``"deny"``.
        clients: client networks.
        networks: destination networks (matched on the resolved address).
        hosts: destination host-name patterns (``*.example.com``; case-insensitive).
        ports: destination port ranges, inclusive.
    """

    action: Literal["allow", "deny"] = attrs.field(validator=attrs.validators.in_(("allow", "deny")))
    clients: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    networks: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    hosts: tuple[str, ...] = attrs.field(default=(), converter=_patterns)
    ports: tuple[tuple[int, int], ...] = attrs.field(default=(), converter=_ports)

    @classmethod
    def parse(cls, action: Literal["allow", "deny"], text: str) -> AccessRule:
        """Parse ``from=NET to=NET|PATTERN port=N|N-M`` (each key repeatable; ``,`` separates values).

        Examples: ``to=10.0.0.0/8``, ``from=192.168.0.0/16 port=443``, ``to=*.internal port=1-1023``.

        Raises:
            LocalProtocolError: an unknown key or a bad value.
        """
        clients: list[str] = []
        networks: list[str] = []
        hosts: list[str] = []
        ports: list[tuple[int, int]] = []
        for item in text.split():
            key, eq, value = item.partition("=")
            if not eq or not value:
                raise LocalProtocolError(f"rule {text!r}: expected key=value items (from=, to=, port=), got {item!r}")
            for part in filter(None, value.split(",")):
                if key == "from":
                    clients.append(part)
                elif key == "to":
                    (networks if _is_network(part) else hosts).append(part)
                elif key == "port":
                    ports.append(_port_range(part, text))
                else:
                    raise LocalProtocolError(f"rule {text!r}: unknown key {key!r} (use from=, to=, port=)")
        return cls(action=action, clients=clients, networks=networks, hosts=hosts, ports=ports)

    def matches(self, client: IPAddress, target: Address, resolved: IPAddress | None) -> bool:
        """Whether the rule applies. Without *resolved*, network criteria match IP-literal targets only."""
        if self.clients and not any(client in net for net in self.clients):
            return False
        if self.ports and not any(low <= target.port <= high for low, high in self.ports):
            return False
        if not self.networks and not self.hosts:
            return True
        if self.hosts and isinstance(target.host, bytes):
            name = target.host.decode("ascii", "replace").lower().rstrip(".")
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.hosts):
                return True
        address = resolved if resolved is not None else (None if isinstance(target.host, bytes) else target.host)
        return address is not None and any(address in net for net in self.networks)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _port_range(text: str, rule: str) -> tuple[int, int]:
    low, dash, high = text.partition("-")
    if not (low.isdigit() and (not dash or high.isdigit())):
        raise LocalProtocolError(f"rule {rule!r}: bad port {text!r} (use N or N-M)")
    return int(low), int(high if dash else low)


def ip_literal(host: str) -> IPAddress:
    """*host*, an IP literal a runner reported (a client's or a socket's address), parsed once per distinct text.

    Those addresses recur and parsing is what costs: the parse is :class:`Address`'s cached one.

    Raises:
        ValueError: *host* is not an IP literal.
    """
    found = parse_ip_literal(host)
    if found is None:
        raise ValueError(f"{host!r} is not an IP address")
    return found


def is_private(address: IPAddress) -> bool:
    """Private, loopback, link-local, multicast, reserved or unspecified: the SSRF guard's list."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@final
@attrs.frozen(kw_only=True)
class AccessPolicy:
    """Ordered rules, a default, and the SSRF guard.

    Attributes:
        rules: checked in order; the first that matches decides.
        default_allow: the decision when no rule matches.
        block_private: refuse private, loopback, link-local and other special destinations.
    """

    rules: tuple[AccessRule, ...] = ()
    default_allow: bool = True
    block_private: bool = False

    def client_allowed(self, client: IPAddress) -> bool:
        """Whether *client* may use the proxy at all (rules that only name clients)."""
        for rule in self.rules:
            only_clients = rule.clients and not (rule.networks or rule.hosts or rule.ports)
            if only_clients and any(client in net for net in rule.clients):
                return rule.action == "allow"
        return True

    def check(self, client: IPAddress, target: Address, resolved: IPAddress | None = None) -> str | None:
        """``None`` when allowed, else the reason it is denied (for logs).

        Call it before resolving (``resolved=None``: names and IP literals) and
        again with each resolved address.
        """
        candidate = resolved if resolved is not None else (None if isinstance(target.host, bytes) else target.host)
        if self.block_private and candidate is not None and is_private(candidate):
            return f"destination {candidate} is in private or special address space (SSRF guard)"
        for index, rule in enumerate(self.rules, 1):
            if rule.matches(client, target, resolved):
                return None if rule.action == "allow" else f"denied by rule {index}"
        return None if self.default_allow else "denied by default (no rule allowed it)"


