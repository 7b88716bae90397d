"""The server's pure policy: users and passwords, access rules, the SSRF guard."""

from __future__ import annotations

import base64
import hashlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socks_sansio import AccessPolicy, AccessRule, Address, LocalProtocolError, UserDatabase
from socks_sansio._server.policy import is_private

CLIENT = ipaddress.ip_address("127.0.0.1")


def test_plain_and_hashed_passwords() -> None:
    hashed = UserDatabase.hash_password("s3cret", iterations=1000)
    users = UserDatabase({"alice": "wonderland", "bob": hashed})
    assert users.check(b"alice", b"wonderland")
    assert not users.check(b"alice", b"wonderlan")
    assert users.check(b"bob", b"s3cret")
    assert users.check(b"bob", b"s3cret")  # the second time from the remembered digest
    assert not users.check(b"bob", b"wrong")
    assert not users.check(b"carol", b"anything")
    assert "wonderland" not in repr(users) and len(users) == 2


def test_remembered_digest_does_not_accept_another_password() -> None:
    users = UserDatabase({"bob": UserDatabase.hash_password("right", iterations=1000)})
    assert users.check(b"bob", b"right")
    assert not users.check(b"bob", b"wrong")


def test_user_file_lines() -> None:
    users = UserDatabase.from_lines(["# users", "", "alice:pa:ss", "bob:"], source="users.txt")
    assert users.check(b"alice", b"pa:ss")  # only the first ':' separates
    assert users.check(b"bob", b"")
    with pytest.raises(LocalProtocolError, match=r"users.txt line 2: expected 'user:password'") as info:
        UserDatabase.from_lines(["alice:x", "no-colon-secret"], source="users.txt")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("stored", ["pbkdf2_sha256$x$00$00", "pbkdf2_sha256$1$zz$00", "pbkdf2_sha256$1"])
def test_malformed_hash_is_refused_up_front(stored: str) -> None:
    with pytest.raises(LocalProtocolError, match="pbkdf2_sha256"):
        UserDatabase({"a": stored})


# Known vectors, computed here with the standard library (passlib and Django are not dependencies):
# passlib's "$pbkdf2-sha256$ROUNDS$SALT$CHECKSUM" uses adapted base64 ('.' for '+', no padding);
# Django's "pbkdf2_sha256$ITERATIONS$SALT$HASH" takes the salt as text and the hash in standard base64.
PASSWORD = "pässwörd s3cret"  # non-ASCII: both libraries hash the UTF-8 octets


def _ab64(octets: bytes) -> str:
    return base64.b64encode(octets).decode().rstrip("=").replace("+", ".")


def _passlib_hash(password: str, salt: bytes, rounds: int) -> str:
    checksum = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"$pbkdf2-sha256${rounds}${_ab64(salt)}${_ab64(checksum)}"


def _django_hash(password: str, salt: str, iterations: int) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def test_the_three_hash_formats_known_vectors() -> None:
    ours = UserDatabase.hash_password(PASSWORD, iterations=1000, salt=b"\x00\xffsalt")
    expected = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), b"\x00\xffsalt", 1000).hex()
    assert ours == f"pbkdf2_sha256$1000$00ff73616c74${expected}"
    # A salt whose adapted base64 holds '.', so the '.' -> '+' mapping is exercised.
    salt = bytes.fromhex("fbefbe") + b"\x10" * 13
    passlib = _passlib_hash(PASSWORD, salt, 1200)
    assert "." in passlib.split("$")[3] and "=" not in passlib
    django = _django_hash(PASSWORD, "Zm9vYmFyYmF6cXV4", 1300)
    assert django.endswith("=") and len(django.rsplit("$", 1)[1]) == 44
    users = UserDatabase({"ours": ours, "passlib": passlib, "django": django})
    for name in ("ours", "passlib", "django"):
        assert users.check(name.encode(), PASSWORD.encode()), name
        assert users.check(name.encode(), PASSWORD.encode()), f"{name}, from the remembered digest"
        assert not users.check(name.encode(), b"wrong"), name
        assert not users.check(name.encode(), PASSWORD.encode()[:-1]), name
    lines = UserDatabase.from_lines([f"p:{passlib}", f"d:{django}"])
    assert lines.check(b"p", PASSWORD.encode()) and lines.check(b"d", PASSWORD.encode())


@pytest.mark.parametrize(
    ("password", "stored"),
    [  # passlib's own test vectors (passlib/tests/test_handlers.py, pbkdf2_sha256_test.known_correct_hashes)
        ("password", "$pbkdf2-sha256$1212$4vjV83LKPjQzk31VI4E0Vw$hsYF68OiOUPdDZ1Fg.fJPeq1h/gXXY7acBp9/6c.tmQ"),
        ("\u0399\u03c9\u03b1\u03bd\u03bd\u03b7\u03c2",
         "$pbkdf2-sha256$1212$3SABFJGDtyhrQMVt1uABPw$WyaUoqCLgvz97s523nF4iuOqZNbp5Nt8do/cuaa7AiI"),
        # Django 3.2's (tests/auth_tests/test_hashers.py: make_password("lètmein", "seasalt", "pbkdf2_sha256"))
        ("lètmein", "pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo="),
    ],
    ids=["passlib", "passlib-unicode", "django"],
)
def test_published_vectors(password: str, stored: str) -> None:
    users = UserDatabase({"u": stored})
    assert users.check(b"u", password.encode())
    assert not users.check(b"u", password.encode() + b"z")


def test_ours_and_djangos_share_a_prefix_and_are_told_apart_by_the_last_field() -> None:
    # The same salt characters read as hex (ours) or as text (Django) give different keys.
    ours = UserDatabase.hash_password("pw", iterations=1000, salt=bytes.fromhex("abcd"))
    django = _django_hash("pw", "abcd", 1000)
    assert ours.split("$")[2] == django.split("$")[2] == "abcd"
    users = UserDatabase({"o": ours, "d": django})
    assert users.check(b"o", b"pw") and users.check(b"d", b"pw")


def test_a_well_formed_hash_of_another_password_only_fails_the_login() -> None:
    users = UserDatabase({"a": "pbkdf2_sha256$1000$abcd$" + "A" * 43 + "="})  # Django's shape: 32 zero octets
    assert not users.check(b"a", b"pw")


@pytest.mark.parametrize(
    "stored",
    [
        "pbkdf2_sha256$0$00$" + "00" * 32,  # no iterations
        "pbkdf2_sha256$-5$00$" + "00" * 32,
        "pbkdf2_sha256$1_000$00$" + "00" * 32,  # int() would take it; a decimal number only
        "pbkdf2_sha256$1000$abcd$" + "A" * 42 + "==",  # base64 of 31 octets
        "pbkdf2_sha256$1000$abcd$" + "A" * 43,  # Django's length without its padding
        "pbkdf2_sha256$1000$abcd$" + "!" * 43 + "=",
        "$pbkdf2-sha256$1000$c2FsdA$" + "A" * 42,  # a checksum of 31 octets
        "$pbkdf2-sha256$1000$c2FsdA",
        "$pbkdf2-sha256$x$c2FsdA$" + "A" * 43,
        "$pbkdf2-sha256$1000$c2FsdA$" + "A" * 43 + "$extra",
    ],
)
def test_malformed_hashes_of_every_format_are_refused_up_front(stored: str) -> None:
    with pytest.raises(LocalProtocolError, match=r"user 'a': .*pbkdf2_sha256.*passlib") as info:
        UserDatabase({"a": stored})
    assert stored not in str(info.value)


def test_unknown_users_cost_the_most_iterations_of_any_format(monkeypatch: pytest.MonkeyPatch) -> None:
    work: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
        work.append(iterations)
        return real(name, password, salt, iterations, dklen)

    users = UserDatabase({
        "ours": UserDatabase.hash_password("x", iterations=1000),
        "passlib": _passlib_hash("x", b"salt", 3000),
        "django": _django_hash("x", "salt", 2000),
    })
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    assert not users.check(b"passlib", b"wrong")
    assert not users.check(b"nobody", b"wrong")
    assert work == [3000, 3000]


def test_the_default_iterations_are_public() -> None:
    assert UserDatabase.DEFAULT_ITERATIONS == 200_000
    assert UserDatabase.hash_password("x", salt=b"s").split("$")[1] == str(UserDatabase.DEFAULT_ITERATIONS)


def test_user_names_are_1_to_255_octets() -> None:
    with pytest.raises(LocalProtocolError, match="1 to 255"):
        UserDatabase({"": "x"})


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("to=10.0.0.0/8", AccessRule(action="deny", networks=["10.0.0.0/8"])),
        ("to=*.internal,example.com port=22", AccessRule(action="deny", hosts=["*.internal", "example.com"],
                                                         ports=[(22, 22)])),
        ("from=192.0.2.0/24 port=1-1023", AccessRule(action="deny", clients=["192.0.2.0/24"], ports=[(1, 1023)])),
    ],
)
def test_rule_syntax(text: str, rule: AccessRule) -> None:
    assert AccessRule.parse("deny", text) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [("to", "key=value"), ("where=x", "unknown key"), ("port=x", "bad port"), ("port=9-99999", "0-65535"),
     ("from=not-a-net", "not an IP network")],
)
def test_bad_rules_are_explained(text: str, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        AccessRule.parse("allow", text)


def test_first_matching_rule_decides() -> None:
    policy = AccessPolicy(
        rules=(
            AccessRule.parse("allow", "to=10.1.0.0/16"),
            AccessRule.parse("deny", "to=10.0.0.0/8"),
            AccessRule.parse("deny", "to=*.blocked.test"),
            AccessRule.parse("deny", "port=25"),
        )
    )
    assert policy.check(CLIENT, Address("10.1.2.3", 80)) is None
    assert policy.check(CLIENT, Address("10.2.3.4", 80)) == "denied by rule 2"
    assert policy.check(CLIENT, Address("a.blocked.test", 80)) == "denied by rule 3"
    assert policy.check(CLIENT, Address("A.BLOCKED.TEST.", 80)) == "denied by rule 3"
    assert policy.check(CLIENT, Address("mail.test", 25)) == "denied by rule 4"
    assert policy.check(CLIENT, Address("ok.test", 80)) is None


def test_names_are_checked_again_after_resolution() -> None:
    policy = AccessPolicy(rules=(AccessRule.parse("deny", "to=10.0.0.0/8"),))
    target = Address("sneaky.test", 80)
    assert policy.check(CLIENT, target) is None  # by name: nothing to object to
    assert policy.check(CLIENT, target, ipaddress.ip_address("10.9.9.9")) == "denied by rule 1"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0",
                "224.0.0.1", "::ffff:127.0.0.1", "fd00::1"]
)
def test_ssrf_guard_blocks_special_space(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert is_private(ip)
    policy = AccessPolicy(block_private=True)
    assert "SSRF guard" in (policy.check(CLIENT, Address(ip, 80)) or "")
    assert "SSRF guard" in (policy.check(CLIENT, Address("localhost", 80), ip) or "")


def test_ssrf_guard_allows_public_space() -> None:
    policy = AccessPolicy(block_private=True)
    assert policy.check(CLIENT, Address("93.184.216.34", 443)) is None
    assert policy.check(CLIENT, Address("example.com", 443), ipaddress.ip_address("2606:2800:220:1::1")) is None


def test_default_deny_and_client_rules() -> None:
    policy = AccessPolicy(
        rules=(AccessRule.parse("deny", "from=192.0.2.0/24"), AccessRule.parse("allow", "to=*.ok.test")),
        default_allow=False,
    )
    assert not policy.client_allowed(ipaddress.ip_address("192.0.2.9"))
    assert policy.client_allowed(CLIENT)
    assert policy.check(CLIENT, Address("a.ok.test", 443)) is None
    assert policy.check(CLIENT, Address("other.test", 443)) == "denied by default (no rule allowed it)"


@given(
    networks=st.lists(st.ip_addresses(v=4).map(lambda a: f"{a}/16"), max_size=3),
    target=st.ip_addresses(),
    port=st.integers(0, 65535),
)
def test_rule_checks_never_raise(networks: list[str], target: ipaddress.IPv4Address, port: int) -> None:
    policy = AccessPolicy(rules=(AccessRule(action="deny", networks=networks),), block_private=True)
    result = policy.check(CLIENT, Address(target, port))
    assert result is None or isinstance(result, str)
