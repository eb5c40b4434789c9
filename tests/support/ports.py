"""Free TCP ports for tests and benchmarks."""

from __future__ import annotations

import contextlib
import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the first socket is closed: CI once
    got 40083 for the simulator and for Pebble in one fixture, and compose failed on "address already in use".
    Remembering what was handed out keeps the ports of one fixture distinct.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port in 100 tries")


class Forwarder:
    """A loopback port that forwards every TCP connection to ``target`` (host, port).

    For a container on an ``--internal`` Docker network (no way out, so no published ports either): this
    machine can still reach its address, and clients keep talking to ``localhost`` — the name the server's
    certificate and Host check know — as they would through a published port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, name="forwarder", daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # half-close, as TCP does: the other direction may still carry data
        except OSError:  # a reset on either side ends both directions
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
