"""The server's pure policy: users and passwords, access rules, the SSRF guard."""

from __future__ import annotations

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
