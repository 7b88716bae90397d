"""Host names typed as Unicode: UTS #46 mapping, then IDNA 2008 (RFC 5890-5893).

:func:`encode_unicode_host` is the one place that turns a non-ASCII host name
into what goes on the wire. ``Address`` (and through it ``ProxyURL`` and
``Address.parse_authority``) and ``NO_PROXY`` matching both call it, so they
cannot disagree about which host a name is. It uses the ``idna`` package, as
httpx and requests do; Python's own ``"idna"`` codec is IDNA 2003, which sends
``straße.de`` as ``strasse.de``, a different host from the ``xn--strae-oqa.de``
that curl (libidn2), browsers and requests send.

Decisions:

* Only text holding a non-ASCII character comes here. ASCII names never do and
  keep the rules they always had: no case change, no IDNA checks, so
  ``_service.example.com`` and other names that are not strict LDH, common in
  internal DNS, keep working exactly as before.
* The name is split into labels at the four full stops UTS #46 treats as label
  separators (``.``, U+3002, U+FF0E, U+FF61). A label that is all ASCII is kept
  exactly as typed, for the same reason, and only its length (1 to 63 octets)
  is checked: ``_dmarc.bücher.de`` becomes ``_dmarc.xn--bcher-kva.de`` and
  ``WWW.Bücher.de`` keeps its ``WWW``, as with the IDNA 2003 codec before.
* Every other label gets UTS #46 mapping (case folding, width and compatibility
  mapping, NFC) with UseSTD3ASCIIRules off and *non-transitional* processing,
  as browsers and libidn2 do: ``ß``, final sigma ``ς``, ZWJ and ZWNJ are kept,
  not mapped to ``ss``, a plain sigma or nothing. The mapped label must then be
  a valid IDNA 2008 label (only PVALID code points, the CONTEXTJ and CONTEXTO
  rules for joiners and the like, the Bidi rule, no ``--`` in positions 3-4, no
  leading combining mark) of at most 63 octets as an A-label. So ``_`` and
  spaces are refused in these labels, and so are emoji and other symbols
  (``☃``), which IDNA 2003 accepted.
* A name whose mapped form spells an IP literal (``127.0.0.1`` written with
  fullwidth digits and full stops, or ``::1`` with fullwidth colons) is that
  IP address, not a domain name: a
  server would read the literal, and a URL written back would parse as one.
  With a trailing dot it stays a name, as in ASCII.
* A trailing full stop (any of the four) is kept as a trailing ``.``.
* Every failure is a :class:`LocalProtocolError` saying
  ``"<what> is not a valid IDNA 2008 host name: <reason>"``; nothing raised by
  the ``idna`` package (``IDNAError`` and its subclasses are ``UnicodeError``,
  hence ``ValueError``, and older releases raise a bare ``ValueError`` for some
  input) escapes.

Results of short names are cached, so a client that connects to the same
Unicode host again and again pays for the conversion once.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from typing import Final

from ._errors import LocalProtocolError

__all__ = ["encode_unicode_host"]

_Host = ipaddress.IPv4Address | ipaddress.IPv6Address | bytes

# UTS #46 §4 / RFC 3490 §3.1: the full stops that separate labels.
_DOTS: Final = re.compile("[.\u3002\uff0e\uff61]")
_MAX_LABEL: Final = 63  # octets, RFC 1035 §2.3.4
# Longer text is converted without the cache, so the cache's memory stays bounded.
_CACHED_LENGTH: Final = 256


class _Invalid(Exception):
    """Why a name is not a valid IDNA 2008 host name; turned into LocalProtocolError."""


def encode_unicode_host(text: str, what: str) -> _Host:
    """The wire form of a non-ASCII host name: its octets, or the IP address it spells.

    Args:
        text: the name as typed; it should hold a non-ASCII character (ASCII
            names do not need this, and their labels are not checked here).
        what: how error messages name the value, e.g. ``"host 'x'"``.

    Raises:
        LocalProtocolError: the name is not a valid IDNA 2008 host name; the
            message begins with *what* and says why.
    """
    try:
        return _convert_cached(text) if len(text) <= _CACHED_LENGTH else _convert(text)
    except _Invalid as exc:
        raise LocalProtocolError(f"{what} is not a valid IDNA 2008 host name: {exc}") from None


def _convert(text: str) -> _Host:
    labels = _DOTS.split(text)
    trailing_dot = len(labels) > 1 and not labels[-1]
    if trailing_dot:
        del labels[-1]
    mapped: list[tuple[str, str | None]] = []  # (label, None if kept as typed else the label typed)
    for label in labels:
        if label.isascii():
            mapped.append((label, None))
        else:
            # One label may in principle map to several (older UTS #46 tables map U+2488 to "1.").
            mapped.extend((part, label) for part in _remap(label).split("."))
    if not trailing_dot:
        spelled = ".".join(label for label, _ in mapped)
        if ":" in spelled or spelled[-1:].isdigit():  # only these can be IP literals
            try:
                return ipaddress.ip_address(spelled)
            except ValueError:
                pass
    encoded = b".".join(_ascii_label(label) if typed is None else _a_label(label, typed) for label, typed in mapped)
    return encoded + b"." if trailing_dot else encoded


_convert_cached: Final = functools.lru_cache(maxsize=512)(_convert)


def _remap(label: str) -> str:
    import idna  # here, not at the top: programs that only use ASCII names never import it

    try:
        return idna.uts46_remap(label, std3_rules=False, transitional=False)
    except ValueError as exc:  # IDNAError is a UnicodeError, hence a ValueError
        raise _Invalid(_describe(label, exc)) from None


def _a_label(label: str, typed: str) -> bytes:
    import idna

    if not label:
        raise _Invalid(f"label {_show(typed)} maps to an empty label")
    try:
        return idna.alabel(label)
    except ValueError as exc:
        if str(exc) == "Label too long":  # idna's wording since 2.x; 3.x adds code="label_too_long"
            ace = label.encode("ascii") if label.isascii() else b"xn--" + label.encode("punycode")
            if len(ace) > _MAX_LABEL:
                raise _Invalid(
                    f"label {_show(typed)} is {len(ace)} octets long once encoded; at most {_MAX_LABEL} are allowed"
                ) from None
        raise _Invalid(_describe(typed, exc)) from None


def _describe(typed: str, exc: ValueError) -> str:
    """A reason for the message, from the structured fields recent idna releases set."""
    codepoint = getattr(exc, "codepoint", None)
    code = getattr(exc, "code", None)
    if isinstance(codepoint, int) and code in _CODEPOINT_REASONS:
        name = unicodedata.name(chr(codepoint), "")
        char = f"U+{codepoint:04X}" + (f" {name}" if name else "")
        return f"label {_show(typed)} holds {char}, {_CODEPOINT_REASONS[code]}"
    detail = str(exc)
    if len(detail) > _SHOWN:
        detail = detail[:_SHOWN] + "..."
    return f"label {_show(typed)}: {detail}"


_CODEPOINT_REASONS: Final = {
    "uts46_disallowed": "which UTS #46 does not allow in a host name",
    "disallowed_codepoint": "which IDNA 2008 does not allow in a host name",
    "contextj": "which IDNA 2008 allows only in certain contexts (RFC 5892 CONTEXTJ), not here",
    "contexto": "which IDNA 2008 allows only in certain contexts (RFC 5892 CONTEXTO), not here",
}
_SHOWN: Final = 80  # characters of a label or idna message quoted in an error


def _show(label: str) -> str:
    return repr(label) if len(label) <= _SHOWN else repr(label[:_SHOWN]) + "..."


def _ascii_label(label: str) -> bytes:
    if not label:
        raise _Invalid("it has an empty label")
    if len(label) > _MAX_LABEL:
        raise _Invalid(f"label {_show(label)} is {len(label)} octets long; at most {_MAX_LABEL} are allowed")
    return label.encode("ascii")
