"""The public surface: complete ``__all__``, final classes, frozen events, and no I/O in the core."""

from __future__ import annotations

import enum
import inspect
import json
import pickle
import subprocess
import sys

import attrs
import pytest

import socks_sansio

IO_MODULES = ("socket", "select", "selectors", "asyncio", "trio", "ssl")


def _loaded_after(statement: str) -> set[str]:
    code = (
        f"import sys, json; before = set(sys.modules); {statement}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_the_core_imports_no_io_module() -> None:
    # The runtime dependencies' own imports are theirs (attrs imports platform, which imports subprocess and
    # with it selectors on Python 3.10): what counts is what the core adds.
    baseline = set(json.loads(subprocess.run(
        [sys.executable, "-I", "-c", "import sys, json, attrs, idna; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout))
    loaded = _loaded_after("import socks_sansio")
    assert "socks_sansio" in loaded  # the measurement works
    leaked = {m for m in loaded if m.split(".")[0] in IO_MODULES and m not in baseline}
    assert not leaked, f"the pure core imported I/O modules: {sorted(leaked)}"


def test_adapters_package_imports_no_backend() -> None:
    loaded = _loaded_after("import socks_sansio.adapters")
    assert not {m for m in loaded if m.split(".")[0] in ("asyncio", "trio")}


# The operations of the plans and of the server session are namespaces: both have a Send, a Receive...
EXPORTED_MODULES = {"client_operations", "server_operations"}


def test_all_is_complete() -> None:
    public = {
        name
        for name in dir(socks_sansio)
        if not name.startswith("_")
        and (not inspect.ismodule(getattr(socks_sansio, name)) or name in EXPORTED_MODULES)  # not .adapters
    }
    assert set(socks_sansio.__all__) - {"__version__"} == public


PUBLIC_CLASSES = [
    obj for name in socks_sansio.__all__
    if inspect.isclass(obj := getattr(socks_sansio, name))
    and obj.__module__.startswith("socks_sansio")
] + [
    obj for module in (socks_sansio.client_operations, socks_sansio.server_operations)
    for name in module.__all__
    if inspect.isclass(obj := getattr(module, name)) and obj.__module__ == module.__name__
]


@pytest.mark.parametrize("cls", [c for c in PUBLIC_CLASSES if attrs.has(c) or not issubclass(c, BaseException)],
                         ids=lambda c: c.__name__)
def test_public_classes_are_final(cls: type) -> None:
    if issubclass(cls, enum.Enum) or getattr(cls, "_is_protocol", False):
        return  # enums with members cannot be subclassed anyway; a Protocol is there to be implemented
    assert _marked_final(cls), f"{cls.__name__} should be @typing.final"


def _marked_final(cls: type) -> bool:
    """Whether *cls* is decorated with ``typing.final``: its ``__final__`` (Python 3.11+), else its source."""
    if sys.version_info >= (3, 11):
        return bool(getattr(cls, "__final__", False))
    decorators = inspect.getsource(cls).split(f"class {cls.__name__}", 1)[0]  # getsource starts at the decorators
    return "@final" in decorators or "@typing.final" in decorators


@pytest.mark.parametrize("cls", [c for c in PUBLIC_CLASSES if attrs.has(c)], ids=lambda c: c.__name__)
def test_value_classes_are_frozen(cls: type) -> None:
    params = cls.__attrs_attrs__  # type: ignore[attr-defined]
    assert params is not None
    assert cls.__setattr__ is not object.__setattr__, f"{cls.__name__} must be frozen"


def test_exactly_the_connection_and_timeout_errors_are_oserrors() -> None:
    oserrors = {
        name
        for name in socks_sansio.__all__
        if inspect.isclass(obj := getattr(socks_sansio, name)) and issubclass(obj, BaseException)
        and issubclass(obj, OSError)
    }
    assert oserrors == {"ProxyConnectionError", "ProxyTimeoutError"}
    assert issubclass(socks_sansio.ProxyConnectionError, ConnectionError)
    assert issubclass(socks_sansio.ProxyTimeoutError, TimeoutError)
    for name in oserrors:
        assert issubclass(getattr(socks_sansio, name), socks_sansio.ProxyError), name


@pytest.mark.parametrize("kind", [socks_sansio.ProxyConnectionError, socks_sansio.ProxyTimeoutError])
def test_the_oserror_proxy_errors_keep_their_message_and_proxy(kind: type[socks_sansio.ProxyError]) -> None:
    error = kind("the proxy closed the connection", proxy="socks5h://127.0.0.1:1080")
    assert str(error) == "the proxy closed the connection (proxy socks5h://127.0.0.1:1080)"
    assert error.message == "the proxy closed the connection"
    assert error.args == ("the proxy closed the connection",)
    assert isinstance(error, OSError)
    assert (error.errno, error.strerror, error.filename) == (None, None, None)
    assert str(kind("bare")) == "bare"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind and copy.proxy == error.proxy and str(copy) == str(error)


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        socks_sansio.ProtocolError("x")


def test_public_callables_have_docstrings() -> None:
    for name in socks_sansio.__all__:
        obj = getattr(socks_sansio, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
