"""Tests of ProxyURL: parsing with curl's conventions, validation, redaction, round trips."""

from __future__ import annotations

import contextlib
import ipaddress

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from socks_sansio import Address, LocalProtocolError
from socks_sansio._proxy_url import DEFAULT_PORTS, ProxyProtocol, ProxyURL

SOCKS5, SOCKS4, HTTP = ProxyProtocol.SOCKS5, ProxyProtocol.SOCKS4, ProxyProtocol.HTTP
SECRET = "Sup3rS3cretPW"


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "protocol", "remote_dns", "tls", "port"),
    [
        ("socks5", SOCKS5, False, False, 1080),
        ("socks5h", SOCKS5, True, False, 1080),
        ("socks4", SOCKS4, False, False, 1080),
        ("socks4a", SOCKS4, True, False, 1080),
        ("http", HTTP, True, False, 8080),
        ("https", HTTP, True, True, 443),
    ],
)
def test_schemes_and_default_ports(
    scheme: str, protocol: ProxyProtocol, remote_dns: bool, tls: bool, port: int
) -> None:
    for text in (scheme, scheme.upper(), scheme.capitalize()):
        url = ProxyURL.parse(f"{text}://proxy.example")
        assert url == ProxyURL(
            protocol=protocol, address=Address("proxy.example", port), remote_dns=remote_dns, tls=tls
        )
        assert url.scheme == scheme
        assert DEFAULT_PORTS[scheme] == port
        assert url.credentials is None


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("socks5://127.0.0.1:9050", ipaddress.IPv4Address("127.0.0.1"), 9050),
        ("socks5://[::1]:1081", ipaddress.IPv6Address("::1"), 1081),
        ("socks5://[2001:db8::1]", ipaddress.IPv6Address("2001:db8::1"), 1080),
        ("socks5://proxy.example:", b"proxy.example", 1080),  # empty port = default (RFC 3986 §3.2.3)
        ("socks5://proxy.example/", b"proxy.example", 1080),
        ("socks5://proxy.example:65535/", b"proxy.example", 65535),
        ("socks5://proxy.example:00080", b"proxy.example", 80),
        ("  socks5://proxy.example:1\n", b"proxy.example", 1),
        ("socks5://bücher.example", b"xn--bcher-kva.example", 1080),
        ("socks5://under_score.example", b"under_score.example", 1080),
    ],
)
def test_hosts_and_ports(text: str, host: object, port: int) -> None:
    url = ProxyURL.parse(text)
    assert url.address == Address(host, port)


@pytest.mark.parametrize(
    ("userinfo", "username", "password"),
    [
        ("user:pass", b"user", b"pass"),
        ("user", b"user", b""),  # no ':' -> empty password
        ("user:", b"user", b""),
        ("us%40er:p%3Aa%2Fss", b"us@er", b"p:a/ss"),
        ("user:pa:ss", b"user", b"pa:ss"),  # the first ':' separates
        ("user:p@ss", b"user", b"p@ss"),  # the last '@' ends the userinfo
        ("%C3%BCser:%FF%00", "üser".encode(), b"\xff\x00"),
        ("üser:pässword", "üser".encode(), "pässword".encode()),
        ("%e2%82%ac:x", "€".encode(), b"x"),  # lowercase hex digits
        ("", None, None),  # empty userinfo = no credentials
    ],
)
def test_userinfo_is_percent_decoded(userinfo: str, username: bytes | None, password: bytes | None) -> None:
    url = ProxyURL.parse(f"socks5h://{userinfo}@proxy.example:1080")
    assert url.username == username
    assert url.password == password
    assert url.credentials == (None if username is None else (username, password))


def test_empty_username_and_password_are_kept_apart_from_none() -> None:
    url = ProxyURL.parse("http://:@proxy.example")
    assert url.credentials == (b"", b"")
    assert url.to_url(include_password=True) == "http://:@proxy.example:8080"
    assert ProxyURL.parse("socks4a://@proxy.example").credentials is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("proxy.example:1080", "must start with a scheme: one of socks5://, socks5h://, socks4://"),
        ("://proxy.example", "must start with a scheme"),
        ("1socks://proxy.example", "must start with a scheme"),
        ("ftp://proxy.example", "unknown proxy scheme 'ftp': expected one of socks5://, socks5h://"),
        ("socks://proxy.example", "https://"),
        ("socks5://", "has no host"),
        ("socks5://:1080", "has no host"),
        ("socks5://user:pw@", "has no host"),
        ("socks5://proxy.example:abc", "port 'abc' is not a number from 1 to 65535"),
        ("socks5://proxy.example:0", "port 0 is not in 1..65535"),
        ("socks5://proxy.example:65536", "port 65536 is not in 1..65535"),
        ("socks5://proxy.example:123456", "port '123456' is not a number"),
        ("socks5://proxy.example:-1", "port '-1'"),
        ("socks5://proxy.example:\uff18\uff10", "port '\uff18\uff10'"),
        ("socks5://proxy.example/path", "no path, query or fragment (a trailing '/' is allowed), got '/path'"),
        ("socks5://proxy.example//", "got '//'"),
        ("socks5://proxy.example?x=1", "got '?x=1'"),
        ("socks5://proxy.example#frag", "got '#frag'"),
        ("socks5://::1:1080", "write it in brackets"),
        ("socks5://[::1", "without a closing ']'"),
        ("socks5://[::1]x", "after ']' where ':port' was expected"),
        ("socks5://[1.2.3.4]", "is not an IPv6 address"),
        ("socks5://[fe80::1%25eth0]", "zone identifiers are not supported"),
        ("socks5://pro xy.example", "control character or space"),
        ("socks5://pro<xy.example", "contains '<'"),
        ("socks5://proxy.example%2F", "contains '%'"),
        ("socks5://a..b\u2028", "not a valid IDNA 2008 host name"),
        ("socks5://user:p%zzss@proxy.example", "password in the proxy URL has a '%' that is not followed"),
        ("socks5://us%4@proxy.example", "username in the proxy URL has a '%'"),
        ("socks5://user:p%@proxy.example", "password"),
        ("socks5://user:\udcff@proxy.example", "cannot be encoded as UTF-8"),
        ("socks5://user:pa/ss@proxy.example", "percent-encode it"),
        ("socks5://:pw@proxy.example", "SOCKS5 username (RFC 1929 §2) must be 1 to 255 octets long, got 0"),
        (f"socks5://{'u' * 256}:pw@proxy.example", "got 256"),
        (f"socks5://u:{'p' * 256}@proxy.example", "password (RFC 1929 §2) must be 0 to 255 octets long"),
        ("socks4://user:pw@proxy.example", "SOCKS4 has a user id but no password"),
        ("socks4a://us%00er@proxy.example", "cannot contain a NUL"),
        ("http://us%3Aer:pw@proxy.example", "cannot contain ':' (RFC 7617 §2)"),
    ],
)
def test_bad_urls_are_refused_clearly(text: str, fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        ProxyURL.parse(text)
    assert fragment in info.value.message


def test_parse_wants_str() -> None:
    with pytest.raises(TypeError, match="must be str, not bytes"):
        ProxyURL.parse(b"socks5://proxy.example")  # type: ignore[arg-type]


# --- the password never shows -----------------------------------------------------------


BROKEN_WITH_PASSWORD = [
    "ftp://user:{pw}@proxy.example",
    "user:{pw}@proxy.example",
    "socks5:/user:{pw}@proxy.example",
    "socks5://user:{pw}@proxy.example:99999",
    "socks5://user:{pw}@proxy.example:bad",
    "socks5://user:{pw}@",
    "socks5://user:{pw}@proxy.example/path",
    "socks5://user:{pw}@proxy.example?q",
    "socks5://user:{pw}/x@proxy.example",
    "socks5://user:{pw}?x@proxy.example",
    "socks5://user:{pw}#x@proxy.example",
    "socks5://user:{pw}%@proxy.example",
    "socks5://user:{pw}%g0@proxy.example",
    "socks5://user:{pw}\udc80@proxy.example",
    "socks5://user:{pw}@::1",
    "socks5://user:{pw}@[::1",
    "socks5://user:{pw}@pro<xy",
    "socks5://:{pw}@proxy.example",
    "socks4://user:{pw}@proxy.example",
    "http://us%3Aer:{pw}@proxy.example",
    "socks5://user:{pw}" + "x" * 300 + "@proxy.example",
]


@pytest.mark.parametrize("template", BROKEN_WITH_PASSWORD)
def test_error_messages_never_contain_the_password(template: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        ProxyURL.parse(template.format(pw=SECRET))
    assert SECRET not in str(info.value)
    assert SECRET[2:-2] not in str(info.value)


secrets = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=10, max_size=20).map(lambda s: "PW" + s)


@given(
    secret=secrets,
    template=st.sampled_from(BROKEN_WITH_PASSWORD),
    noise=st.text(alphabet="/?#@:%[]<> .", max_size=3),
)
def test_error_messages_never_contain_a_generated_password(secret: str, template: str, noise: str) -> None:
    text = template.format(pw=secret + noise)
    try:
        ProxyURL.parse(text)
    except LocalProtocolError as exc:
        assert secret not in str(exc)


def test_repr_and_str_hide_the_password() -> None:
    url = ProxyURL.parse(f"socks5h://alice:{SECRET}@proxy.example:1080")
    assert SECRET not in repr(url)
    assert SECRET not in str(url)
    assert str(url) == url.redacted() == url.to_url() == "socks5h://alice:***@proxy.example:1080"
    assert url.to_url(include_password=True) == f"socks5h://alice:{SECRET}@proxy.example:1080"
    assert url.password == SECRET.encode()


def test_empty_password_is_not_shown_as_stars() -> None:
    url = ProxyURL.parse("socks4a://alice@proxy.example")
    assert str(url) == url.to_url(include_password=True) == "socks4a://alice@proxy.example:1080"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("HTTPS://[::1]", "https://[::1]:443"),
        ("socks5://bücher.example/", "socks5://xn--bcher-kva.example:1080"),
        ("http://us%20er:p%20w@10.0.0.1:3128", "http://us%20er:p%20w@10.0.0.1:3128"),
        ("socks5h://a~b.c-d_e:x.y~z@h:1", "socks5h://a~b.c-d_e:x.y~z@h:1"),
        ("socks5h://us@er:p!$&'()*+,;=w@h:1", "socks5h://us%40er:p%21%24%26%27%28%29%2A%2B%2C%3B%3Dw@h:1"),
    ],
)
def test_written_form(text: str, written: str) -> None:
    url = ProxyURL.parse(text)
    assert url.to_url(include_password=True) == written
    assert ProxyURL.parse(written) == url


# --- construction ------------------------------------------------------------------------


def test_username_without_password_means_empty_password() -> None:
    url = ProxyURL(protocol=SOCKS5, address=Address("h", 1080), username="alice")
    assert url.password == b""
    assert url.credentials == (b"alice", b"")
    assert url.remote_dns is True
    assert url.tls is False


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"protocol": SOCKS5, "password": b"x"}, "password without a username"),
        ({"protocol": HTTP, "remote_dns": False}, "remote_dns must be True"),
        ({"protocol": SOCKS5, "tls": True}, "only supported for HTTP proxies"),
        ({"protocol": SOCKS4, "tls": True}, "only supported for HTTP proxies"),
        ({"protocol": SOCKS5, "username": b""}, "must be 1 to 255 octets"),
        ({"protocol": SOCKS4, "username": b"a", "password": b"b"}, "no password"),
        ({"protocol": HTTP, "username": b"a:b"}, "cannot contain ':'"),
        ({"protocol": HTTP, "address": Address("h", 0)}, "port must be in 1..65535, got 0"),
        ({"protocol": HTTP, "address": Address("h@x", 1)}, "contains '@'"),
        ({"protocol": HTTP, "address": Address(b"h/x", 1)}, "contains '/'"),
    ],
)
def test_constructor_refuses(kwargs: dict[str, object], fragment: str) -> None:
    kwargs.setdefault("address", Address("h", 1))
    with pytest.raises(LocalProtocolError) as info:
        ProxyURL(**kwargs)  # type: ignore[arg-type]
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "socks5", "address": Address("h", 1)},
        {"protocol": SOCKS5, "address": "h:1"},
        {"protocol": SOCKS5, "address": Address("h", 1), "username": 1},
        {"protocol": SOCKS5, "address": Address("h", 1), "remote_dns": 1},
        {"protocol": HTTP, "address": Address("h", 1), "tls": "yes"},
    ],
)
def test_constructor_type_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        ProxyURL(**kwargs)  # type: ignore[arg-type]


def test_frozen_and_keyword_only() -> None:
    url = ProxyURL.parse("socks5://h")
    with pytest.raises(AttributeError):
        url.tls = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        ProxyURL(SOCKS5, Address("h", 1))  # type: ignore[call-arg]


# --- properties ----------------------------------------------------------------------------

url_ish = st.text(alphabet="socks5h4aptfw:/@[]%.-_~0123456789abcdefABCDEF:?# \tü\x00", max_size=40)
prefixes = st.sampled_from(["", "socks5://", "socks5h://", "socks4a://", "http://", "HTTPS://", "x://"])


@given(st.text())
@example("socks5://[::1%eth0]")
@example("socks5://h:" + "9" * 5000)
@example("socks5://\udcff")
@example("socks5://a\u3002b")
def test_arbitrary_text_parses_or_raises_local_protocol_error(text: str) -> None:
    with contextlib.suppress(LocalProtocolError):
        ProxyURL.parse(text)


@given(prefixes, url_ish)
def test_url_like_text_parses_or_raises_local_protocol_error(prefix: str, text: str) -> None:
    try:
        url = ProxyURL.parse(prefix + text)
    except LocalProtocolError:
        return
    # Whatever parses is written back in a form that parses to the same value.
    assert ProxyURL.parse(url.to_url(include_password=True)) == url


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_~", min_size=1, max_size=20)
hosts = st.one_of(
    st.ip_addresses(),
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["bücher.example", "пример.рф", "例え.テスト"]),
)


@st.composite
def proxy_urls(draw: st.DrawFn) -> ProxyURL:
    protocol, remote_dns, tls = draw(
        st.sampled_from(
            [
                (SOCKS5, False, False),
                (SOCKS5, True, False),
                (SOCKS4, False, False),
                (SOCKS4, True, False),
                (HTTP, True, False),
                (HTTP, True, True),
            ]
        )
    )
    address = Address(draw(hosts), draw(st.integers(1, 0xFFFF)))
    username = password = None
    if draw(st.booleans()):
        if protocol is SOCKS5:
            username = draw(st.binary(min_size=1, max_size=255))
            password = draw(st.binary(max_size=255))
        elif protocol is SOCKS4:
            username = draw(st.binary(max_size=40).filter(lambda b: b"\x00" not in b))
            password = b""
        else:
            username = draw(st.binary(max_size=40).filter(lambda b: b":" not in b))
            password = draw(st.binary(max_size=40))
    return ProxyURL(
        protocol=protocol, address=address, username=username, password=password, remote_dns=remote_dns, tls=tls
    )


@given(proxy_urls())
def test_round_trip(url: ProxyURL) -> None:
    text = url.to_url(include_password=True)
    assert ProxyURL.parse(text) == url
    assert ProxyURL.parse(text.upper().split("://")[0] + "://" + text.split("://", 1)[1]) == url
    redacted = ProxyURL.parse(str(url))
    if url.password:
        assert str(url).split("@")[0].endswith(":***")
        assert redacted.password == b"***"
        assert attrs.evolve(redacted, password=url.password) == url
    else:
        assert redacted == url


@given(proxy_urls(), secrets)
def test_redacted_form_never_holds_the_password(url: ProxyURL, secret: str) -> None:
    url = ProxyURL(
        protocol=url.protocol,
        address=url.address,
        username=b"u",
        password=b"" if url.protocol is SOCKS4 else secret,
        remote_dns=url.remote_dns,
        tls=url.tls,
    )
    assert secret not in str(url)
    assert secret not in repr(url)
    assert secret not in url.redacted()


@given(proxy_urls())
def test_default_port_is_applied(url: ProxyURL) -> None:
    text = url.to_url(include_password=True)
    without_port = text[: text.rindex(":")]
    assert ProxyURL.parse(without_port).address.port == DEFAULT_PORTS[url.scheme]
