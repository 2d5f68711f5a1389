"""A loopback TCP proxy that loses the answer to one chosen request, on purpose.

Bytes pass both ways until a client request contains `marker`; from then on that connection's
answers are swallowed, so the client waits as if the network had died after the server did the
work. That is the moment a crash hurts most: the package committed, the gateway never heard.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from integration.servers import free_port


@dataclass
class LossyProxy:
    target_port: int
    marker: bytes
    port: int = field(default_factory=free_port)
    swallowed: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None
    _sockets: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            server.settimeout(None)
            self._sockets += [client, server]
            lost = threading.Event()
            threading.Thread(
                target=self._pipe, args=(client, server, lost, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(server, client, lost, False), daemon=True
            ).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, lost: threading.Event, up: bool
    ) -> None:
        while True:
            try:
                chunk = src.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            if up and not self.swallowed.is_set() and self.marker in chunk:
                lost.set()
                self.swallowed.set()
            if not up and lost.is_set():
                continue  # the package answered; the gateway never hears it
            with contextlib.suppress(OSError):
                dst.sendall(chunk)
