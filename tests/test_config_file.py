"""``socks-sansio serve --config FILE.toml``: the file is checked against the flags of ``serve``.

Through :func:`config_from_argv` (what ``serve`` would run), without starting a
server; tests/server/test_serve_cli.py runs the real command for a few cases.
The schema is derived from the argparse definitions, so the last tests check
that derivation itself: every flag of ``serve`` is a key, and a flag added to
the parser is validated without touching the validator.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from socks_sansio import ServerConfig
from socks_sansio.adapters.cli import config_file, serve
from socks_sansio.adapters.cli.config_file import ConfigFileError, check_settings, options_of
from socks_sansio.adapters.cli.serve import config_from_argv


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    """``write(text)``: a TOML file holding *text*; returns its path."""
    def make(text: str) -> Path:
        path = tmp_path / "serve.toml"
        path.write_text(text, "utf-8")
        return path

    return make


def load(path: Path, *flags: str) -> ServerConfig:
    return config_from_argv(["--config", str(path), *flags])


# ------------------------------------------------------------------ what the file may hold


def test_every_kind_of_setting_applies(write: Callable[[str], Path]) -> None:
    config = load(write(
        'listen = ["127.0.0.1:0", "[::1]:0"]\n'
        "idle-timeout = 5\n"  # an integer where a number is expected: fine
        "connect_timeout = 2.5\n"
        "max-clients = 7\n"
        "block-private = true\n"
        "splice = false\n"
        'backend = "trio"\n'
        'auth = "carol:pw"\n'  # one string for a list: a one-item list
        'protocols = "socks5,http"\n'
    ))
    assert config.listen == (("127.0.0.1", 0), ("::1", 0))
    assert config.idle_timeout == 5.0 and config.connect_timeout == 2.5
    assert config.max_clients == 7
    assert config.policy.block_private is True
    assert config.splice is False
    assert config.users is not None and config.users.check(b"carol", b"pw")


def test_a_single_string_for_a_list_is_one_item_not_characters(write: Callable[[str], Path]) -> None:
    # This used to be read character by character ("authority '1' has no port").
    assert load(write('listen = "127.0.0.1:1080"\n')).listen == (("127.0.0.1", 1080),)


def test_flags_win_over_the_file(write: Callable[[str], Path]) -> None:
    config = load(write('listen = ["127.0.0.1:1"]\nidle-timeout = 5\n'), "--idle-timeout", "9",
                  "--listen", "127.0.0.1:2")
    assert config.idle_timeout == 9.0 and config.listen == (("127.0.0.1", 2),)


def test_a_path_setting_becomes_a_path(write: Callable[[str], Path], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("dave:pw\n", "utf-8")
    config = load(write(f'auth-file = "{users}"\n'))
    assert config.users is not None and config.users.check(b"dave", b"pw")


def test_an_empty_file_is_the_defaults(write: Callable[[str], Path]) -> None:
    assert load(write("# nothing\n")) == config_from_argv([])


# ------------------------------------------------------------------ what it may not


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idle-timout = 5", "unknown key 'idle-timout' (did you mean 'idle-timeout'?)"),
        ("max_clinets = 5", "unknown key 'max_clinets' (did you mean 'max-clients'?)"),
        ("no-splice = true", "unknown key 'no-splice' (the key of --no-splice is 'splice': splice = false)"),
        ("config = 'other.toml'", "unknown key 'config' (a config file cannot name another)"),
        ("zzzz = 1", "unknown key 'zzzz' (the keys are the flags of serve: listen, "),
        ("listen = 1080", "'listen' must be a list of strings (or one string), not an integer"),
        ('listen = ["127.0.0.1:0", 1080]', "'listen' must be a list of strings (or one string): item 2 is an integer"),
        ("listen = { host = 'x' }", "'listen' must be a list of strings (or one string), not a table"),
        ('idle-timeout = "5"', "'idle-timeout' must be a number, not a string"),
        ("idle-timeout = true", "'idle-timeout' must be a number, not a boolean"),
        ("max-clients = 1.5", "'max-clients' must be an integer, not a number"),
        ("max-clients = false", "'max-clients' must be an integer, not a boolean"),
        ('block-private = "yes"', "'block-private' must be true or false, not a string"),
        ("splice = 0", "'splice' must be true or false, not an integer"),
        ('backend = "gevent"', "'backend' must be one of 'asyncio', 'trio', not 'gevent'"),
        ('log-level = "verbose"', "'log-level' must be one of 'debug', 'info', 'warning', 'error', not 'verbose'"),
        ("auth-file = 5", "'auth-file' must be a string (a file path), not an integer"),
        ('protocols = ["socks5"]', "'protocols' must be a string, not a list"),
        ("stats-interval = 1979-05-27", "'stats-interval' must be a number, not a date"),
        ("max_clients = 3\nmax-clients = 4", "'max-clients' is given twice (as 'max_clients' and 'max-clients')"),
    ],
)
def test_bad_keys_and_types_name_the_key_the_file_and_what_was_expected(
    write: Callable[[str], Path], text: str, message: str
) -> None:
    path = write(text + "\n")
    with pytest.raises(ConfigFileError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # what serve reports with exit status 2


def test_a_toml_syntax_error(write: Callable[[str], Path]) -> None:
    path = write('listen = ["127.0.0.1:0"]\nidle-timeout = = 5\n')
    with pytest.raises(ConfigFileError, match=r"not valid TOML: .*line 2") as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"cannot read the config file .*missing.toml: No such file"):
        load(tmp_path / "missing.toml")


# ------------------------------------------------------------------ the schema is the parser's


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    serve.define_flags(parser)
    return parser


def test_every_flag_of_serve_is_a_key() -> None:
    parser = _serve_parser()
    options = options_of(parser)  # raises TypeError for a flag the file could not express
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    assert set(options) == flags
    assert options["listen"].kind == "list" and options["splice"].kind == "boolean"
    assert options["idle_timeout"].kind == "number" and options["workers"].kind == "integer"
    assert options["auth_file"].kind == "path" and options["backend"].choices == ("asyncio", "trio")


def test_a_flag_added_later_is_validated_without_touching_the_validator() -> None:
    parser = _serve_parser()
    parser.add_argument("--future-url", help="a new string flag")
    parser.add_argument("--future-listen", action="append", help="a new list flag")
    parser.add_argument("--future-switch", action="store_true", default=None, help="a new boolean flag")
    parser.add_argument("--future-interval", type=float, help="a new number flag")
    parser.add_argument("--future-mode", choices=("a", "b"), help="a new choice flag")
    options = options_of(parser)
    good = check_settings(
        {"future-url": "scheme://x", "future_listen": "127.0.0.1:0", "future-switch": True, "future-interval": 3,
         "future-mode": "b"}, options, "f.toml",
    )
    assert good == {"future_url": "scheme://x", "future_listen": ["127.0.0.1:0"], "future_switch": True,
                    "future_interval": 3.0, "future_mode": "b"}
    for bad, message in (
        ({"future-switch": "yes"}, "'future-switch' must be true or false"),
        ({"future-interval": "3"}, "'future-interval' must be a number"),
        ({"future-mode": "c"}, "'future-mode' must be one of 'a', 'b'"),
        ({"future-urls": "x"}, "did you mean 'future-url'?"),
    ):
        with pytest.raises(ConfigFileError, match=message):
            check_settings(bad, options, "f.toml")


def test_a_custom_type_runs_on_the_string_as_on_the_command_line() -> None:
    def port(text: str) -> int:
        value = int(text)
        if not 0 < value < 65536:
            raise argparse.ArgumentTypeError("not a port")
        return value

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--port", type=port, help="x")
    parser.add_argument("--ports", type=port, action="append", help="x")
    options = options_of(parser)
    assert check_settings({"port": "80", "ports": ["1", "2"]}, options, "f.toml") == {"port": 80, "ports": [1, 2]}
    with pytest.raises(ConfigFileError, match=r"f.toml: 'port': '0' is not valid for --port: not a port"):
        check_settings({"port": "0"}, options, "f.toml")


def test_a_flag_the_file_cannot_express_is_a_bug_found_at_once() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pair", nargs=2, help="x")
    with pytest.raises(TypeError, match=r"--pair: the config file has no form for _StoreAction"):
        options_of(parser)


def test_the_module_reads_toml_with_the_standard_library_or_tomli() -> None:
    assert config_file.__dict__["tomllib"].__name__ == ("tomllib" if sys.version_info >= (3, 11) else "tomli")
