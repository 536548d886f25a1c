"""A TCP proxy on 127.0.0.1 that fault tests put between one node and its PostgreSQL, to
cut that node off in the two ways real networks do (SPEC §10):

- `reset()`: every connection, open or new, is reset (RST) at once: the node sees
  errors immediately, as with a firewall that rejects;
- `black_hole()`: connections are accepted and their bytes held, never forwarded, never
  answered: the node sees nothing at all (TCP keepalives are answered by this proxy's
  kernel), as with a partition that drops packets. Held bytes go on when healed, so a
  connection that waited survives intact, as it would in a real network;
- `heal()`: forward again.

Plain threads, bounded: every wait wakes at least every `_TICK` seconds and the proxy
stops with the test."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FORWARD, RESET, BLACK_HOLE = "forward", "reset", "black hole"
_TICK = 0.05


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = FORWARD
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_TICK)
        self.port = int(self._listener.getsockname()[1])
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.resets = 0

    # --- faults ----------------------------------------------------------------------

    def reset(self) -> None:
        """Reset every open connection and every new one, until healed."""
        self.mode = RESET
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            self.resets += 1
            _reset(client)
            if upstream is not None:
                _reset(upstream)

    def black_hole(self) -> None:
        """Hold every byte, both ways, of open and new connections, until healed."""
        self.mode = BLACK_HOLE

    def heal(self) -> None:
        self.mode = FORWARD

    # --- running ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()
        for thread in self._threads:
            thread.join(timeout=2)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == RESET:
                self.resets += 1
                _reset(client)
                continue
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        # A black hole accepts (the kernel already did) and waits: nothing goes upstream.
        while self.mode == BLACK_HOLE and not self._stopped.is_set():
            self._stopped.wait(_TICK)
        if self.mode == RESET or self._stopped.is_set():
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._pairs.append((client, upstream))
        if self.mode == RESET:  # reset while this connection was being made
            _reset(client)
            _reset(upstream)
            return
        self._spawn(self._pump, client, upstream)
        self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if self.mode == RESET:
                    _reset(source)
                    _reset(sink)
                    return
                if self.mode == BLACK_HOLE:  # hold: leave the bytes where they are
                    self._stopped.wait(_TICK)
                    continue
                readable, _, _ = select.select([source], [], [], _TICK)
                if not readable or self.mode != FORWARD:  # the mode may have changed
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@contextmanager
def fault_proxy(target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
