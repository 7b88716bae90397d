"""``socks-sansio hash-password``: a hashed password for ``serve --auth-file`` lines (``user:HASH``).

The password is never an argument (it would show in ``ps`` and in the shell's
history): from a terminal it is asked for twice, without echo; otherwise it is
the first line of standard input (without its line ending), so
``printf '%s\\n' "$PW" | socks-sansio hash-password`` works in scripts. The hash
is :meth:`~socks_sansio.UserDatabase.hash_password`'s
``pbkdf2_sha256$ITERATIONS$SALT$HASH``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from socks_sansio import LocalProtocolError, UserDatabase

__all__ = ["add_parser", "run"]


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_parser(commands: Any) -> None:
    """Add ``hash-password`` and its flags to the command line."""
    command = commands.add_parser(
        "hash-password", help="print a hashed password for --auth-file (the password is read, never an argument)",
        description="Print a PBKDF2-SHA256 hash of a password for serve --auth-file (lines user:HASH). On a "
        "terminal the password is asked for twice, without echo; otherwise it is the first line of standard input. "
        "It is never taken from the command line.",
    )
    command.add_argument("--iterations", type=_iterations, default=UserDatabase.DEFAULT_ITERATIONS, metavar="N",
                         help=f"PBKDF2-SHA256 iterations (default {UserDatabase.DEFAULT_ITERATIONS}; more is "
                         "slower to check, for the server and for anyone guessing)")
    command.add_argument("--user", metavar="NAME", help="print a whole NAME:HASH line for --auth-file")


def _read_password() -> str:
    """The password: asked twice on a terminal, else the first line of stdin. ``ValueError`` if unusable."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password and getpass.getpass("Again: ") != password:
            raise ValueError("the passwords do not match")
    else:
        line = sys.stdin.buffer.readline()
        if not line:
            raise ValueError("no password on standard input (give it as one line)")
        line = line[:-1] if line.endswith(b"\n") else line
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            password = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the password on standard input is not UTF-8") from None
    if not password:
        raise ValueError("the password is empty")
    return password


def run(args: argparse.Namespace) -> int:
    """``socks-sansio hash-password``: returns the exit status (2: a bad user name, 1: no usable password)."""
    user: str | None = args.user
    if user is not None:
        if ":" in user or "\n" in user or "\r" in user:
            print("socks-sansio hash-password: --user cannot hold ':' or a line break", file=sys.stderr)
            return 2
        try:
            UserDatabase({user: ""})  # the server's own checks of a name (1 to 255 octets)
        except LocalProtocolError as exc:
            print(f"socks-sansio hash-password: --user: {exc}", file=sys.stderr)
            return 2
    try:
        password = _read_password()
    except ValueError as exc:
        print(f"socks-sansio hash-password: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return 1
    stored = UserDatabase.hash_password(password, iterations=args.iterations)
    print(stored if user is None else f"{user}:{stored}")
    return 0
