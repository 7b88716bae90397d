"""The command line."""

from __future__ import annotations

import argparse
import getpass
import subprocess
import sys

import pytest

from socks_sansio import UserDatabase
from socks_sansio.adapters.cli import build_parser, main


def test_demo_prints_a_whole_handshake(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--user", "alice", "--password", "pw", "[2001:db8::1]:443"]) == 0
    out = capsys.readouterr().out
    assert "01 05 61 6c 69 63 65 02 70 77" in out  # RFC 1929: VER ULEN alice PLEN pw
    assert "05 01 00 04 20 01 0d b8" in out  # CONNECT to an IPv6 address
    assert out.rstrip().endswith("state: client TUNNEL, server TUNNEL")


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "socks_sansio", "demo"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "Greeting" in out


# ------------------------------------------------------------------ every argument explained


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(found) == 1
    return dict(found[0].choices)


def test_every_argument_of_every_subcommand_has_help() -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"serve", "connect", "check", "demo", "hash-password"} <= set(commands)
    listing = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"the {choice.dest} command" for choice in listing._choices_actions if not (choice.help or "").strip()]
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            missing.append(f"socks-sansio {'/'.join(action.option_strings) or action.dest}")
    for name, command in commands.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            if not text.strip() or text == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"arguments without a help text: {missing}"


@pytest.mark.parametrize("command", ["serve", "connect", "check", "demo", "hash-password"])
def test_help_of_each_subcommand_is_printed(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: socks-sansio {command}" in capsys.readouterr().out


def test_connect_takes_no_shutdown() -> None:
    args = build_parser().parse_args(["connect", "--proxy", "socks5h://127.0.0.1:1080", "--no-shutdown", "h", "80"])
    assert args.no_shutdown is True
    assert build_parser().parse_args(["connect", "--proxy", "socks5h://p:1", "h", "80"]).no_shutdown is False


# ------------------------------------------------------------------ hash-password on a terminal


class _Terminal:
    """Stands in for a terminal on stdin: ``isatty()`` is true and getpass answers from *answers*."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        monkeypatch.setattr(getpass, "getpass", self.getpass)

    def getpass(self, prompt: str = "Password: ", stream: object = None) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_hash_password_asks_twice_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal(monkeypatch, "s3cret pw", "s3cret pw")
    assert main(["hash-password", "--iterations", "1000", "--user", "alice"]) == 0
    assert terminal.prompts == ["Password: ", "Again: "]
    line = capsys.readouterr().out.strip()
    assert line.startswith("alice:pbkdf2_sha256$1000$") and "s3cret" not in line
    users = UserDatabase.from_lines([line])
    assert users.check(b"alice", b"s3cret pw") and not users.check(b"alice", b"s3cret")


@pytest.mark.parametrize(
    ("answers", "message"),
    [(("one", "two"), "do not match"), (("",), "the password is empty")],
    ids=["mismatch", "empty"],
)
def test_hash_password_refuses_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answers: tuple[str, ...], message: str
) -> None:
    _Terminal(monkeypatch, *answers)
    assert main(["hash-password"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_hash_password_takes_no_password_argument() -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["hash-password", "s3cret"])
    assert exited.value.code == 2


def test_serve_on_trio_without_trio_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)  # as if trio were not installed: find_spec finds nothing
    assert main(["serve", "--backend", "trio", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err == "socks-sansio serve: --backend trio needs the trio package: pip install 'socks-sansio[trio]'\n"


def test_top_level_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out
    assert "serve" in out and "hash-password" in out


@pytest.mark.parametrize("command", ["check", "connect"])
def test_help_shows_defaults_and_exit_statuses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: " in out
    assert "exit status: 0 " in out and "2 on usage errors" in out
