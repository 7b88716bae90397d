"""Hypothesis strategies for addresses and SOCKS5 events."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from socks_sansio import (
    Address,
    AuthMethod,
    Command,
    CommandReply,
    CommandRequest,
    Greeting,
    MethodSelection,
    UsernamePasswordReply,
    UsernamePasswordRequest,
)

ports = st.integers(0, 0xFFFF)
domains = st.binary(min_size=1, max_size=255).filter(lambda b: all(0x20 < c != 0x7F for c in b))
ascii_domains = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}\.){0,3}[a-z]{2,10}\Z")
hosts = st.one_of(
    st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)),
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    domains,
)
addresses = st.builds(Address, hosts, ports)
octets = st.integers(0, 255)
greetings = st.builds(Greeting, methods=st.lists(octets, min_size=1, max_size=255).map(tuple))
selections = st.builds(MethodSelection, method=octets)
auth_requests = st.builds(
    UsernamePasswordRequest, username=st.binary(min_size=1, max_size=255), password=st.binary(max_size=255)
)
auth_replies = st.builds(UsernamePasswordReply, success=st.booleans())
requests = st.builds(CommandRequest, command=st.sampled_from(Command), address=addresses)
replies = st.builds(CommandReply, code=octets, bound=addresses)
methods_offered = st.lists(
    st.sampled_from([AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD]), min_size=1, max_size=2, unique=True
)
