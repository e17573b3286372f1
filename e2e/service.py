"""What a Service does for extender replicas, for a dev cluster that has no kube-proxy: accept
connections on one port and forward each to a replica whose ``/readyz`` answers 200, taking the
ready ones in turn (a Service spreads connections over its ready endpoints). A connection no
replica is ready for is closed at once, as a Service without endpoints refuses it."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ReadyEndpoints:
    """Listens on ``port`` (127.0.0.1) for as long as it is open, forwarding to ``backends``."""

    def __init__(self, port: int, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self.forwarded: dict[int, int] = {b: 0 for b in self.backends}  # connections per replica
        self._turn = 0
        self._turn_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="service", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        with self._turn_lock:
            self._turn += 1
            turn = self._turn
        candidates = self.backends[turn % len(self.backends) :] + self.backends
        backend = next((b for b in candidates if ready(b)), None)
        if backend is None:
            conn.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", backend), timeout=5)
        except OSError:
            conn.close()
            return
        with self._turn_lock:
            self.forwarded[backend] += 1
        upstream.settimeout(None)
        conn.settimeout(None)
        pump = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
        pump.start()
        _pipe(conn, upstream)
        pump.join()
        conn.close()
        upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing side (the other way may go on)."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
