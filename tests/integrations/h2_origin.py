"""An HTTP/2 origin for the httpx tests: TLS on 127.0.0.1 that offers only ``h2`` (ALPN), served by the h2 library.

Each accepted connection runs in its own thread: the TLS handshake, then
h2's server state machine over the socket. Every request is answered with
``200`` and the body ``h2 page PATH for AUTHORITY``. The origin records, per
TCP connection, how many streams it carried, so "three requests on one
connection" is a number the test reads.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.adapters.servers import TIMEOUT, TLSFiles
from tests.server.conftest import HOST


class H2Origin:
    """HTTPS that speaks only HTTP/2 (a client without ``h2`` in its ALPN fails the handshake)."""

    def __init__(self, files: TLSFiles) -> None:
        self._context = files.server_context()
        self._context.set_alpn_protocols(["h2"])
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(0.05)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        #: the number of streams each accepted TCP connection carried, in accept order
        self.streams: list[int] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, path: str = "/") -> str:
        return f"https://{HOST}:{self.port}{path}"

    def expected(self, path: str) -> str:
        """The body the origin answers a GET of *path* with."""
        return f"h2 page {path} for {HOST}:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                index = len(self.streams)
                self.streams.append(0)
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(TIMEOUT)
        with (
            contextlib.suppress(OSError, ssl.SSLError, h2.exceptions.ProtocolError),
            self._context.wrap_socket(conn, server_side=True) as tls,
        ):
            h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            h2conn.initiate_connection()
            tls.sendall(h2conn.data_to_send())
            requests: dict[int, dict[str, str]] = {}
            while not self._stopping.is_set() and (data := tls.recv(65536)):
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        requests[event.stream_id] = {str(k): str(v) for k, v in event.headers or ()}
                    elif isinstance(event, h2.events.DataReceived):
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers = requests.pop(event.stream_id)
                        body = f"h2 page {headers[':path']} for {headers[':authority']}".encode()
                        h2conn.send_headers(
                            event.stream_id,
                            [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(body)))],
                        )
                        h2conn.send_data(event.stream_id, body, end_stream=True)
                        with self._lock:
                            self.streams[index] += 1
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        tls.sendall(h2conn.data_to_send())
                        return
                tls.sendall(h2conn.data_to_send())

    def close(self) -> None:
        """Stop accepting, close the listener and join every connection's thread (bounded)."""
        self._stopping.set()
        self._accepter.join(TIMEOUT)
        self._listener.close()
        for thread in self._threads:
            thread.join(TIMEOUT)
