"""Tests of proxy selection from an environment mapping (curl's rules) and of NO_PROXY."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from socks_sansio import Address, LocalProtocolError
from socks_sansio._environment import NoProxy, select_proxy
from socks_sansio._proxy_url import ProxyProtocol, ProxyURL

SECRET = "Sup3rS3cretPW"


def proxy(text: str) -> ProxyURL:
    return ProxyURL.parse(text)


# --- which variable wins ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "environ", "expected"),
    [
        ("https", {}, None),
        ("https", {"https_proxy": "socks5h://a"}, "socks5h://a"),
        ("https", {"HTTPS_PROXY": "socks5h://b"}, "socks5h://b"),
        ("https", {"https_proxy": "socks5h://a", "HTTPS_PROXY": "socks5h://b"}, "socks5h://a"),
        ("HTTPS", {"https_proxy": "socks5h://a"}, "socks5h://a"),
        ("http", {"http_proxy": "socks5h://a"}, "socks5h://a"),
        # Uppercase HTTP_PROXY is never read (httpoxy), even as the only one set.
        ("http", {"HTTP_PROXY": "socks5h://b"}, None),
        ("http", {"HTTP_PROXY": "socks5h://b", "ALL_PROXY": "socks5h://c"}, "socks5h://c"),
        # Scheme-specific before ALL_PROXY, lowercase before uppercase.
        ("https", {"https_proxy": "socks5h://a", "all_proxy": "socks5h://c"}, "socks5h://a"),
        ("https", {"http_proxy": "socks5h://a", "all_proxy": "socks5h://c"}, "socks5h://c"),
        ("https", {"all_proxy": "socks5h://c", "ALL_PROXY": "socks5h://d"}, "socks5h://c"),
        ("https", {"ALL_PROXY": "socks5h://d"}, "socks5h://d"),
        ("wss", {"wss_proxy": "socks5h://a", "https_proxy": "socks5h://b"}, "socks5h://a"),
        ("ftp", {"FTP_PROXY": "socks4a://f"}, "socks4a://f"),
        # Empty or blank values count as unset.
        ("https", {"https_proxy": "", "HTTPS_PROXY": "socks5h://b"}, "socks5h://b"),
        ("https", {"https_proxy": "  ", "all_proxy": "socks5h://c"}, "socks5h://c"),
        ("https", {"all_proxy": ""}, None),
        # No scheme means http://, as in curl.
        ("https", {"https_proxy": "proxy.example:3128"}, "http://proxy.example:3128"),
        ("https", {"https_proxy": "proxy.example"}, "http://proxy.example:8080"),
        ("https", {"https_proxy": "u:p@[::1]:3128"}, "http://u:p@[::1]:3128"),
        ("https", {"https_proxy": " socks5://a:1 \n"}, "socks5://a:1"),
        ("https", {"https_proxy": "https://tls.example"}, "https://tls.example:443"),
    ],
)
def test_variable_precedence(scheme: str, environ: dict[str, str], expected: str | None) -> None:
    got = select_proxy(scheme, "target.example", 443, environ=environ)
    assert got == (None if expected is None else proxy(expected))


def test_no_proxy_wins_over_every_proxy_variable() -> None:
    environ = {"https_proxy": "socks5h://a", "all_proxy": "socks5h://c", "no_proxy": "target.example"}
    assert select_proxy("https", "target.example", 443, environ=environ) is None
    assert select_proxy("https", "other.example", 443, environ=environ) == proxy("socks5h://a")


@pytest.mark.parametrize(
    ("environ", "bypassed"),
    [
        ({"no_proxy": "target.example"}, True),
        ({"NO_PROXY": "target.example"}, True),
        ({"no_proxy": "other.example", "NO_PROXY": "target.example"}, False),
        ({"no_proxy": "", "NO_PROXY": "target.example"}, True),
    ],
)
def test_no_proxy_lowercase_first(environ: dict[str, str], bypassed: bool) -> None:
    environ = {"all_proxy": "socks5h://c", **environ}
    got = select_proxy("https", "target.example", 443, environ=environ)
    assert (got is None) is bypassed


def test_result_is_a_parsed_proxy_url() -> None:
    got = select_proxy("https", "t", environ={"https_proxy": "socks5h://alice:s%40cret@proxy.example:1080/"})
    assert got is not None
    assert got.protocol is ProxyProtocol.SOCKS5
    assert got.remote_dns
    assert got.credentials == (b"alice", b"s@cret")
    assert got.address == Address("proxy.example", 1080)


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"https_proxy": f"ftp://u:{SECRET}@h"}, "https_proxy does not hold a usable proxy URL: unknown proxy scheme"),
        ({"HTTPS_PROXY": f"socks5://u:{SECRET}@h:99999"}, "HTTPS_PROXY does not hold a usable proxy URL: "),
        ({"all_proxy": f"u:{SECRET}@h/x"}, "all_proxy does not hold a usable proxy URL: "),
        ({"ALL_PROXY": f"socks5://u:{SECRET}/x@h"}, "ALL_PROXY does not hold"),
        ({"https_proxy": f"socks4://u:{SECRET}@h"}, "SOCKS4 has a user id but no password"),
        ({"no_proxy": "a*b"}, "no_proxy: entry 'a*b' contains '*'"),
        ({"NO_PROXY": "10.0.0.0/33"}, "NO_PROXY: entry '10.0.0.0/33' is not a CIDR block"),
    ],
)
def test_invalid_values_name_the_variable_not_the_password(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        select_proxy("https", "target.example", 443, environ=environ)
    assert fragment in info.value.message
    assert SECRET not in str(info.value)


def test_unused_variables_are_not_checked() -> None:
    environ = {"http_proxy": "ftp://bad", "https_proxy": "socks5h://ok"}
    assert select_proxy("https", "t", environ=environ) == proxy("socks5h://ok")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", "t"), LocalProtocolError),
        (("1http", "t"), LocalProtocolError),
        (("ht tp", "t"), LocalProtocolError),
        (("https", "a b"), LocalProtocolError),
        (("https", "t", 70000), LocalProtocolError),
        (("https", "t", -1), LocalProtocolError),
        (("https", b"\xff"), LocalProtocolError),
        ((b"https", "t"), TypeError),
        (("https", 1), TypeError),
        (("https", "t", "443"), TypeError),
        (("https", "t", True), TypeError),
    ],
)
def test_bad_arguments(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        select_proxy(*args, environ={"all_proxy": "socks5h://p"})  # type: ignore[arg-type]


# --- NO_PROXY matching ------------------------------------------------------------------

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

NO_PROXY_MATRIX = [
    # (NO_PROXY, host, port, bypassed)
    ("*", "anything.example", None, True),
    ("*", "10.1.2.3", 80, True),
    ("a.example, *", "b.example", None, True),
    ("", "example.com", None, False),
    ("example.com", "example.com", None, True),
    ("example.com", "a.example.com", None, True),
    ("example.com", "a.b.example.com", 443, True),
    ("example.com", "badexample.com", None, False),
    ("example.com", "example.com.evil", None, False),
    ("example.com", "com", None, False),
    (".example.com", "example.com", None, True),
    (".example.com", "a.example.com", None, True),
    ("*.example.com", "a.example.com", None, True),
    ("*.example.com", "example.com", None, True),
    ("example.com.", "a.example.com", None, True),
    ("example.com", "a.example.com.", None, True),
    ("EXAMPLE.com", "a.Example.COM", None, True),
    ("bücher.example", "xn--bcher-kva.example", None, True),
    ("xn--bcher-kva.example", "www.BÜCHER.example", None, True),
    ("xn--bcher-kva.example", b"www.xn--bcher-kva.example", None, True),
    # separators: commas and/or whitespace, empty entries skipped
    ("a.example,b.example", "b.example", None, True),
    ("a.example b.example", "b.example", None, True),
    (" a.example ,\tb.example\n,,", "b.example", None, True),
    (",,", "b.example", None, False),
    # IP literals match exactly, and only IP hosts
    ("10.0.0.1", "10.0.0.1", None, True),
    ("10.0.0.1", "10.0.0.2", None, False),
    ("10.0.0.1", V4("10.0.0.1"), None, True),
    ("0.1", "10.0.0.1", None, False),  # a name entry never tail-matches an address
    ("::1", "::1", None, True),
    ("::1", "[::1]", None, True),
    ("[::1]", "::1", None, True),
    ("::1", V6("::1"), None, True),
    ("::1", "::2", None, False),
    ("::ffff:10.0.0.1", "10.0.0.1", None, False),  # families never mix
    ("10.0.0.1", "ten.example", None, False),
    # CIDR blocks
    ("10.0.0.0/8", "10.255.1.2", None, True),
    ("10.0.0.0/8", "11.0.0.1", None, False),
    ("192.168.1.1/16", "192.168.200.3", None, True),  # host bits ignored
    ("10.0.0.0/8", "ten.example", None, False),
    ("10.0.0.0/8", "::ffff:10.0.0.1", None, False),
    ("::1/128", "::1", None, True),
    ("fd00::/8", "fd12:3456::1", None, True),
    ("fd00::/8", "fe80::1", None, False),
    ("[fd00::]/8", "fd00::5", None, True),
    ("0.0.0.0/0", "1.2.3.4", None, True),
    ("0.0.0.0/0", "::1", None, False),
    # ports
    ("example.com:8080", "a.example.com", 8080, True),
    ("example.com:8080", "a.example.com", 443, False),
    ("example.com:8080", "a.example.com", None, False),
    ("10.0.0.1:80", "10.0.0.1", 80, True),
    ("10.0.0.1:80", "10.0.0.1", 81, False),
    ("[::1]:80", "::1", 80, True),
    ("[::1]:80", "::1", 81, False),
    ("example.com", "example.com", 1, True),
]


@pytest.mark.parametrize(("no_proxy", "host", "port", "bypassed"), NO_PROXY_MATRIX)
def test_no_proxy_matrix(no_proxy: str, host: object, port: int | None, bypassed: bool) -> None:
    assert NoProxy.parse(no_proxy).matches(host, port) is bypassed  # type: ignore[arg-type]
    environ = {"no_proxy": no_proxy, "all_proxy": "socks5h://p"}
    got = select_proxy("https", host, port, environ=environ)  # type: ignore[arg-type]
    assert (got is None) is bypassed


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("a*b", "contains '*'"),
        ("*:80", "contains '*'"),
        ("a/b", "is not a CIDR block"),
        ("10.0.0.0/33", "is not a CIDR block"),
        ("::1/129", "is not a CIDR block"),
        ("example.com:0", "bad port '0' (expected 1 to 65535)"),
        ("example.com:x", "bad port 'x'"),
        ("example.com:", "bad port ''"),
        ("example.com:123456", "bad port '123456'"),
        ("[::1]x", "is not '[IPv6]' or '[IPv6]:port'"),
        ("[::1", "is not '[IPv6]' or '[IPv6]:port'"),
        ("[::1]:", "bad port ''"),
        ("[nope]", "is not an IPv6 address"),
        ("[10.0.0.1]", "is not an IPv6 address"),
        ("[fe80::1%eth0]", "zone identifiers are not supported"),
        ("fe80::1%eth0", "zone identifiers are not supported"),
        ("a:b:c", "is not an IPv6 address"),
        (".", "is empty"),
        ("ü" + "a" * 70 + ".example", "not a valid IDNA 2008 host name: label"),
        ("ex<ample.com", "contains '<'"),
    ],
)
def test_bad_no_proxy_entries(entry: str, fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        NoProxy.parse(f"ok.example, {entry}", variable="no_proxy")
    assert info.value.message.startswith(f"no_proxy: entry {entry!r}")
    assert fragment in info.value.message


def test_no_proxy_type_errors() -> None:
    with pytest.raises(TypeError):
        NoProxy.parse(b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        NoProxy.parse("x").matches(None)  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------------------

labels = st.from_regex(r"[a-z][a-z0-9-]{0,9}", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=3).map(".".join)


@given(names, names, st.sampled_from(["", ".", "*."]))
def test_a_name_entry_matches_itself_and_its_subdomains_only(entry: str, sub: str, prefix: str) -> None:
    rules = NoProxy.parse(prefix + entry)
    assert rules.matches(entry)
    assert rules.matches(entry.upper())
    assert rules.matches(f"{sub}.{entry}")
    assert not rules.matches(f"{sub}{entry}") or f"{sub}{entry}".endswith("." + entry)


@given(st.ip_addresses(), st.ip_addresses(), st.integers(0, 128))
def test_cidr_entries_match_exactly_the_addresses_inside(
    network_address: V4 | V6, host: V4 | V6, prefix: int
) -> None:
    prefix = min(prefix, network_address.max_prefixlen)
    network = ipaddress.ip_network(f"{network_address}/{prefix}", strict=False)
    rules = NoProxy.parse(f"{network_address}/{prefix}")
    assert rules.matches(host) is (host.version == network.version and host in network)
    assert rules.matches(str(host)) is rules.matches(host)


@given(st.text())
@example("[::1]/8")
@example("fe80::1%eth0")
@example("1.2.3.4/" + "9" * 5000)
@example("x:" + "9" * 5000)
def test_arbitrary_no_proxy_text_parses_or_raises_local_protocol_error(text: str) -> None:
    with contextlib.suppress(LocalProtocolError):
        NoProxy.parse(text)


no_proxy_ish = st.text(alphabet="ab.*,: /[]0123456789f", max_size=30)


@given(no_proxy_ish, st.one_of(st.text(max_size=20), st.ip_addresses().map(str)), st.none() | st.integers(0, 65535))
def test_matching_arbitrary_hosts_gives_a_bool_or_local_protocol_error(
    text: str, host: str, port: int | None
) -> None:
    try:
        rules = NoProxy.parse(text)
    except LocalProtocolError:
        return
    with contextlib.suppress(LocalProtocolError):
        assert rules.matches(host, port) in (True, False)


environ_values = st.text(max_size=30)
environ_names = st.sampled_from(["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                 "ALL_PROXY", "no_proxy", "NO_PROXY"])


@given(st.dictionaries(environ_names, environ_values), st.sampled_from(["http", "https"]), st.text(max_size=20))
def test_arbitrary_environments_give_a_proxy_none_or_local_protocol_error(
    environ: dict[str, str], scheme: str, host: str
) -> None:
    try:
        got = select_proxy(scheme, host, 443, environ=environ)
    except LocalProtocolError:
        return
    assert got is None or isinstance(got, ProxyURL)
