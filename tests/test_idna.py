"""Unicode host names: UTS #46 (non-transitional) + IDNA 2008, shared by Address and NO_PROXY."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from socks_sansio import Address, LocalProtocolError, ProxyURL
from socks_sansio._environment import NoProxy, _target_host, select_proxy

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def fw(text: str) -> str:
    """*text* in fullwidth forms (U+FF01..U+FF5E), which UTS #46 maps back to ASCII."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


@pytest.mark.parametrize(
    ("host", "wire"),
    [
        # IDNA 2008 keeps ß (IDNA 2003 sent "strasse.de", another host).
        ("straße.de", b"xn--strae-oqa.de"),
        ("faß.de", b"xn--fa-hia.de"),
        # Non-transitional: final sigma is kept; a capital sigma maps to the ordinary one.
        ("βόλος.com", b"xn--nxasmm1c.com"),
        ("ΒΌΛΟΣ.com", b"xn--nxasmq6b.com"),
        # UTS #46 mapping: case, width and compatibility characters, ignored characters.
        ("BÜCHER.de", b"xn--bcher-kva.de"),
        ("bücher.de", b"xn--bcher-kva.de"),
        (fw("ABC") + ".ü", b"abc.xn--tda"),
        ("Ⅻ.ü", b"xii.xn--tda"),
        ("ab\u00adc.ü", b"abc.xn--tda"),  # SOFT HYPHEN is ignored
        ("例え.テスト", b"xn--r8jz45g.xn--zckzah"),
        # CONTEXTJ: ZWJ after a virama, ZWNJ between joining letters are allowed and kept.
        ("क्\u200d.com", b"xn--11b6iy14e.com"),
        ("\u0646\u0627\u0645\u0647\u200c\u0627\u06cc.ir", b"xn--mgba3gch31f060k.ir"),  # Persian, with ZWNJ
        # The label separators UTS #46 knows; a trailing one is kept as a trailing dot.
        ("bücher。de", b"xn--bcher-kva.de"),
        ("bücher" + fw(".") + "de｡com", b"xn--bcher-kva.de.com"),
        ("bücher.de.", b"xn--bcher-kva.de."),
        ("bücher.de。", b"xn--bcher-kva.de."),
        # ASCII labels in a Unicode name are kept as typed: case, "_", an existing A-label.
        ("WWW.Bücher.de", b"WWW.xn--bcher-kva.de"),
        ("_dmarc.bücher.de", b"_dmarc.xn--bcher-kva.de"),
        ("xn--strae-oqa.bücher.de", b"xn--strae-oqa.xn--bcher-kva.de"),
    ],
)
def test_unicode_names_are_encoded_with_idna_2008(host: str, wire: bytes) -> None:
    address = Address(host, 443)
    assert address.host == wire
    assert address.is_domain
    assert Address.parse_authority(f"{host}:443") == address
    assert ProxyURL.parse(f"socks5h://{host}:443").address == address


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "Example.COM",
        "_service._tcp.example.com",
        "under_score.example",
        "xn--zz.example",
        "a" * 70 + ".example",
        "ab--cd.example",
        "example.com.",
        "localhost",
    ],
)
def test_ascii_names_are_kept_exactly(host: str) -> None:
    # Not lower-cased, not checked against IDNA 2008 (underscores are common in internal DNS).
    assert Address(host, 80).host == host.encode("ascii")


def test_ip_literals_stay_ip_addresses() -> None:
    assert Address("127.0.0.1", 80).host == V4("127.0.0.1")
    assert Address("::1", 80).host == V6("::1")


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        (fw("127.0.0.1"), V4("127.0.0.1")),  # fullwidth digits and full stops
        ("\uff11.2.3.4", V4("1.2.3.4")),
        ("12.0.\u00b2.7", V4("12.0.2.7")),  # SUPERSCRIPT TWO
        (fw("::1"), V6("::1")),  # fullwidth colons
        (fw("2001:DB8::1"), V6("2001:db8::1")),
    ],
)
def test_a_unicode_name_that_maps_to_an_ip_literal_is_that_ip(host: str, ip: object) -> None:
    assert Address(host, 80).host == ip
    assert Address.parse_authority(f"[{ip}]:80" if isinstance(ip, V6) else f"{host}:80").host == ip


def test_with_a_trailing_dot_an_ip_spelling_stays_a_name() -> None:
    # As in ASCII: "127.0.0.1." is a name.
    assert Address(fw("127.0.0.1."), 80).host == b"127.0.0.1."
    assert Address("127.0.0.1.", 80).host == b"127.0.0.1."


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        # IDNA 2008 has no symbols or emoji (IDNA 2003 sent xn--n3h.net).
        ("☃.net", "label '☃' holds U+2603 SNOWMAN, which IDNA 2008 does not allow"),
        ("💩.la", "U+1F4A9 PILE OF POO"),
        # Joiners outside the CONTEXTJ rules.
        ("a\u200db.com", "U+200D ZERO WIDTH JOINER, which IDNA 2008 allows only in certain contexts"),
        ("a\u200cb.com", "U+200C ZERO WIDTH NON-JOINER"),
        ("ab\u00b7c.ü", "U+00B7 MIDDLE DOT"),  # CONTEXTO
        # "_" and spaces are not IDNA 2008 inside a label that is not ASCII.
        (fw("_") + "x.ü", "U+005F LOW LINE"),
        ("_ü.com", "U+005F LOW LINE"),
        ("ü ü.com", "U+0020 SPACE"),
        ("a..b\u2028", "U+2028"),
        ("a..bü", "empty label"),
        ("ü\u2028.com", "U+2028 LINE SEPARATOR, which UTS #46 does not allow"),
        ("\ud800.com", "U+D800"),  # a lone surrogate
        ("。", "empty label"),
        (".ü", "empty label"),
        ("ü..", "empty label"),
        ("\u00ad.com", "maps to an empty label"),
        ("ü" + "a" * 70 + ".example", "is 78 octets long once encoded; at most 63 are allowed"),
        ("ü." + "a" * 64, "is 64 octets long; at most 63 are allowed"),
        ("\u0308a.com", "combining"),
        ("٣.com", "directionality"),  # the Bidi rule
        ("üb--c.com", "hyphens"),
        (fw("xn--zz") + ".com", "A-label"),
        ("ü" * 2000, "too long"),
    ],
)
def test_invalid_unicode_names_are_refused_clearly(host: str, fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Address(host, 80)
    assert info.value.message.startswith(f"host {host!r} is not a valid IDNA 2008 host name: ")
    assert fragment in info.value.message
    assert len(info.value.message) < 2 * len(repr(host)) + 300  # labels are quoted shortened


def test_whole_name_over_255_octets_is_refused() -> None:
    host = ".".join(["bücher"] * 18) + ".abc"  # 18 * 14 + 3 = 255 octets once encoded (xn--bcher-kva)
    assert len(Address(host, 80).host) == 255  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="1 to 255 octets long, got 263"):
        Address(host + ".ü", 80)  # + ".xn--tda"


def test_spaces_in_ascii_labels_are_refused_as_before() -> None:
    with pytest.raises(LocalProtocolError, match="control character or space"):
        Address("a b.ü", 80)


# --- NO_PROXY uses the same conversion --------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "host", "bypassed"),
    [
        ("straße.de", "xn--strae-oqa.de", True),
        ("straße.de", "www.STRASSE.de", False),  # IDNA 2003's spelling is another host
        ("xn--strae-oqa.de", "www.Straße.de", True),
        ("xn--strae-oqa.de", b"www.xn--strae-oqa.de", True),
        ("βόλος.com", "xn--nxasmm1c.com", True),
        ("βόλος.com", "βόλο\u03c3.com", False),  # non-transitional: final sigma is not a plain sigma
        ("bücher.de", "BÜCHER.de.", True),
        ("bücher.de。", "bücher.de", True),
        ("WWW.bücher.de", "www.xn--bcher-kva.de", True),  # matching is case-insensitive
        ("_srv.bücher.de", "a._srv.xn--bcher-kva.de", True),
        # A Unicode spelling of an address is that address, as in Address.
        (fw("10.0.0.1"), "10.0.0.1", True),
        ("10.0.0.1", fw("10.0.0.1"), True),
        ("10.0.0.0/8", fw("10.2.3.4"), True),
        ("10.0.0.1", fw("10.0.0.1."), False),  # with a trailing dot it is a name
        ("10.0.0.1", fw("10.0.0.1") + ".", False),
        (fw("10.0.0.1") + ".", "10.0.0.1", False),
        ("bücher.de..", "bücher.de", True),  # trailing dots are ignored, as in ASCII
        (fw("10.0.0.1") + ":8080", "10.0.0.1", False),  # only for port 8080, see below
    ],
)
def test_no_proxy_matches_unicode_and_punycode_forms(entry: str, host: str | bytes, bypassed: bool) -> None:
    assert NoProxy.parse(entry).matches(host) is bypassed
    environ = {"no_proxy": entry, "all_proxy": "socks5h://proxy.example"}
    assert (select_proxy("https", host, None, environ=environ) is None) is bypassed


def test_no_proxy_matches_address_hosts() -> None:
    rules = NoProxy.parse("straße.de, " + fw("10.0.0.1") + ":8080")
    assert rules.matches(Address("www.straße.de", 443).host)
    assert rules.matches(Address("10.0.0.1", 8080).host, 8080)
    assert rules.matches(Address(fw("10.0.0.1"), 8080).host, 8080)


def test_no_proxy_refuses_invalid_unicode_entries_and_targets() -> None:
    with pytest.raises(LocalProtocolError) as info:
        NoProxy.parse("ok.example, ☃.net", variable="no_proxy")
    assert info.value.message.startswith("no_proxy: entry '☃.net' is not a valid IDNA 2008 host name: ")
    with pytest.raises(LocalProtocolError) as info:
        NoProxy.parse("example.com").matches("a\u200db.com")
    assert info.value.message.startswith("target host 'a\\u200db.com' is not a valid IDNA 2008 host name: ")


# --- properties ---------------------------------------------------------------------------

# Text with dots, the other separators, fullwidth forms, joiners and plain ASCII mixed in.
pieces = st.sampled_from(
    [".", "。", fw("."), "｡", "\u200c", "\u200d", "ß", "ς", "Σ", "Ü", "ü", fw("1"), fw(":"), "_", "-", "xn--", "☃"]
)
hostish = st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=12).map("".join)


@given(st.one_of(st.text(), hostish))
@example("\uff11.2.3.4")
@example(fw("127.0.0.1."))
@example("a\u200d.\ud800")
def test_any_text_is_an_address_or_a_local_protocol_error(host: str) -> None:
    try:
        address = Address(host, 80)
    except LocalProtocolError:
        return
    if address.is_domain:
        assert isinstance(address.host, bytes)
        assert 1 <= len(address.host) <= 255
        assert address.host.isascii()
        # What goes on the wire reads back as the same host (never a domain spelling an IP).
        assert Address(address.host_str, 80) == address


@given(st.one_of(st.text(), hostish))
@example("Straße.de")
@example(fw("10.0.0.1"))
def test_no_proxy_and_address_agree(host: str) -> None:
    # An entry equal to the host matches the Address built from it, whatever the spelling.
    with contextlib.suppress(LocalProtocolError):
        address = Address(host, 80)
        rules = NoProxy.parse(host)
        if len(rules.rules) != 1 or host.startswith((".", "*")) or host.count(":") == 1:
            return  # split into several entries, or the prefix / port syntax of NO_PROXY
        assert rules.matches(address.host, 80)
        assert rules.matches(host, 80)


@given(st.one_of(st.text(), hostish).filter(lambda text: not text.isascii()))
@example(fw("10.0.0.1") + ".")
@example("WWW.Bücher.de。")
def test_no_proxy_reads_a_unicode_target_as_address_does(host: str) -> None:
    try:
        address = Address(host, 80)
        target = _target_host(host)
    except LocalProtocolError:
        return
    if isinstance(address.host, bytes):
        assert target == address.host.lower().rstrip(b".")
    else:
        assert target == address.host


def test_importing_the_library_does_not_import_idna() -> None:
    # ASCII-only programs pay nothing: idna is imported on the first non-ASCII name.
    code = (
        "import sys, json; import socks_sansio; before = 'idna' in sys.modules; "
        "socks_sansio.Address('example.com', 1); socks_sansio.Address('127.0.0.1', 1); "
        "ascii_only = 'idna' in sys.modules; "
        "socks_sansio.Address('bücher.de', 1); print(json.dumps([before, ascii_only, 'idna' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [False, False, True]
