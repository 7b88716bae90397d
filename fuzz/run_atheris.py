"""Run one fuzz target under atheris (libFuzzer), or under a pure-Python fallback.

Usage::

    python fuzz/run_atheris.py <target> [libFuzzer options such as -runs=N] [corpus dir ...]
    python fuzz/run_atheris.py <target> --fallback [-runs=N] [-seed=S] [corpus dir ...]
    python fuzz/run_atheris.py --list
    python fuzz/run_atheris.py --write-corpus

With atheris, the seed corpus ``fuzz/corpus/<target>`` is always read; new
inputs libFuzzer finds go to a scratch directory (``$TMPDIR/socks-sansio-fuzz/<target>``)
unless a corpus directory is given, so the checked-in seeds stay small. A
crashing input is written as ``fuzz/crashes/<target>-crash-<sha1>``; replay it
with ``python fuzz/run_atheris.py <target> <that file>``.

The fallback (``--fallback``, used automatically when atheris is not
installed) mutates the seeds at random (bit flips, byte changes, insertions,
deletions, splices, truncations) with a fixed seed, and stops at the first
input that breaks an invariant, writing it to the same crash directory.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"


def _load_targets(instrument: bool) -> dict[str, Callable[[bytes], None]]:
    if instrument:
        import atheris  # type: ignore[import-untyped]

        with atheris.instrument_imports(include=["socks_sansio"]):
            from fuzz.targets import TARGETS
    else:
        from fuzz.targets import TARGETS
    return TARGETS


def _seeds(directories: list[Path]) -> list[bytes]:
    seeds = []
    for directory in directories:
        if directory.is_file():
            seeds.append(directory.read_bytes())
        elif directory.is_dir():
            seeds.extend(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())
    return seeds or [b""]


def _save_crash(name: str, data: bytes) -> Path:
    CRASHES.mkdir(exist_ok=True)
    path = CRASHES / f"{name}-crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # set a byte to an interesting value
            out[rng.randrange(len(out))] = rng.choice((0, 1, 2, 3, 4, 5, 0x0D, 0x0A, 0x20, 0x3A, 0x7F, 0x80, 0xFF))
        elif op == 2:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:  # delete a run
            del out[at : at + rng.randint(1, 8)]
        elif op == 4:  # splice in part of another seed
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            out[at:at] = other[start : start + rng.randint(1, 64)]
        elif op == 5:  # truncate
            del out[at:]
        elif op == 6 and out:  # duplicate a run (pipelining, repeated messages)
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 32)]
        else:  # change the header byte (chunking, EOF) or a decision byte
            if len(out) < 3:
                out += bytes(3 - len(out))
            out[rng.randrange(3)] = rng.randrange(256)
    return bytes(out[:4096])


def run_fallback(name: str, target: Callable[[bytes], None], args: list[str]) -> int:
    """Mutate the seeds at random for ``-runs=N`` inputs or ``-max_total_time=S`` seconds."""
    runs, seed, max_time = 0, 0, 0.0
    directories = []
    for arg in args:
        if arg.startswith("-runs="):
            runs = int(arg.split("=", 1)[1])
        elif arg.startswith("-seed="):
            seed = int(arg.split("=", 1)[1])
        elif arg.startswith("-max_total_time="):
            max_time = float(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            directories.append(Path(arg))
    if not runs and not max_time:
        runs = 100_000
    seeds = _seeds([*directories, CORPUS / name])
    rng = random.Random(seed)
    started = time.monotonic()
    count = 0
    while (not runs or count < runs) and (not max_time or count % 256 or time.monotonic() - started < max_time):
        data = seeds[count] if count < len(seeds) else _mutate(rng, rng.choice(seeds), seeds)
        count += 1
        try:
            target(data)
        except Exception:
            traceback.print_exc()
            path = _save_crash(name, data)
            print(f"#{count} CRASH {name}: input {data!r} written to {path}", file=sys.stderr)
            return 1
        if count % 100_000 == 0:
            elapsed = time.monotonic() - started
            print(f"#{count} {name} exec/s: {count / elapsed:.0f}", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"#{count} DONE {name} (fallback) seeds: {len(seeds)} runs: {count} time: {elapsed:.1f}s "
          f"exec/s: {count / elapsed:.0f}", file=sys.stderr)
    return 0


def run_atheris(name: str, target: Callable[[bytes], None], args: list[str]) -> int:
    import atheris

    options = [a for a in args if a.startswith("-")]
    paths = [a for a in args if not a.startswith("-")]
    if not paths:
        scratch = Path(tempfile.gettempdir()) / "socks-sansio-fuzz" / name
        scratch.mkdir(parents=True, exist_ok=True)
        paths = [str(scratch), str(CORPUS / name)]
    elif all(Path(p).is_dir() for p in paths) and str(CORPUS / name) not in paths:
        paths.append(str(CORPUS / name))
    CRASHES.mkdir(exist_ok=True)
    if not any(o.startswith("-artifact_prefix=") for o in options):
        options.append(f"-artifact_prefix={CRASHES}/{name}-")
    atheris.Setup([sys.argv[0], *options, *paths], target)
    atheris.Fuzz()
    return 0


# -- the seed corpus ---------------------------------------------------------------------

_IPV4 = b"\x01\xc0\x00\x02\x07\x00\x50"  # ATYP 1, 192.0.2.7, port 80
_DOMAIN = b"\x03\x0bexample.com\x01\xbb"  # ATYP 3, example.com, port 443
_IPV6 = b"\x04" + bytes.fromhex("20010db8000000000000000000000001") + b"\x1f\x90"


def seed_inputs() -> dict[str, dict[str, bytes]]:
    """Valid transcripts of every message and address type, plus the known tricky cases.

    Each value is a whole fuzzer input (header octets included: see fuzz/targets.py).
    """
    from fuzz.targets import make_input as m
    from fuzz.targets_http_forward import seed_inputs as http_forward_seeds
    from fuzz.targets_http_response import seed_inputs as http_response_seeds
    from fuzz.targets_proxy_protocol import seed_inputs as proxy_protocol_seeds

    ok = b"\x05\x00\x00"
    s5_client = {
        "noauth_connect_ipv4": m(b"\x05\x00" + ok + _IPV4 + b"tunnel"),
        "noauth_connect_domain_bytewise": m(b"\x05\x00" + ok + _DOMAIN + b"early", seed=0),
        "noauth_connect_ipv6_chunked": m(b"\x05\x00" + ok + _IPV6, seed=37),
        "userpass_success": m(b"\x05\x02\x01\x00" + ok + _IPV4 + b"data", seed=5, decisions=1),
        "userpass_failure": m(b"\x05\x02\x01\x01", decisions=1),
        "userpass_lenient_version": m(b"\x05\x02\x05\x00" + ok + _IPV4, decisions=1 | 1 << 8),
        "no_acceptable": m(b"\x05\xff", eof=True),
        "failure_reply_atyp0": m(b"\x05\x00\x05\x05\x00\x00", eof=True),
        "failure_reply_truncated": m(b"\x05\x00\x05\x04", eof=True, seed=1),
        "failure_reply_domain": m(b"\x05\x00\x05\x02\x00" + _DOMAIN),
        "bind_two_replies": m(b"\x05\x00" + ok + _IPV4 + ok + _IPV6 + b"peer", decisions=1 << 2),
        "bind_second_fails": m(b"\x05\x00" + ok + _IPV4 + b"\x05\x06\x00" + _IPV4, decisions=1 << 2),
        "udp_associate": m(b"\x05\x00" + ok + _IPV4, decisions=2 << 2),
        "pipelined_noauth": m(b"\x05\x00" + ok + _DOMAIN + b"tunnel", seed=3, decisions=1 << 7),
        "pipelined_userpass": m(b"\x05\x02\x01\x00" + ok + _IPV4, decisions=1 | 1 << 7),
        "pipelined_refused": m(b"\x05\xff", decisions=1 | 1 << 7, eof=True),
        "gssapi_offered_selected": m(b"\x05\x01", decisions=3),
        "closed_early": m(b"", eof=True),
    }
    greeting = b"\x05\x02\x00\x02"
    auth = b"\x01\x04user\x04pass"
    s5_server = {
        "connect_ipv4": m(b"\x05\x01\x00" + b"\x05\x01\x00" + _IPV4),
        "connect_domain_early_data": m(b"\x05\x01\x00\x05\x01\x00" + _DOMAIN + b"GET / HTTP/1.1\r\n\r\n", seed=9),
        "connect_ipv6_bytewise": m(b"\x05\x01\x00\x05\x01\x00" + _IPV6, seed=0),
        "pipelined_greeting_auth_request_data": m(greeting + auth + b"\x05\x01\x00" + _DOMAIN + b"data",
                                                  decisions=1),
        "auth_refused": m(greeting + auth, decisions=1 | 1 << 2),
        "auth_empty_password": m(greeting + b"\x01\x04user\x00" + b"\x05\x01\x00" + _IPV4, decisions=1),
        "bind": m(b"\x05\x01\x00\x05\x02\x00" + _IPV4),
        "udp_associate": m(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"),
        "no_acceptable": m(b"\x05\x01\x80", eof=True),
        "nmethods_zero": m(b"\x05\x00"),
        "unknown_atyp": m(b"\x05\x01\x00\x05\x01\x00\x09"),
        "unknown_command": m(b"\x05\x01\x00\x05\x07\x00" + _IPV4),
        "empty_domain": m(b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50"),
        "socks4_on_socks5": m(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00"),
        "eof_mid_request": m(b"\x05\x01\x00\x05\x01\x00\x03\x0bexam", eof=True),
    }
    s4_client = {
        "granted": m(b"\x00\x5a\x00\x50\xc0\x00\x02\x07tunnel"),
        "rejected": m(b"\x00\x5b\x00\x00\x00\x00\x00\x00", eof=True),
        "rejected_truncated": m(b"\x00\x5c", eof=True),
        "bind_two_replies": m(b"\x00\x5a\x04\x00\xc0\x00\x02\x07" + b"\x00\x5a\x11\x5c\xcb\x00\x71\x09peer",
                              decisions=1),
        "lenient_version": m(b"\x04\x5a\x00\x00\x00\x00\x00\x00", decisions=1 << 3),
        "socks5_reply": m(b"\x05\x00\x00\x01"),
    }
    s4_server = {
        "connect_ipv4": m(b"\x04\x01\x00\x50\xc0\x00\x02\x07\x00"),
        "connect_userid_early_data": m(b"\x04\x01\x01\xbbc\x00\x02\x07fuzz\x00hello", seed=2),
        "socks4a_hostname": m(b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00"),
        "socks4a_hostname_bytewise": m(b"\x04\x01\x01\xbb\x00\x00\x00\x07fuzz\x00example.com\x00data", seed=0),
        "socks4a_ipv4_literal_hostname": m(b"\x04\x01\x00\x50\x00\x00\x00\x01\x0010.0.0.1\x00"),
        "socks4a_ipv6_literal_hostname": m(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00::1\x00"),
        "socks4a_empty_hostname": m(b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00"),
        "bind": m(b"\x04\x02\x00\x50\xc0\x00\x02\x07\x00"),
        "userid_over_cap": m(b"\x04\x01\x00\x50\xc0\x00\x02\x07" + b"u" * 20 + b"\x00", decisions=2),
        "unknown_command": m(b"\x04\x03\x00\x50\xc0\x00\x02\x07\x00"),
        "eof_mid_userid": m(b"\x04\x01\x00\x50\xc0\x00\x02\x07us", eof=True),
    }
    http_client = {
        "200_with_tunnel_data": m(b"HTTP/1.1 200 Connection established\r\n\r\ntunnel bytes"),
        "200_bytewise": m(b"HTTP/1.1 200 OK\r\nProxy-Agent: x\r\n\r\n", seed=0),
        "2xx_with_content_length": m(b"HTTP/1.1 299 Fine\r\nContent-Length: 5\r\n\r\nhello"),
        "407_with_body_then_200": m(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                    b"Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 12\r\n\r\n"
                                    b"who are you?HTTP/1.1 200 OK\r\n\r\n", seed=11),
        "407_close": m(b"HTTP/1.1 407 Nope\r\nConnection: close\r\nProxy-Authenticate: Basic\r\n\r\n", eof=True),
        "407_chunked": m(b"HTTP/1.1 407 Nope\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                         eof=True),
        "502_unframed_body": m(b"HTTP/1.1 502 Bad Gateway\r\n\r\nupstream down", eof=True),
        "body_over_cap": m(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\n0123456789", decisions=1 << 3),
        "interim_then_200": m(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
        "http10_200": m(b"HTTP/1.0 200 OK\r\n\r\n", decisions=1 << 2),
        "bare_lf": m(b"HTTP/1.1 200 OK\nServer: x\n\n"),
        "101_refused": m(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        "eof_mid_body": m(b"HTTP/1.1 407 x\r\nContent-Length: 50\r\n\r\nshort", eof=True),
    }
    request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    http_server = {
        "connect": m(request),
        "connect_early_data_chunked": m(request + b"\x16\x03\x01 client hello", seed=13),
        "connect_ipv6": m(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"),
        "connect_with_auth": m(b"CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"),
        "407_then_retry": m(request + request, decisions=1 << 2),
        "http10_no_host": m(b"CONNECT 192.0.2.7:80 HTTP/1.0\r\n\r\n"),
        "get_method": m(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        "bare_lf": m(b"CONNECT example.com:443 HTTP/1.1\nHost: example.com:443\n\n"),
        "host_mismatch": m(b"CONNECT example.com:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n"),
        "head_too_large": m(b"CONNECT example.com:443 HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n", decisions=1),
        "eof_mid_head": m(b"CONNECT example.com:443 HTTP/1.1\r\nHo", eof=True),
        "tls_hello": m(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    }
    frames = {
        "three_frames": m(b"\x00\x00\x00\x05hello\x00\x00\x00\x00\x00\x00\x00\x03abc"),
        "bytewise": m(b"\x00\x00\x00\x05hello\x00\x00\x00\x01!", seed=0),
        "clean_eof": m(b"\x00\x00\x00\x02hi", eof=True),
        "eof_mid_length": m(b"\x00\x00", eof=True),
        "eof_mid_payload": m(b"\x00\x00\x00\x09half", eof=True),
        "over_small_cap": m(b"\x00\x00\x00\x20" + b"x" * 32, decisions=0x100 | 16),
        "at_small_cap": m(b"\x00\x00\x00\x10" + b"x" * 16, decisions=0x100 | 16),
        "huge_length": m(b"\xff\xff\xff\xff"),
        "huge_length_uncapped": m(b"\xff\xff\xff\xff", decisions=0x200),
    }
    udp = {
        "ipv4": b"\x00\x00\x00" + _IPV4 + b"payload",
        "domain": b"\x00\x00\x00" + _DOMAIN + b"dns query",
        "ipv6_empty_data": b"\x00\x00\x00" + _IPV6,
        "fragment": b"\x00\x00\x81" + _IPV4 + b"last fragment",
        "bad_rsv": b"\x00\x01\x00" + _IPV4,
        "truncated": b"\x00\x00\x00\x03\x0bexample",
        "atyp0": b"\x00\x00\x00\x00\x00\x00\x00\x00",
        "empty_domain": b"\x00\x00\x00\x03\x00\x00\x50",
    }
    proxy_url = {name: text.encode("utf-8", "surrogateescape") for name, text in {
        "socks5": "socks5://proxy.example:1080",
        "socks5h_userinfo": "socks5h://user:p%40ss@proxy.example:1080/",
        "socks4_userid": "socks4://fuzz@192.0.2.7",
        "socks4a_default_port": "socks4a://proxy.example",
        "http_ipv6": "http://[2001:db8::1]:3128",
        "https_idna": "https://us%3Aer:pw@b\u00fccher.example",
        "empty_port": "socks5h://proxy.example:",
        "empty_userinfo": "socks5://@proxy.example",
        "colon_userinfo": "http://:@proxy.example",
        "zone_id": "socks5://[fe80::1%25eth0]:1080",
        "at_in_path": "socks5://host/p@ss",
        "bad_percent": "socks5://us%zzer:pw@host",
        "port_zero": "socks5://host:0",
        "uppercase_scheme": "SOCKS5H://HOST:1080",
        "surrogate": "socks5://\udcff@host",
    }.items()}
    detect = {
        "socks5": b"\x05\x01\x00",
        "socks4": b"\x04\x01\x00\x50",
        "http": b"CONNECT example.com:443 HTTP/1.1\r\n",
        "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "post": b"POST / HTTP/1.1\r\n",
        "tls": b"\x16\x03\x01\x02\x00\x01",
        "lowercase": b"connect x:1 HTTP/1.1",
        "empty": b"",
    }
    # client_driver decisions: proxy(3) target(2) command(2) pipelined(1) preemptive(1) lenient(1) prepared(1)
    pipelined, preemptive, prepared = 1 << 7, 1 << 8, 1 << 10
    client_driver = {
        "socks5h_noauth": m(b"\x05\x00" + ok + _IPV4 + b"tunnel"),
        "socks5h_userpass": m(b"\x05\x02\x01\x00" + ok + _DOMAIN, decisions=1, seed=3),
        "socks5h_pipelined": m(b"\x05\x02\x01\x00" + ok + _IPV4, decisions=1 | pipelined),
        "socks5h_refused": m(b"\x05\x00\x05\x05\x00\x00", decisions=0, eof=True),
        "socks5h_bind": m(b"\x05\x00" + ok + _IPV4 + ok + _IPV6, decisions=1 << 5),
        "socks5h_udp": m(b"\x05\x00" + ok + _IPV4, decisions=2 << 5),
        "socks5h_no_acceptable": m(b"\x05\xff", decisions=1),
        "socks4a": m(b"\x00\x5a\x00\x00\x00\x00\x00\x00data", decisions=2),
        "socks4a_userid_rejected": m(b"\x00\x5b\x00\x00\x00\x00\x00\x00", decisions=3, eof=True),
        "socks4a_bind": m(b"\x00\x5a\x04\x00\xc0\x00\x02\x07\x00\x5a\x11\x5c\xcb\x00\x71\x09", decisions=2 | 1 << 5),
        "http_200": m(b"HTTP/1.1 200 Connection established\r\n\r\ntunnel", decisions=4),
        "http_407_retry": m(b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"
                            b"HTTP/1.1 200 OK\r\n\r\n", decisions=5),
        "http_407_with_body": m(b"HTTP/1.1 407 Auth\r\nContent-Length: 4\r\n\r\nbody", decisions=4, eof=True),
        "http_401": m(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n\r\n", decisions=5 | preemptive),
        "proxy_closed": m(b"", decisions=4, eof=True),
        "socks5h_prepared_userpass": m(b"\x05\x02\x01\x00" + ok + _IPV4 + b"tunnel", decisions=1 | prepared, seed=2),
        "socks5h_prepared_spoke_early": m(b"\x05\x00" + ok + _IPV4, decisions=prepared),
        "socks5h_prepared_closed": m(b"\x05\x00", decisions=prepared, eof=True),
        "socks4a_prepared": m(b"\x00\x5a\x00\x00\x00\x00\x00\x00data", decisions=2 | prepared),
        "http_prepared_407_retry": m(b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                                     decisions=5 | prepared, seed=6),
    }
    # server_driver decisions: auth_required(1) allow_socks4(1) protocols(2) answers(12);
    # the first answer to a tunnel request: accept (0, 2), reject (1) + failure(3), or
    # reject (3) + rate limited or not allowed(1) + retry_after(2)
    rate_limited = 3 << 4 | 1 << 6
    server_driver = {
        "socks5_pipelined": m(b"\x05\x01\x00\x05\x01\x00" + _DOMAIN + b"early"),
        "socks5_auth": m(greeting + auth + b"\x05\x01\x00" + _IPV4 + b"data", decisions=1),
        "socks5_bind": m(b"\x05\x01\x00\x05\x02\x00" + _IPV4),
        "socks5_udp": m(b"\x05\x01\x00\x05\x03\x00" + _IPV4),
        "socks5_rejected": m(b"\x05\x01\x00\x05\x01\x00" + _IPV4, decisions=1 << 4),
        "socks4a": m(b"\x04\x01\x01\xbb\x00\x00\x00\x01fuzz\x00example.com\x00hello", seed=4),
        "socks4_auth_required": m(b"\x04\x01\x00\x50\xc0\x00\x02\x07\x00", decisions=1),
        "http": m(request + b"early"),
        "http_auth": m(b"CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n",
                       decisions=1),
        "http_407_then_auth": m(request + b"CONNECT example.com:443 HTTP/1.1\r\n"
                                b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n", decisions=1, seed=17),
        "protocol_not_accepted": m(b"\x04\x01\x00\x50\xc0\x00\x02\x07\x00", decisions=1 << 2),
        "tls": m(b"\x16\x03\x01\x00\x10"),
        "eof_after_request": m(b"\x05\x01\x00\x05\x01\x00" + _IPV4, eof=True, seed=1),
        "eof_first": m(b"", eof=True),
        "socks5_rate_limited": m(b"\x05\x01\x00\x05\x01\x00" + _IPV4, decisions=rate_limited),
        "http_rate_limited_retry_after": m(request, decisions=rate_limited | 2 << 7),
        "http_not_allowed_retry_after": m(request, decisions=3 << 4 | 1 << 7),
    }
    return {
        "socks5_client": s5_client, "socks5_server": s5_server, "socks4_client": s4_client,
        "socks4_server": s4_server, "http_client": http_client, "http_server": http_server,
        "frames": frames, "udp": udp, "proxy_url": proxy_url, "detect": detect,
        "client_driver": client_driver, "server_driver": server_driver,
        "proxy_protocol": proxy_protocol_seeds(),
        "http_response": http_response_seeds(),
        **http_forward_seeds(),
    }


def write_corpus(root: Path) -> dict[str, int]:
    """Write :func:`seed_inputs` as ``root/<target>/<name>`` files; return the count per target."""
    counts = {}
    for target, seeds in seed_inputs().items():
        directory = root / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        counts[target] = len(seeds)
    return counts


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "--list":
        print("\n".join(_load_targets(False)))
        return 0
    if argv[0] == "--write-corpus":
        for name, count in write_corpus(CORPUS).items():
            print(f"{name}: {count} seeds")
        return 0
    name, rest = argv[0], argv[1:]
    fallback = "--fallback" in rest
    rest = [a for a in rest if a != "--fallback"]
    if not fallback:
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("atheris is not installed: using the pure-Python fallback (--fallback)", file=sys.stderr)
            fallback = True
    targets = _load_targets(instrument=not fallback)
    if name not in targets:
        print(f"unknown target {name!r}; targets: {', '.join(targets)}", file=sys.stderr)
        return 2
    runner = run_fallback if fallback else run_atheris
    return runner(name, targets[name], rest)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
