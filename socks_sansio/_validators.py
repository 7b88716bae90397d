"""Small converters and validators shared by the event classes.

Constructors validate everything, so an illegal value raises
:class:`LocalProtocolError` (or :class:`TypeError` for a wrong Python type)
before it can reach the wire.
"""

from __future__ import annotations

from ._errors import LocalProtocolError


def to_bytes(value: object) -> bytes:
    """Accept ``bytes``-like values and ``str`` (encoded as UTF-8); store ``bytes``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"expected bytes or str, not {type(value).__name__}")


def check_octet(name: str, value: object) -> None:
    """Require an ``int`` (not ``bool``) in 0..255."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{name} must be in 0..255, got {value}")


def check_length(name: str, value: bytes, low: int, high: int) -> None:
    """Require ``low <= len(value) <= high`` octets."""
    if not low <= len(value) <= high:
        raise LocalProtocolError(f"{name} must be {low} to {high} octets long, got {len(value)}")
