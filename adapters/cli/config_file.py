"""The ``--config`` TOML file of ``socks-sansio serve``, checked against the command's own flags.

The schema is not written down here: it is read from the argparse definition of
the flags (:func:`options_of`), so a flag added to ``serve`` is a key of the file
at once, with the same type. Each flag's argparse action decides its key and
type:

* the key is the flag's ``dest`` (``--max-clients``: ``max-clients`` or
  ``max_clients``; ``--no-splice`` stores ``splice``, so the key is ``splice =
  false``);
* ``action="append"``: a list of strings (one string is taken as a one-item
  list, never as a list of characters);
* ``store_true`` / ``store_false`` / ``store_const``: a boolean;
* ``type=float``: a number; ``type=int``: an integer; ``type=Path``: a string,
  a path; no type: a string; another ``type=`` callable gets the string, as on
  the command line; ``choices``: one of them.

An unknown key, a key given twice (``max-clients`` and ``max_clients``) or a
value of the wrong type is a :class:`ConfigFileError` naming the file, the key
and what was expected (with the closest known key for a misspelt one), as is a
TOML syntax error. Python 3.11+ reads TOML with ``tomllib``; 3.10 with the
``tomli`` backport (a dependency there).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigFileError", "Option", "check_settings", "load_config", "options_of"]

_NOT_IN_FILE: Final = frozenset({"help", "config", "version"})
"""Dests that are no settings: ``--help``, and ``--config`` itself (a file does not name another)."""


class ConfigFileError(ValueError):
    """The config file cannot be read, is not TOML, or holds a key or value the flags do not take."""


@final
@attrs.frozen
class Option:
    """One key of the config file, as a flag defines it.

    Attributes:
        key: the flag's ``dest`` (underscores).
        flag: the flag as typed on the command line (``--max-clients``).
        kind: ``"list"``, ``"boolean"``, ``"number"``, ``"integer"``, ``"path"`` or ``"string"``.
        convert: what a string is turned into (the flag's ``type=``), for strings and list items.
        choices: the values allowed, or ``None``.
        const: what a ``true`` stores, for a boolean flag (``True`` or ``False``: the value itself is stored).
    """

    key: str
    flag: str
    kind: str
    convert: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    const: Any = True

    @property
    def name(self) -> str:
        """The key as written in the documentation: dashes."""
        return self.key.replace("_", "-")

    def expected(self) -> str:
        """What the value must be, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(choice) for choice in self.choices)
        return {
            "list": "a list of strings (or one string)",
            "boolean": "true or false",
            "number": "a number",
            "integer": "an integer",
            "path": "a string (a file path)",
            "number or string": "a number or a string",
        }.get(self.kind, "a string")


def number_or_text(value: str) -> str:
    """A flag's ``type=`` for a setting a file may give as a number or as text (a rate: ``5`` or ``"5:10"``)."""
    return value


def _kind(action: argparse.Action) -> str:
    """The config-file kind of *action*; a ``TypeError`` for an action the file cannot express."""
    if isinstance(action, argparse._AppendAction):
        return "list"
    if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):  # store_true/false too
        return "boolean"
    if isinstance(action, argparse._CountAction):
        return "integer"
    if isinstance(action, argparse._StoreAction) and action.nargs in (None, "?"):
        if action.type is float:
            return "number"
        if action.type is int:
            return "integer"
        if action.type is Path:
            return "path"
        if action.type is number_or_text:
            return "number or string"
        return "string"
    raise TypeError(f"{'/'.join(action.option_strings) or action.dest}: the config file has no form for "
                    f"{type(action).__name__} (nargs={action.nargs!r}): teach adapters/cli/config_file.py")


def options_of(parser: argparse.ArgumentParser) -> dict[str, Option]:
    """The config file's keys: one :class:`Option` per flag of *parser* (``--help`` and ``--config`` left out).

    Raises:
        TypeError: a flag whose action has no config-file form (a bug to fix where the flag is added).
    """
    options = {}
    for action in parser._actions:
        if action.dest in _NOT_IN_FILE or not action.option_strings:
            continue
        kind = _kind(action)
        convert = action.type if callable(action.type) and action.type not in (str, number_or_text) else None
        options[action.dest] = Option(
            key=action.dest,
            flag=max(action.option_strings, key=len),
            kind=kind,
            convert=convert,
            choices=tuple(action.choices) if action.choices is not None else None,
            const=action.const if isinstance(action, argparse._StoreConstAction) else True,
        )
    return options


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # TOML dates and times


def _string(option: Option, value: str, where: str) -> Any:
    """A string setting (or list item) through the flag's ``type=`` and ``choices``, as argparse would."""
    result: Any = value
    if option.convert is not None:
        try:
            result = option.convert(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigFileError(f"{where}: {value!r} is not valid for {option.flag}: {exc}") from None
    if option.choices is not None and result not in option.choices:
        raise ConfigFileError(f"{where} must be {option.expected()}, not {value!r}")
    return result


def _value(option: Option, value: object, where: str) -> Any:
    """*value* from the file as the flag would have stored it, or a :class:`ConfigFileError`."""
    kind = option.kind
    wrong = f"{where} must be {option.expected()}, not {_type_name(value)}"
    if kind == "list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigFileError(wrong)
        for number, item in enumerate(items, 1):
            if not isinstance(item, str):
                raise ConfigFileError(f"{where} must be {option.expected()}: item {number} is {_type_name(item)}")
        return [_string(option, item, where) for item in items]
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ConfigFileError(wrong)
        if isinstance(option.const, bool):  # the key is the setting: --no-splice stores splice, so splice = false
            return value
        return option.const if value else None  # store_const: true stores the constant, false nothing
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigFileError(wrong)
        return float(value)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigFileError(wrong)
        return value
    if kind == "number or string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigFileError(wrong)
    return _string(option, value, where)


def check_settings(raw: Mapping[str, object], options: Mapping[str, Option], source: str) -> dict[str, Any]:
    """The file's settings with underscore keys and the flags' own types; a :class:`ConfigFileError` if any is bad.

    Args:
        raw: the parsed TOML document.
        options: the keys the file may hold (:func:`options_of`).
        source: the file's name, for the messages.
    """
    settings: dict[str, Any] = {}
    written: dict[str, str] = {}
    for name, value in raw.items():
        key = name.replace("-", "_")
        option = options.get(key)
        if option is None:
            raise ConfigFileError(f"{source}: unknown key {name!r}{_suggestion(name, options.values())}")
        if key in written:
            raise ConfigFileError(f"{source}: {option.name!r} is given twice (as {written[key]!r} and {name!r})")
        written[key] = name
        settings[key] = _value(option, value, f"{source}: {name!r}")
    return settings


def _suggestion(name: str, options: Iterable[Option]) -> str:
    if name.replace("-", "_") == "config":
        return " (a config file cannot name another)"
    names = {option.name: option for option in options}
    for option in names.values():  # a flag whose key is its dest: --no-splice is splice = false
        if option.flag == "--" + name.replace("_", "-") and option.kind == "boolean":
            return f" (the key of {option.flag} is {option.name!r}: {option.name} = {str(option.const).lower()})"
    close = difflib.get_close_matches(name.replace("_", "-"), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (the keys are the flags of serve: {', '.join(names)})"


def load_config(path: Path, options: Mapping[str, Option]) -> dict[str, Any]:
    """Read and check the TOML file at *path* (see the module docstring).

    Raises:
        ConfigFileError: the file cannot be read, is not TOML, or holds a bad key or value.
    """
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigFileError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    return check_settings(document, options, str(path))
