"""A TCP proxy on a loopback port that can cut a connection at a chosen moment: when the
server's bytes contain `cut_on` (the first `cuts` times), both sides are closed at once, as a
server or network dying mid-answer would."""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    def __init__(self, target_port: int, cut_on: bytes = b"", cuts: int = 0) -> None:
        self.target_port = target_port
        self.cut_on = cut_on
        self.cuts_left = cuts
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_server and self._should_cut(data):
                    dst.sendall(data[: data.find(self.cut_on) + len(self.cut_on)])
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _should_cut(self, data: bytes) -> bool:
        with self._lock:
            if self.cuts_left > 0 and self.cut_on and self.cut_on in data:
                self.cuts_left -= 1
                return True
        return False

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
