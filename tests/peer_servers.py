"""Start real third-party proxy servers on loopback for interop tests.

Each ``*_server`` function is a context manager that starts one peer on
127.0.0.1 on a free port, waits (bounded) until it accepts TCP connections,
yields a :class:`PeerServer`, and on exit kills the peer's whole process group
and removes its temporary directory::

    with microsocks_server(username="u", password="p") as peer:
        sock = socket.create_connection(peer.address, timeout=5)

Peers: ``microsocks`` (SOCKS5), ``danted`` (Dante, SOCKS4/4a/5 with BIND and
UDP ASSOCIATE) and ``tinyproxy`` (HTTP CONNECT). ``.ci/install-peers.sh``
installs them and creates the system account Dante's ``username`` method checks
(:data:`DANTE_USER` / :data:`DANTE_PASSWORD`).

Missing peers: :func:`require_binary` skips the test, or fails it when the ``CI``
environment variable is set, since CI must have run ``.ci/install-peers.sh``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

__all__ = [
    "DANTE_PASSWORD",
    "DANTE_USER",
    "HOST",
    "INSTALL_SCRIPT",
    "PeerServer",
    "PeerStartError",
    "binary_available",
    "dante_config",
    "dante_server",
    "free_port",
    "group_owns_listener",
    "microsocks_server",
    "process_group_alive",
    "require_binary",
    "require_dante_user",
    "tinyproxy_config",
    "tinyproxy_server",
    "wait_for_port",
]

HOST = "127.0.0.1"
INSTALL_SCRIPT = ".ci/install-peers.sh"
DANTE_USER = "sockstest"
DANTE_PASSWORD = "sockstest-pass"

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 3


class PeerStartError(RuntimeError):
    """A peer did not start accepting connections; the message holds its logs."""


@dataclass(frozen=True)
class PeerServer:
    """A running peer: where it listens, its credentials, and where it logs."""

    name: str
    host: str
    port: int
    pid: int
    workdir: Path
    log_files: tuple[Path, ...]
    username: str | None = None
    password: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """``host:port``, as curl's ``-x``/``--socks5`` options want it."""
        return f"{self.host}:{self.port}"

    def read_logs(self) -> str:
        return _read_logs(self.log_files)


# ---------------------------------------------------------------- availability


def binary_available(name: str) -> str | None:
    """The full path of executable ``name`` (also looked for in the sbin dirs), or None."""
    path = os.environ.get("PATH", os.defpath)
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which(name, path=f"{path}{os.pathsep}{extra}")


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it with `bash {INSTALL_SCRIPT}`", pytrace=False)
    pytest.skip(f"{message}; install it with `sudo bash {INSTALL_SCRIPT}`")


def require_binary(name: str) -> str:
    """The path of peer binary ``name``; if missing, fail under CI, else skip."""
    found = binary_available(name)
    if found is None:
        _missing(f"peer binary {name!r} is not installed")
    assert found is not None
    return found


def require_dante_user() -> tuple[str, str]:
    """(user, password) for Dante's ``username`` method; fail under CI or skip if unusable.

    The method checks the system password database, so the account must exist
    and danted must run as root to read /etc/shadow.
    """
    try:
        pwd.getpwnam(DANTE_USER)
    except KeyError:
        _missing(f"system user {DANTE_USER!r} for Dante username auth does not exist")
    if os.geteuid() != 0:
        _missing("Dante username auth needs danted to run as root (to read /etc/shadow)")
    return DANTE_USER, DANTE_PASSWORD


# ----------------------------------------------------------------------- ports


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    source: str | None = None,
) -> bool:
    """Poll-connect (from the address *source*, if given) until ``host:port`` accepts (True), ``alive()`` turns
    false or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5, source_address=(source, 0) if source else None):
                pass
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        else:
            # A stranger could hold the port: only count it if ours is still up.
            return alive()
    return False


# ------------------------------------------------------------------- processes


def _read_logs(paths: tuple[Path, ...] | list[Path], limit: int = 4000) -> str:
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError as exc:
            text = f"<unreadable: {exc}>"
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        parts.append(f"--- {path.name} ---\n{text}")
    return "\n".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_members(pgid: int) -> list[tuple[int, str]] | None:
    """(pid, state) of every process in group ``pgid``, from /proc; None without /proc."""
    proc_root = Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        return None
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append((int(entry.name), fields[0]))
    return members


def process_group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    members = _group_members(pgid)
    if members is None:  # not Linux: fall back to "does the group exist at all"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return any(state not in ("Z", "X") for _, state in members)


def _listener_inodes(port: int) -> set[str]:
    """Socket inodes of TCP listeners on ``port`` (any address), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields: sl local_address rem_address st ... uid timeout inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def group_owns_listener(pgid: int, port: int) -> bool | None:
    """Whether a process of group ``pgid`` holds the TCP listener on ``port``.

    None when this cannot be told (no /proc). Guards against the free-port race:
    a stranger that took the port also accepts our readiness probe.
    """
    members = _group_members(pgid)
    if members is None or not Path("/proc/net/tcp").exists():
        return None
    wanted = {f"socket:[{inode}]" for inode in _listener_inodes(port)}
    if not wanted:
        return False
    for pid, _ in members:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return True
            except OSError:
                continue
    return False


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait for child ``pid`` to exit *without reaping it*, so its pid (our group id) stays ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the peer's process group, wait, SIGKILL what is left, reap. Idempotent."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        _exited_unreaped(proc.pid, STOP_TIMEOUT)
    # Dante forks many children that may outlive the leader. While any member or
    # the unreaped leader exists the group id cannot be reused, so this only hits
    # processes we started; with none left it is a no-op (ESRCH).
    _signal_group(proc, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)
    # Wait (bounded) until no member still runs. Dead children linger as zombies
    # until init reaps them, which here can take seconds: those do not count.
    deadline = time.monotonic() + STOP_TIMEOUT
    while process_group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)


@contextlib.contextmanager
def _run_peer(
    name: str,
    make_command: Callable[[Path, int], tuple[list[str], tuple[Path, ...]]],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
) -> Iterator[PeerServer]:
    """Start ``make_command(workdir, port)`` on a free port, retrying a lost port race.

    ``make_command`` writes any config into ``workdir`` and returns the argv and
    the log files worth showing on failure.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"peer-{name}-"))
    os.chmod(workdir, 0o755)  # readable by peers that drop root for "nobody"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        failures = []
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            attempt_dir = workdir / f"attempt{attempt}"
            attempt_dir.mkdir()
            os.chmod(attempt_dir, 0o755)
            argv, logs = make_command(attempt_dir, port)
            output = attempt_dir / "output.log"
            logs = (output, *logs)
            with output.open("wb") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=attempt_dir,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            procs.append(proc)

            def running(proc: subprocess.Popen[bytes] = proc) -> bool:
                return proc.poll() is None

            if wait_for_port(HOST, port, timeout, alive=running):
                owns = group_owns_listener(proc.pid, port)
                if owns is None:  # cannot look: give a failed bind the time to exit
                    time.sleep(0.2)
                    owns = running()
                if owns:
                    yield PeerServer(
                        name=name,
                        host=HOST,
                        port=port,
                        pid=proc.pid,
                        workdir=attempt_dir,
                        log_files=logs,
                        username=username,
                        password=password,
                    )
                    return
                outcome = "lost the port to another listener"
            elif proc.poll() is not None:
                outcome = f"exited with {proc.returncode}"
            else:
                outcome = f"not accepting after {timeout}s"
            hung = proc.poll() is None and outcome.startswith("not accepting")
            _stop(proc)
            procs.remove(proc)
            failures.append(f"attempt {attempt}: {' '.join(argv)} on port {port}: {outcome}\n{_read_logs(logs)}")
            if hung:
                break  # hung rather than lost a port race: retrying would not help
        raise PeerStartError(f"{name} did not start:\n" + "\n".join(failures))
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ microsocks


@contextlib.contextmanager
def microsocks_server(
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[PeerServer]:
    """microsocks (SOCKS5 CONNECT only); RFC 1929 auth when username/password are given.

    Never uses ``-1`` (auth-once whitelisting), so every connection must authenticate.
    """
    binary = require_binary("microsocks")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")

    def command(workdir: Path, port: int) -> tuple[list[str], tuple[Path, ...]]:
        argv = [binary, "-i", HOST, "-p", str(port), "-b", HOST]
        if username is not None and password is not None:
            argv += ["-u", username, "-P", password]
        return argv, ()

    with _run_peer("microsocks", command, username=username, password=password, timeout=timeout) as peer:
        yield peer


# ----------------------------------------------------------------------- dante


def dante_config(
    port: int,
    logfile: Path,
    auth: Literal["none", "username"] = "none",
    *,
    as_root: bool | None = None,
) -> str:
    """A danted.conf (Dante 1.4) for 127.0.0.1:port -> 127.0.0.0/8, all five commands.

    ``username`` checks the system password database, which needs root to
    read /etc/shadow: when running as root the config keeps root as the
    privileged user and drops to ``nobody`` otherwise.
    """
    if as_root is None:
        as_root = os.geteuid() == 0
    users = "user.privileged: root\nuser.unprivileged: nobody\n" if as_root else ""
    return f"""\
# written by tests/peer_servers.py
logoutput: {logfile}
debug: 0
internal: {HOST} port = {port}
external: {HOST}
clientmethod: none
socksmethod: {auth}
{users}timeout.negotiate: 10
timeout.connect: 10
timeout.io: 60

client pass {{
    from: 127.0.0.0/8 to: 127.0.0.0/8
    log: error
}}
client block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}}

socks pass {{
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect bind udpassociate bindreply udpreply
    log: error connect
}}
socks block {{
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}}
"""


@contextlib.contextmanager
def dante_server(
    auth: Literal["none", "username"] = "none",
    *,
    timeout: float = START_TIMEOUT,
) -> Iterator[PeerServer]:
    """danted in the foreground (``-N 1``) on loopback; SOCKS4/4a/5 CONNECT, BIND, UDP.

    With ``auth="username"`` clients must log in as :data:`DANTE_USER` /
    :data:`DANTE_PASSWORD` (a system account made by ``.ci/install-peers.sh``).
    """
    binary = require_binary("danted")
    username = password = None
    if auth == "username":
        username, password = require_dante_user()

    def command(workdir: Path, port: int) -> tuple[list[str], tuple[Path, ...]]:
        logfile = workdir / "danted.log"
        config = workdir / "danted.conf"
        config.write_text(dante_config(port, logfile, auth))
        pidfile = workdir / "danted.pid"
        return [binary, "-f", str(config), "-N", "1", "-p", str(pidfile)], (logfile,)

    # Dante keeps lock/mmap files in TMPDIR; the system one (sticky /tmp) is fine
    # for both the privileged and the unprivileged ids.
    with _run_peer(
        "danted",
        command,
        username=username,
        password=password,
        timeout=timeout,
        env={"TMPDIR": tempfile.gettempdir()},
    ) as peer:
        yield peer


# ------------------------------------------------------------------- tinyproxy


def tinyproxy_config(
    port: int,
    workdir: Path,
    *,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """A tinyproxy.conf (1.11) for 127.0.0.1:port, CONNECT to any port, optional Basic auth.

    No ``ConnectPort`` line means CONNECT is allowed to every port. tinyproxy
    answers 407 when Proxy-Authorization is missing but 401 when it is wrong.
    """
    lines = [
        "# written by tests/peer_servers.py",
        f"Port {port}",
        f"Listen {HOST}",
        "Timeout 30",
        "MaxClients 50",
        f"Allow {HOST}",
        f'LogFile "{workdir / "tinyproxy.log"}"',
        "LogLevel Info",
        f'PidFile "{workdir / "tinyproxy.pid"}"',
        "DisableViaHeader Yes",
    ]
    if username is not None and password is not None:
        lines.append(f"BasicAuth {username} {password}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def tinyproxy_server(
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[PeerServer]:
    """tinyproxy in the foreground (``-d -c conf``): HTTP proxy with CONNECT to any port."""
    binary = require_binary("tinyproxy")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")

    def command(workdir: Path, port: int) -> tuple[list[str], tuple[Path, ...]]:
        config = workdir / "tinyproxy.conf"
        config.write_text(tinyproxy_config(port, workdir, username=username, password=password))
        return [binary, "-d", "-c", str(config)], (workdir / "tinyproxy.log",)

    with _run_peer("tinyproxy", command, username=username, password=password, timeout=timeout) as peer:
        yield peer
